"""The back office for products and stock: on-hand is read-only, moves go through the ledger."""

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory.models import StockLevel, StockMovement
from inventory.services import find_stock_discrepancies, receive_stock
from inventory.tests.factories import ProductFactory
from pos.models import Staff
from pos.services import add_staff
from pos.tests.factories import ShopFactory, UserFactory

MOVE = "admin:inventory_stocklevel_move"


@pytest.fixture
def other_shop(db):
    return ShopFactory(code="MSA", name="Mombasa Duka")


@pytest.fixture
def manager(shop):
    user = UserFactory(username="akinyi")
    add_staff(user, shop, Staff.Role.MANAGER)
    return user


@pytest.fixture
def manager_client(client, manager):
    client.force_login(manager)
    return client


def _level(shop, product):
    return StockLevel.objects.get(shop=shop, product=product).on_hand


def _move(client, **data):
    return client.post(reverse(MOVE), {"reference": "", "reason": "", "to_shop": "", **data})


def test_products_are_found_by_barcode_sku_or_name(manager_client, product):
    ProductFactory(name="Jogoo Maize Flour 2kg", sku="UNG-JOG-2KG", barcode="6161101000038")
    url = reverse("admin:inventory_product_changelist")
    for query in ["6161100000017", "SUG1KG", "sugar"]:
        page = manager_client.get(url, {"q": query}).content.decode()
        assert "Sugar 1kg" in page and "Jogoo" not in page, query


def test_products_filter_by_tax_band_and_active(manager_client, product):
    ProductFactory(name="Brookside Milk", tax_band="A")
    ProductFactory(name="Old Soap", is_active=False)
    url = reverse("admin:inventory_product_changelist")
    page = manager_client.get(url, {"tax_band__exact": "A"}).content.decode()
    assert "Brookside Milk" in page and "Sugar 1kg" not in page
    page = manager_client.get(url, {"is_active__exact": "0"}).content.decode()
    assert "Old Soap" in page and "Sugar 1kg" not in page


def test_the_product_list_shows_the_managers_own_shop_stock(manager_client, shop, other_shop, product):
    receive_stock(shop_id=other_shop.pk, product_id=product.pk, quantity=900)
    response = manager_client.get(reverse("admin:inventory_product_changelist"))
    assert response.context["cl"].result_list[0].stock_on_hand == 50


def test_a_superuser_sees_stock_across_the_chain(admin_client, shop, other_shop, product):
    receive_stock(shop_id=other_shop.pk, product_id=product.pk, quantity=900)
    response = admin_client.get(reverse("admin:inventory_product_changelist"))
    assert response.context["cl"].result_list[0].stock_on_hand == 950


@pytest.mark.parametrize("url_name", ["admin:inventory_product_changelist", "admin:inventory_stocklevel_changelist",
                                      "admin:inventory_stockmovement_changelist"])
def test_stock_lists_do_not_grow_in_queries_with_the_page(manager_client, shop, url_name):
    def add_products(n):
        for _ in range(n):
            receive_stock(shop_id=shop.pk, product_id=ProductFactory().pk, quantity=3, user=UserFactory())

    add_products(1)
    with CaptureQueriesContext(connection) as one:
        assert manager_client.get(reverse(url_name)).status_code == 200
    add_products(10)
    with CaptureQueriesContext(connection) as eleven:
        manager_client.get(reverse(url_name))
    assert len(eleven) == len(one)


def test_on_hand_cannot_be_edited_in_the_admin(manager_client, shop, product):
    level = StockLevel.objects.get(shop=shop, product=product)
    url = reverse("admin:inventory_stocklevel_change", args=[level.pk])
    assert manager_client.get(url).status_code == 200
    assert manager_client.post(url, {"on_hand": 999, "shop": shop.pk, "product": product.pk}).status_code == 403
    assert manager_client.get(reverse("admin:inventory_stocklevel_add")).status_code == 403
    assert _level(shop, product) == 50


def test_a_managers_stock_list_is_their_own_shop(manager_client, shop, other_shop, product):
    receive_stock(shop_id=other_shop.pk, product_id=product.pk, quantity=7)
    other = StockLevel.objects.get(shop=other_shop)
    page = manager_client.get(reverse("admin:inventory_stocklevel_changelist")).content.decode()
    assert "Demo Duka" in page and "Mombasa Duka" not in page
    assert manager_client.get(reverse("admin:inventory_stocklevel_change", args=[other.pk])).status_code == 404


def test_the_ledger_is_read_only(manager_client, shop, product):
    movement = StockMovement.objects.get()
    page = manager_client.get(reverse("admin:inventory_stockmovement_changelist")).content.decode()
    assert "Sugar 1kg" in page
    url = reverse("admin:inventory_stockmovement_change", args=[movement.pk])
    assert manager_client.get(url).status_code == 200
    assert manager_client.post(url, {"quantity": 500}).status_code == 403
    assert manager_client.get(reverse("admin:inventory_stockmovement_add")).status_code == 403
    delete = reverse("admin:inventory_stockmovement_delete", args=[movement.pk])
    assert manager_client.post(delete, {"post": "yes"}).status_code == 403
    assert StockMovement.objects.get().quantity == 50


def test_a_manager_receives_a_delivery_into_the_ledger(manager_client, manager, shop, product):
    response = _move(manager_client, action="receive", product="6161100000017", shop=shop.pk, quantity=24,
                     reference="DN-4411", reason="Bidco delivery")
    assert response.status_code == 302
    movement = StockMovement.objects.latest("id")
    assert (movement.kind, movement.quantity, movement.reference, movement.created_by) == (
        "receive", 24, "DN-4411", manager)
    assert _level(shop, product) == 74
    messages = [str(m) for m in manager_client.get(response["Location"]).context["messages"]]
    assert messages == ["Received 24 × Sugar 1kg into Demo Duka. On hand in Demo Duka now 74."]


def test_an_adjustment_needs_a_reason(manager_client, shop, product):
    response = _move(manager_client, action="adjust", product="SUG1KG", shop=shop.pk, quantity=-3)
    assert response.status_code == 200
    assert "Say why the stock is adjusted" in response.content.decode()
    assert _level(shop, product) == 50
    response = _move(manager_client, action="adjust", product="SUG1KG", shop=shop.pk, quantity=-3,
                     reason="bags torn")
    assert response.status_code == 302
    assert _level(shop, product) == 47
    assert StockMovement.objects.latest("id").reason == "bags torn"


def test_an_adjustment_below_zero_is_refused_in_words(manager_client, shop, product):
    response = _move(manager_client, action="adjust", product="SUG1KG", shop=shop.pk, quantity=-51,
                     reason="stolen")
    assert "Only 50 of Sugar 1kg in stock" in response.content.decode()
    assert _level(shop, product) == 50


def test_a_count_records_the_difference(manager_client, shop, product):
    _move(manager_client, action="count", product="SUG1KG", shop=shop.pk, quantity=45)
    assert _level(shop, product) == 45
    movement = StockMovement.objects.latest("id")
    assert (movement.kind, movement.quantity) == ("count", -5)


def test_a_transfer_moves_stock_between_shops(manager_client, shop, other_shop, product):
    response = _move(manager_client, action="transfer", product="SUG1KG", shop=shop.pk, quantity=10,
                     to_shop=other_shop.pk)
    assert response.status_code == 302
    assert (_level(shop, product), _level(other_shop, product)) == (40, 10)
    assert find_stock_discrepancies() == []


def test_a_transfer_needs_a_destination(manager_client, shop, product):
    response = _move(manager_client, action="transfer", product="SUG1KG", shop=shop.pk, quantity=10)
    assert "Choose the shop the stock goes to." in response.content.decode()
    assert _level(shop, product) == 50


def test_an_unknown_product_code_is_refused_in_words(manager_client, shop, product):
    response = _move(manager_client, action="receive", product="0000", shop=shop.pk, quantity=1)
    assert "No product with SKU or barcode 0000." in response.content.decode()


def test_a_manager_cannot_move_another_shops_stock(manager_client, other_shop, product):
    response = _move(manager_client, action="receive", product="SUG1KG", shop=other_shop.pk, quantity=5)
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not StockLevel.objects.filter(shop=other_shop).exists()


def test_staff_without_the_permission_cannot_move_stock(client, shop, product):
    clerk = UserFactory(is_staff=True)
    add_staff(clerk, shop, Staff.Role.CASHIER)
    clerk.is_staff = True
    clerk.save()
    client.force_login(clerk)
    assert client.get(reverse(MOVE)).status_code == 403


def test_the_move_page_is_prefilled_from_a_stock_row(manager_client, shop, product):
    page = manager_client.get(reverse(MOVE), {"product": "SUG1KG", "shop": shop.pk}).content.decode()
    assert 'value="SUG1KG"' in page


def test_a_staff_login_without_a_shop_sees_nothing(client, product):
    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_stocklevel"))
    client.force_login(user)
    assert client.get(reverse("admin:inventory_stocklevel_changelist")).status_code == 403
