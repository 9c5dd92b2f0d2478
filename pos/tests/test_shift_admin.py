"""Shifts in the back office: read-only, shop-scoped, with their counts and Z reports."""

from decimal import Decimal

import pytest
from django.urls import reverse

from pos.models import Staff
from pos.services import ItemRequest, add_staff, close_shift, open_shift, record_cash_movement, sell_for_cash
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager_client(client, shop):
    user = UserFactory(username="akinyi")
    add_staff(user, shop, Staff.Role.MANAGER)
    client.force_login(user)
    return client


@pytest.fixture
def short_shift(till, cashier, product):
    """Till 1's shift: 116 in cash sales, KES 40 paid out for airtime: 76 expected, 36 counted."""
    shift = till.shifts.get()
    sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku=product.sku)],
                  tendered=Decimal("116"))
    record_cash_movement(shift_id=shift.pk, kind="pay_out", amount="40", reason="airtime", user=cashier)
    return close_shift(shift_id=shift.pk, counted_cash="36", user=cashier, note="sorry")


@pytest.fixture
def other_shift(db):
    shop = ShopFactory(code="MSA", name="Mombasa Duka")
    till = TillFactory(shop=shop, name="Mombasa till")
    return open_shift(till=till, user=StaffFactory(shop=shop, default_till=till).user, opening_float="900")


def test_a_manager_sees_their_shops_shifts_with_the_cash_difference(manager_client, short_shift, other_shift):
    page = manager_client.get(reverse("admin:pos_shift_changelist")).content.decode()

    assert f"#{short_shift.pk}" in page and "-40.00 short" in page
    assert "Mombasa till" not in page and f"#{other_shift.pk}<" not in page


def test_the_shift_shows_its_z_report_and_its_pay_outs(manager_client, short_shift):
    page = manager_client.get(reverse("admin:pos_shift_change", args=[short_shift.pk])).content.decode()

    assert "Cash is KES 40.00 short." in page and "Expected in the drawer" in page
    assert "76.00" in page and "36.00" in page and "sorry" in page and "airtime" in page


def test_another_shops_shift_is_a_404_for_a_manager(manager_client, other_shift):
    assert manager_client.get(reverse("admin:pos_shift_change", args=[other_shift.pk])).status_code == 404


def test_shifts_cannot_be_added_changed_or_deleted_in_the_admin(manager_client, short_shift):
    assert manager_client.get(reverse("admin:pos_shift_add")).status_code == 403
    assert manager_client.post(reverse("admin:pos_shift_delete", args=[short_shift.pk])).status_code == 403
    page = manager_client.get(reverse("admin:pos_shift_change", args=[short_shift.pk])).content.decode()
    assert 'name="counted_cash"' not in page and 'name="_save"' not in page


def test_the_shift_list_costs_the_same_queries_for_one_shift_or_ten(manager_client, django_assert_max_num_queries,
                                                                   shop, short_shift, cashier):
    url = reverse("admin:pos_shift_changelist")
    manager_client.get(url)
    with django_assert_max_num_queries(30) as one:
        manager_client.get(url)
    for number in range(9):
        till = TillFactory(shop=shop, name=f"Till {number + 10}")
        open_shift(till=till, user=cashier, opening_float="100")
    with django_assert_max_num_queries(len(one.captured_queries)):
        manager_client.get(url)
