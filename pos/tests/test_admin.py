"""The back office for shops, tills, staff and sales: managers see only their own shop."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory.services import receive_stock

from pos.models import Payment, Staff, Till
from pos.services import ItemRequest, add_staff, open_shift, sell_for_cash
from pos.tests.factories import PaymentFactory, ShopFactory, StaffFactory, TillFactory, UserFactory


@pytest.fixture
def other_shop(db):
    return ShopFactory(code="MSA", name="Mombasa Duka")


@pytest.fixture
def manager(shop, till):
    user = UserFactory(username="akinyi")
    add_staff(user, shop, Staff.Role.MANAGER, default_till=till)
    return user


@pytest.fixture
def manager_client(client, manager):
    client.force_login(manager)
    return client


@pytest.fixture
def owner_client(client, shop):
    user = UserFactory(username="kamau")
    add_staff(user, shop, Staff.Role.OWNER)
    client.force_login(user)
    return client


def _sell(till, cashier, product, quantity=1):
    return sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=quantity, barcode=product.barcode)],
                         tendered=Decimal("10000"))[0]


@pytest.fixture
def sales(shop, till, other_shop, cashier, product):
    """One cash sale in each shop."""
    other_till = TillFactory(shop=other_shop, name="Till 1")
    other_cashier = StaffFactory(shop=other_shop, default_till=other_till).user
    open_shift(till=other_till, user=other_cashier, opening_float=Decimal("0"))
    receive_stock(shop_id=other_shop.pk, product_id=product.pk, quantity=5)
    return _sell(till, cashier, product), _sell(other_till, other_cashier, product)


def test_the_back_office_has_its_own_header(manager_client):
    assert "Comolor POS back office" in manager_client.get(reverse("admin:index")).content.decode()


def test_a_cashier_cannot_open_the_admin(cashier_client):
    response = cashier_client.get(reverse("admin:pos_sale_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_manager_sees_only_their_own_shops_sales(manager_client, sales):
    own, other = sales
    page = manager_client.get(reverse("admin:pos_sale_changelist")).content.decode()
    assert own.receipt_number in page
    assert other.receipt_number not in page
    assert "Mombasa Duka" not in page  # not even as a filter choice


def test_another_shops_sale_by_url_is_404_for_a_manager(manager_client, sales):
    own, other = sales
    assert manager_client.get(reverse("admin:pos_sale_change", args=[own.pk])).status_code == 200
    assert manager_client.get(reverse("admin:pos_sale_change", args=[other.pk])).status_code == 404
    assert manager_client.get(reverse("admin:pos_sale_history", args=[other.pk])).status_code == 404


def test_an_owner_sees_every_shops_sales(owner_client, sales):
    page = owner_client.get(reverse("admin:pos_sale_changelist")).content.decode()
    assert all(sale.receipt_number in page for sale in sales)


def test_a_superuser_sees_every_shops_sales(admin_client, sales):
    page = admin_client.get(reverse("admin:pos_sale_changelist")).content.decode()
    assert all(sale.receipt_number in page for sale in sales)


def test_a_sale_shows_its_lines_and_payments_read_only(manager_client, sales):
    own, _ = sales
    response = manager_client.get(reverse("admin:pos_sale_change", args=[own.pk]))
    page = response.content.decode()
    assert "Sugar 1kg" in page and "116.00" in page and "cash" in page
    assert 'name="_save"' not in page
    assert manager_client.post(reverse("admin:pos_sale_change", args=[own.pk]), {}).status_code == 403
    assert manager_client.get(reverse("admin:pos_sale_add")).status_code == 403
    assert manager_client.post(reverse("admin:pos_sale_delete", args=[own.pk]), {"post": "yes"}).status_code == 403


def test_the_customer_phone_is_masked_in_the_sales_list(manager_client, shop, till, cashier, product):
    sale = sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, barcode=product.barcode)],
                         tendered=Decimal("200"), customer_phone="254708374149")[0]
    page = manager_client.get(reverse("admin:pos_sale_changelist")).content.decode()
    assert sale.receipt_number in page and "254708374149" not in page


def test_sale_list_queries_do_not_grow_with_the_page(manager_client, shop, till, cashier, product):
    url = reverse("admin:pos_sale_changelist")
    _sell(till, cashier, product)
    with CaptureQueriesContext(connection) as one:
        manager_client.get(url)
    for _ in range(5):
        _sell(till, StaffFactory(shop=shop, default_till=till).user, product)
    with CaptureQueriesContext(connection) as six:
        page = manager_client.get(url).content.decode()
    assert page.count(f"{shop.code}-") >= 6
    assert len(six) == len(one)


def test_a_manager_edits_their_own_shop_but_not_its_code(manager_client, shop, other_shop):
    url = reverse("admin:pos_shop_change", args=[shop.pk])
    data = {"name": "Demo Duka Westlands", "address": "Westlands", "phone": "", "kra_pin": "P051234567X",
            "vat_registered": "on", "receipt_footer": "Asante!", "code": "ZZZ",
            "tills-TOTAL_FORMS": "1", "tills-INITIAL_FORMS": "1", "tills-MIN_NUM_FORMS": "0",
            "tills-MAX_NUM_FORMS": "1000", "tills-0-id": str(shop.tills.get().pk), "tills-0-shop": str(shop.pk),
            "tills-0-name": "Till 1", "tills-0-is_active": "on"}
    response = manager_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    shop.refresh_from_db()
    assert (shop.name, shop.code) == ("Demo Duka Westlands", "DEMO")
    assert manager_client.get(reverse("admin:pos_shop_change", args=[other_shop.pk])).status_code == 404
    assert manager_client.get(reverse("admin:pos_shop_add")).status_code == 403


def test_a_managers_till_choices_are_their_own_shop(manager_client, shop, other_shop):
    page = manager_client.get(reverse("admin:pos_till_add")).content.decode()
    assert "Demo Duka" in page and "Mombasa Duka" not in page
    response = manager_client.post(reverse("admin:pos_till_add"), {"shop": other_shop.pk, "name": "Sneaky"})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    response = manager_client.post(reverse("admin:pos_till_add"), {"shop": shop.pk, "name": "Till 2",
                                                                     "is_active": "on"})
    assert response.status_code == 302
    assert Till.objects.filter(shop=shop, name="Till 2").exists()
    assert not Till.objects.filter(name="Sneaky").exists()


def test_a_manager_sees_staff_of_their_shop_only_and_cannot_change_roles(manager_client, manager, cashier,
                                                                         other_shop):
    stranger = StaffFactory(shop=other_shop, user=UserFactory(username="otieno"))
    page = manager_client.get(reverse("admin:pos_staff_changelist")).content.decode()
    assert "wanjiru" in page and "otieno" not in page
    cashier_staff = cashier.staff
    response = manager_client.post(reverse("admin:pos_staff_change", args=[cashier_staff.pk]),
                                   {"user": cashier.pk, "shop": cashier_staff.shop_id, "role": "owner"})
    assert response.status_code == 403
    assert manager_client.get(reverse("admin:pos_staff_change", args=[stranger.pk])).status_code == 404
    assert manager_client.get(reverse("admin:auth_user_changelist")).status_code == 403


def test_an_owner_adding_staff_sets_the_group_and_admin_access(owner_client, shop, till):
    user = UserFactory(username="njeri")
    response = owner_client.post(reverse("admin:pos_staff_add"),
                                 {"user": user.pk, "shop": shop.pk, "role": "manager", "default_till": till.pk})
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.is_staff and list(user.groups.values_list("name", flat=True)) == ["Manager"]


def test_an_owner_creates_a_login_with_its_shop_and_role_on_one_page(owner_client, shop, till):
    owner_client.post(reverse("admin:auth_user_add"), {
        "username": "mutua", "password1": "a-long-Passphrase-9", "password2": "a-long-Passphrase-9",
        "usable_password": "true",
        "staff-TOTAL_FORMS": "1", "staff-INITIAL_FORMS": "0", "staff-MIN_NUM_FORMS": "0",
        "staff-MAX_NUM_FORMS": "1", "staff-0-shop": shop.pk, "staff-0-role": "cashier",
        "staff-0-default_till": till.pk,
    })
    user = User.objects.get(username="mutua")
    assert user.staff.role == "cashier" and user.staff.default_till == till
    assert list(user.groups.values_list("name", flat=True)) == ["Cashier"] and not user.is_staff


def test_an_owner_cannot_see_or_take_over_a_superuser(owner_client):
    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    page = owner_client.get(reverse("admin:auth_user_changelist")).content.decode()
    assert "kamau" in page and ">root<" not in page
    assert owner_client.get(reverse("admin:auth_user_password_change", args=[root.pk])).status_code == 404


def test_an_owner_cannot_make_anyone_superuser(owner_client, cashier):
    page = owner_client.get(reverse("admin:auth_user_change", args=[cashier.pk])).content.decode()
    assert 'name="is_superuser"' not in page and 'name="groups"' not in page


def test_a_sales_payments_read_as_method_amount_and_receipt_number_at_no_query_per_row(manager_client, sales):
    own, _ = sales
    url = reverse("admin:pos_sale_change", args=[own.pk])
    with CaptureQueriesContext(connection) as one_payment:
        page = manager_client.get(url).content.decode()
    assert f"Cash KES 116.00 · {own.receipt_number}" in page
    PaymentFactory(sale=own, method=Payment.Method.MPESA, amount=Decimal("10.00"), reference="UAB12CD34E")
    PaymentFactory(sale=own, method=Payment.Method.MPESA, amount=Decimal("20.00"), reference="UAB12CD34F")
    with CaptureQueriesContext(connection) as three_payments:
        page = manager_client.get(url).content.decode()
    assert f"M-Pesa KES 20.00 · {own.receipt_number}" in page
    assert len(three_payments) == len(one_payment)
