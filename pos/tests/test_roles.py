import pytest
from django.contrib.auth.models import Group

from pos.models import Staff
from pos.services import ROLE_GROUPS, add_staff, ensure_role_groups
from pos.tests.factories import ShopFactory, TillFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_role_groups_are_created_with_their_permissions():
    groups = ensure_role_groups()
    assert sorted(Group.objects.values_list("name", flat=True)) == ["Cashier", "Manager", "Owner"]
    cashier = set(groups[Staff.Role.CASHIER].permissions.values_list("codename", flat=True))
    manager = set(groups[Staff.Role.MANAGER].permissions.values_list("codename", flat=True))
    owner = set(groups[Staff.Role.OWNER].permissions.values_list("codename", flat=True))
    assert {"add_sale", "view_product"} <= cashier
    assert not {"change_product", "view_stockmovement", "change_shop"} & cashier
    assert cashier < manager
    assert {"add_stockmovement", "change_product", "add_till", "view_staff"} <= manager
    assert not {"change_staff", "add_user", "change_user", "add_shop", "delete_product"} & manager
    assert {"add_user", "change_user", "change_staff", "add_shop", "delete_product"} <= owner


def test_ensuring_the_groups_twice_changes_nothing():
    first = {name: set(group.permissions.all()) for name, group in ensure_role_groups().items()}
    second = {name: set(group.permissions.all()) for name, group in ensure_role_groups().items()}
    assert first == second
    assert Group.objects.count() == 3


def test_a_cashier_gets_the_cashier_group_and_no_admin_access():
    user = UserFactory(is_staff=True)
    shop = ShopFactory()
    staff = add_staff(user, shop, Staff.Role.CASHIER)
    user.refresh_from_db()
    assert (staff.shop, staff.role) == (shop, Staff.Role.CASHIER)
    assert list(user.groups.values_list("name", flat=True)) == ["Cashier"]
    assert user.is_staff is False
    assert user.has_perm("pos.add_sale") and not user.has_perm("inventory.change_product")


@pytest.mark.parametrize("role", [Staff.Role.MANAGER, Staff.Role.OWNER])
def test_managers_and_owners_may_use_the_admin(role):
    user = UserFactory()
    add_staff(user, ShopFactory(), role)
    user.refresh_from_db()
    assert user.is_staff is True
    assert list(user.groups.values_list("name", flat=True)) == [ROLE_GROUPS[role]]


def test_changing_a_role_swaps_the_group_and_admin_access():
    user = UserFactory()
    shop = ShopFactory()
    add_staff(user, shop, Staff.Role.MANAGER)
    add_staff(user, shop, Staff.Role.CASHIER)
    user.refresh_from_db()
    assert list(user.groups.values_list("name", flat=True)) == ["Cashier"]
    assert user.is_staff is False
    assert Staff.objects.get(user=user).role == Staff.Role.CASHIER


def test_a_superuser_made_cashier_keeps_admin_access():
    user = UserFactory(is_superuser=True, is_staff=True)
    add_staff(user, ShopFactory(), Staff.Role.CASHIER)
    user.refresh_from_db()
    assert user.is_staff is True


def test_moving_staff_to_another_shop_drops_the_old_default_till():
    user = UserFactory()
    old_till = TillFactory()
    add_staff(user, old_till.shop, Staff.Role.CASHIER, default_till=old_till)
    new_shop = ShopFactory()
    staff = add_staff(user, new_shop, Staff.Role.CASHIER)
    assert (staff.shop, staff.default_till) == (new_shop, None)


def test_a_default_till_of_another_shop_is_refused():
    with pytest.raises(ValueError, match="is not in"):
        add_staff(UserFactory(), ShopFactory(), Staff.Role.CASHIER, default_till=TillFactory())
    assert not Staff.objects.exists()


def test_an_unknown_role_is_refused_in_words():
    with pytest.raises(ValueError, match="use cashier, manager or owner"):
        add_staff(UserFactory(), ShopFactory(), "boss")
    assert not Staff.objects.exists()


def test_adding_the_same_staff_again_changes_nothing():
    user = UserFactory()
    till = TillFactory()
    first = add_staff(user, till.shop, Staff.Role.MANAGER, default_till=till)
    again = add_staff(user, till.shop, Staff.Role.MANAGER, default_till=till)
    assert first.pk == again.pk and Staff.objects.count() == 1
    assert user.groups.count() == 1
