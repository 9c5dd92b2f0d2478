from django.urls import reverse

from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from pos.services import search_products
from pos.tests.factories import ShopFactory, StaffFactory, UserFactory

URL = reverse("pos:products")


def test_a_scanned_barcode_returns_the_product_with_the_shops_stock(cashier_client, product):
    response = cashier_client.get(URL, {"q": product.barcode})

    assert response.status_code == 200
    assert response.json() == [{
        "id": product.pk, "name": "Sugar 1kg", "sku": "SUG1KG", "barcode": "6161100000017", "price": "116.00",
        "stock": 50, "unit": "pc", "tax_band": "B", "tax_rate": "16.00",
    }]


def test_an_exact_code_returns_only_exact_matches_barcode_first(cashier_client, product):
    ProductFactory(name="A sugar lookalike", barcode=product.barcode + "9")
    ProductFactory(name="Another", sku=product.barcode)  # a SKU that happens to look like the code

    found = [p["name"] for p in cashier_client.get(URL, {"q": product.barcode}).json()]

    assert found == ["Sugar 1kg", "Another"]


def test_a_partial_code_finds_the_products_it_starts(cashier_client, product):
    ProductFactory(name="A sugar lookalike", barcode=product.barcode + "9")

    found = [p["name"] for p in cashier_client.get(URL, {"q": product.barcode[:8]}).json()]

    assert found == ["A sugar lookalike", "Sugar 1kg"]


def test_a_whole_scan_request_costs_two_queries(cashier_client, product, django_assert_max_num_queries):
    cashier_client.get(URL, {"q": product.barcode})  # the session is now in the cache

    # The user with their staff row and shop (pos.backends.StaffBackend), then the product.
    with django_assert_max_num_queries(2):
        assert cashier_client.get(URL, {"q": product.barcode}).json()[0]["name"] == "Sugar 1kg"


def test_name_and_sku_search_is_case_insensitive_and_sorted_by_name(cashier_client, product):
    ProductFactory(name="Brown Sugar 500g", sku="BRSUG")
    ProductFactory(name="Salt 1kg", sku="SALT1")

    assert [p["name"] for p in cashier_client.get(URL, {"q": "SUGAR"}).json()] == ["Brown Sugar 500g", "Sugar 1kg"]
    assert [p["name"] for p in cashier_client.get(URL, {"q": "salt1"}).json()] == ["Salt 1kg"]


def test_a_search_returns_at_most_20_products(cashier_client, shop):
    for number in range(25):
        ProductFactory(name=f"Milk {number:02d}")

    results = cashier_client.get(URL, {"q": "milk"}).json()

    assert len(results) == 20
    assert results[0]["name"] == "Milk 00"


def test_inactive_products_are_not_offered(cashier_client, product):
    ProductFactory(name="Sugar (old pack)", is_active=False)

    assert [p["name"] for p in cashier_client.get(URL, {"q": "sugar"}).json()] == ["Sugar 1kg"]


def test_stock_is_the_cashiers_shop_and_zero_where_never_stocked(client, product):
    other = ShopFactory(code="WEST", name="Westlands")
    receive_stock(shop_id=other.pk, product_id=product.pk, quantity=7)
    ProductFactory(name="Sugar sachet")
    client.force_login(StaffFactory(shop=other).user)

    stock = {p["name"]: p["stock"] for p in client.get(URL, {"q": "sugar"}).json()}

    assert stock == {"Sugar 1kg": 7, "Sugar sachet": 0}


def test_an_empty_query_returns_nothing(cashier_client, product):
    assert cashier_client.get(URL, {"q": "  "}).json() == []
    assert cashier_client.get(URL).json() == []


def test_a_barcode_lookup_is_one_query(shop, product, django_assert_num_queries):
    ProductFactory.create_batch(5)
    with django_assert_num_queries(1):
        assert search_products(shop_id=shop.pk, query=product.barcode)[0]["id"] == product.pk


def test_only_staff_may_search(client, product):
    assert client.get(URL, {"q": "sugar"}).status_code == 403
    client.force_login(UserFactory(username="visitor"))
    response = client.get(URL, {"q": "sugar"})
    assert response.status_code == 403
    assert response.json()["error"].startswith("Your login is not set up as staff")
