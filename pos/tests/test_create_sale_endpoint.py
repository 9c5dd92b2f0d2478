import json
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from inventory.models import StockLevel, StockMovement
from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from pos.models import Payment, Sale
from pos.services import SaleError, close_shift, open_shift
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory
from pos.tests.utils import written_rows

URL = reverse("pos:create-sale")
STARTED = []


def start_payment_for_test(*, sale, phone, user):
    """Stands in for mpesa.services.start_stk_payment: pos must work with any app's starter."""
    STARTED.append((sale.pk, phone, user.pk))
    return {"mpesa_checkout_id": f"ws_CO_TEST_{sale.pk}", "message": "Prompt sent to the customer's phone."}


def refuse_payment_for_test(*, sale, phone, user):
    raise SaleError("The customer's phone is busy with another prompt. Try again in a minute.")


@pytest.fixture
def starter(settings):
    STARTED.clear()
    settings.POS_PAYMENT_STARTERS = {"mpesa": f"{__name__}.start_payment_for_test"}
    return STARTED


def post(client, body):
    return client.post(URL, data=json.dumps(body), content_type="application/json")


def test_cash_sale_is_created_paid_and_completed_with_change(cashier_client, cashier, till, product):
    response = post(cashier_client, {
        "items": [{"barcode": product.barcode, "quantity": 2}], "payment_method": "cash", "amount_tendered": 500,
    })

    assert response.status_code == 201
    body = response.json()
    sale = Sale.objects.get()
    assert body["success"] is True
    assert body["sale_id"] == sale.pk
    assert body["receipt_number"] == "DEMO-0000001"
    assert body["total"] == "232.00"
    assert body["change_due"] == "268.00"
    assert body["mpesa_checkout_id"] is None
    assert body["sale"]["status"] == "completed"
    assert body["sale"]["lines"][0]["quantity"] == 2
    assert sale.status == Sale.Status.COMPLETED and sale.till == till and sale.cashier == cashier
    payment = Payment.objects.get()
    assert (payment.method, payment.amount, payment.tendered, payment.change_given) == (
        "cash", Decimal("232.00"), Decimal("500.00"), Decimal("268.00"))
    assert StockLevel.objects.get(product=product).on_hand == 48
    assert StockMovement.objects.filter(sale=sale, quantity=-2).count() == 1


def test_items_by_sku_and_product_id_are_merged_into_one_line(cashier_client, product):
    response = post(cashier_client, {
        "items": [{"sku": product.sku, "quantity": 1}, {"product_id": product.pk, "quantity": 2},
                  {"barcode": product.barcode, "quantity": 1}],
        "payment_method": "cash", "amount_tendered": "464.00",
    })

    assert response.status_code == 201, response.json()
    assert response.json()["change_due"] == "0.00"
    assert [(line["name"], line["quantity"]) for line in response.json()["sale"]["lines"]] == [("Sugar 1kg", 4)]


def test_mpesa_sale_stays_pending_and_is_handed_to_the_payment_starter(cashier_client, cashier, product, starter):
    response = post(cashier_client, {
        "items": [{"barcode": product.barcode, "quantity": 1}], "payment_method": "mpesa",
        "customer_phone": "0708 374-149",
    })

    assert response.status_code == 201
    sale = Sale.objects.get()
    assert response.json()["mpesa_checkout_id"] == f"ws_CO_TEST_{sale.pk}"
    assert response.json()["message"] == "Prompt sent to the customer's phone."
    assert response.json()["change_due"] == "0.00"
    assert starter == [(sale.pk, "0708374149", cashier.pk)]
    assert sale.status == Sale.Status.PENDING and sale.customer_phone == "0708374149"
    assert StockMovement.objects.filter(sale=sale).count() == 0


def test_a_sale_paid_later_stays_pending_and_starts_no_payment(cashier_client, product, starter):
    response = post(cashier_client, {"items": [{"barcode": product.barcode, "quantity": 1}],
                                     "payment_method": "later"})

    assert response.status_code == 201
    sale = Sale.objects.get()
    body = response.json()
    assert (body["sale_id"], body["sale"]["status"], body["sale"]["balance_due"]) == (sale.pk, "pending", "116.00")
    assert sale.status == Sale.Status.PENDING and not sale.payments.exists()
    assert starter == [] and StockMovement.objects.filter(sale=sale).count() == 0


def test_a_refused_mpesa_prompt_leaves_the_pending_sale_for_cash_or_cancel(cashier_client, product, settings):
    settings.POS_PAYMENT_STARTERS = {"mpesa": f"{__name__}.refuse_payment_for_test"}

    response = post(cashier_client, {
        "items": [{"barcode": product.barcode, "quantity": 1}], "payment_method": "mpesa",
        "customer_phone": "254708374149",
    })

    assert response.status_code == 400
    body = response.json()
    sale = Sale.objects.get()
    assert body == {**body, "success": False, "sale_id": sale.pk, "receipt_number": sale.receipt_number,
                    "error": "The customer's phone is busy with another prompt. Try again in a minute."}
    assert body["sale"]["status"] == "pending" and body["sale"]["balance_due"] == "116.00"
    assert body["message"] == (f"Sale {sale.receipt_number} is saved and waiting for payment: send the prompt "
                               "again, take cash, or cancel it.")


def test_mpesa_without_a_phone_number_writes_nothing(cashier_client, product, starter):
    before = written_rows()
    response = post(cashier_client, {"items": [{"barcode": product.barcode, "quantity": 1}],
                                     "payment_method": "mpesa"})

    assert response.status_code == 400
    assert response.json() == {"success": False, "error": "Enter the customer's M-Pesa phone number."}
    assert written_rows() == before and starter == []


def _inactive(product):
    return ProductFactory(name="Old Soap", sku="OLDSOAP", barcode="6160000000001", is_active=False)


def _unstocked(product):
    return ProductFactory(name="Imported Tea", sku="TEA", barcode="6160000000002")


BAD_REQUESTS = {
    "unknown barcode": (
        {"items": [{"barcode": "0000000000000", "quantity": 1}]},
        "No product with code 0000000000000. Check the code or search by name.",
    ),
    "zero quantity": ({"items": [{"barcode": "{barcode}", "quantity": 0}]},
                      "Quantity for {barcode} must be 1 or more."),
    "negative quantity": ({"items": [{"barcode": "{barcode}", "quantity": -3}]},
                          "Quantity for {barcode} must be 1 or more."),
    "fractional quantity": ({"items": [{"barcode": "{barcode}", "quantity": 1.5}]},
                            "Quantity for {barcode} must be a whole number (got 1.5)."),
    "quantity as text": ({"items": [{"barcode": "{barcode}", "quantity": "two"}]},
                         "Quantity for {barcode} must be a whole number (got 'two')."),
    "missing quantity": ({"items": [{"barcode": "{barcode}"}]},
                         "Quantity for {barcode} must be a whole number (got None)."),
    "quantity above stock": ({"items": [{"barcode": "{barcode}", "quantity": 51}]},
                             "Only 50 of Sugar 1kg in stock; 51 requested. Reduce the quantity."),
    "repeated items above stock": (
        {"items": [{"barcode": "{barcode}", "quantity": 30}, {"sku": "SUG1KG", "quantity": 21}]},
        "Only 50 of Sugar 1kg in stock; 51 requested. Reduce the quantity.",
    ),
    "cash below total": ({"amount_tendered": "100.00"},
                         "Cash tendered (KES 100.00) is less than the total (KES 116.00)."),
    "no cash tendered": ({"amount_tendered": None},
                         "Cash tendered (KES 0.00) is less than the total (KES 116.00)."),
    "cash as text": ({"amount_tendered": "lots"}, "Cash tendered must be an amount in shillings, e.g. 500 or 99.50."),
    "negative cash": ({"amount_tendered": -5}, "Cash tendered cannot be negative."),
    "cash with fractions of a cent": ({"amount_tendered": "500.005"},
                                      "Cash tendered can have at most 2 decimal places (cents)."),
    "inactive product": ({"items": [{"barcode": "6160000000001", "quantity": 1}]},
                         "Old Soap is no longer sold (inactive). Ask a manager."),
    "product not stocked in this shop": ({"items": [{"barcode": "6160000000002", "quantity": 1}]},
                                         "Imported Tea is not stocked in Demo Duka."),
    "missing items": ({"items": None}, "The cart is empty. Scan or search for an item first."),
    "empty items": ({"items": []}, "The cart is empty. Scan or search for an item first."),
    "items not a list": ({"items": "6161100000017"},
                         "The items must be a list of {barcode | sku | product_id, quantity}."),
    "item not an object": ({"items": ["6161100000017"]},
                           "Each item must be an object such as {\"barcode\": \"…\", \"quantity\": 1}."),
    "item without a code": ({"items": [{"quantity": 1}]},
                            "Item 1 needs exactly one code: a barcode, a SKU or a product id."),
    "item with two codes": ({"items": [{"barcode": "{barcode}", "sku": "SUG1KG", "quantity": 1}]},
                            "Item 1 needs exactly one code: a barcode, a SKU or a product id."),
    "barcode as a number": ({"items": [{"barcode": 6161100000017, "quantity": 1}]},
                            "Item 1: the barcode must be text, e.g. \"6161100000017\"."),
    "product id as text": ({"items": [{"product_id": "one", "quantity": 1}]},
                           "Item 1: the product id must be a whole number."),
    "unknown payment method": ({"payment_method": "bitcoin"},
                               "Unknown payment method \"bitcoin\". Choose cash or M-Pesa."),
    "missing payment method": ({"payment_method": None}, "Choose a payment method: cash or M-Pesa."),
    "bad phone number": ({"customer_phone": "call me"},
                         "Check the customer's phone number, e.g. 0712 345 678 or 254712345678."),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_a_bad_request_is_refused_in_words_and_writes_nothing(cashier_client, product, case):
    _inactive(product), _unstocked(product)
    changes, message = BAD_REQUESTS[case]
    body = {"items": [{"barcode": product.barcode, "quantity": 1}], "payment_method": "cash",
            "amount_tendered": "200"}
    body.update(json.loads(json.dumps(changes).replace("{barcode}", product.barcode)))
    body = {key: value for key, value in body.items() if value is not None or key == "amount_tendered"}
    before = written_rows()

    response = post(cashier_client, body)

    assert response.status_code == 400
    assert response.json() == {"success": False, "error": message.replace("{barcode}", product.barcode)}
    assert written_rows() == before


@pytest.mark.parametrize("raw, message", [
    ("{not json",
     "The till sent a request the server could not read (malformed JSON). Reload the page and try again."),
    ("[1, 2]", "The till sent a request the server could not read (expected a JSON object). Reload the page."),
])
def test_an_unreadable_body_is_refused_and_writes_nothing(cashier_client, product, raw, message):
    before = written_rows()
    response = cashier_client.post(URL, data=raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"success": False, "error": message}
    assert written_rows() == before


def test_the_staff_default_till_is_used_when_open_else_the_first_open_till(client, shop, product):
    closed = TillFactory(shop=shop, name="A closed till", is_active=False)
    front = TillFactory(shop=shop, name="B front")
    user = StaffFactory(shop=shop, default_till=closed).user
    open_shift(till=front, user=user, opening_float=0)
    client.force_login(user)

    response = post(client, {"items": [{"product_id": product.pk, "quantity": 1}], "payment_method": "cash",
                             "amount_tendered": 116})

    assert response.status_code == 201
    assert Sale.objects.get().till.name == "B front"


def test_a_shop_with_no_open_till_cannot_sell(client, product):
    shop = ShopFactory(code="EMPT", name="Empty Shop")
    client.force_login(StaffFactory(shop=shop).user)
    before = written_rows()

    response = post(client, {"items": [{"product_id": product.pk, "quantity": 1}], "payment_method": "cash",
                             "amount_tendered": 116})

    assert response.status_code == 400
    assert response.json()["error"] == "Empty Shop has no open till. Ask a manager to add one in the admin."
    assert written_rows() == before


def test_stock_is_checked_in_the_cashiers_own_shop(client, product):
    other = ShopFactory(code="WEST", name="Westlands")
    user = StaffFactory(shop=other).user
    open_shift(till=TillFactory(shop=other), user=user, opening_float=0)
    client.force_login(user)

    response = post(client, {"items": [{"barcode": product.barcode, "quantity": 1}], "payment_method": "cash",
                             "amount_tendered": 116})

    assert response.status_code == 400
    assert response.json()["error"] == "Sugar 1kg is not stocked in Westlands."
    receive_stock(shop_id=other.pk, product_id=product.pk, quantity=1)
    assert post(client, {"items": [{"barcode": product.barcode, "quantity": 1}], "payment_method": "cash",
                         "amount_tendered": 116}).status_code == 201
    assert StockLevel.objects.get(shop=other, product=product).on_hand == 0
    assert StockLevel.objects.get(shop__code="DEMO", product=product).on_hand == 50


def test_a_login_without_staff_row_gets_403_in_words(client, product):
    client.force_login(UserFactory(username="visitor"))
    before = written_rows()

    response = post(client, {"items": [{"barcode": product.barcode, "quantity": 1}], "payment_method": "cash",
                             "amount_tendered": 116})

    assert response.status_code == 403
    assert response.json()["success"] is False
    assert response.json()["error"].startswith("Your login is not set up as staff of a shop")
    assert written_rows() == before


def test_an_anonymous_request_is_refused(client, product):
    response = post(client, {"items": [{"barcode": product.barcode, "quantity": 1}], "payment_method": "cash",
                             "amount_tendered": 116})

    assert response.status_code == 403
    assert response.json() == {"success": False, "error": "You are logged out. Log in again to use the till."}
    assert Sale.objects.count() == 0


def test_csrf_token_is_required(cashier, product):
    client = Client(enforce_csrf_checks=True)
    client.force_login(cashier)
    body = json.dumps({"items": [{"barcode": product.barcode, "quantity": 1}], "payment_method": "cash",
                       "amount_tendered": 116})

    refused = client.post(URL, data=body, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["error"] == (
        "This page is out of date (security check failed). Reload the page and try again.")
    assert Sale.objects.count() == 0

    client.get(reverse("pos:home"))
    accepted = client.post(URL, data=body, content_type="application/json",
                           headers={"X-CSRFToken": client.cookies["csrftoken"].value})
    assert accepted.status_code == 201


CHECKED = []


def check_payment_for_test(*, shop, phone, amount):
    """Stands in for mpesa.services.check_stk_payment: what can be refused before a sale exists."""
    CHECKED.append((shop.pk, phone, amount))
    if phone.endswith("0000"):
        raise SaleError("This phone already has a prompt open. Wait for it to finish, or take cash.")


@pytest.fixture
def check(settings):
    CHECKED.clear()
    settings.POS_PAYMENT_CHECKS = {"mpesa": f"{__name__}.check_payment_for_test"}
    return CHECKED


def test_the_payment_check_is_asked_with_shop_phone_and_total_before_the_sale(
        cashier_client, shop, product, starter, check):
    response = post(cashier_client, {"items": [{"barcode": product.barcode, "quantity": 2}],
                                     "payment_method": "mpesa", "customer_phone": "0708 374 149"})

    assert response.status_code == 201
    assert check == [(shop.pk, "0708374149", Decimal("232.00"))] and len(starter) == 1


def test_a_payment_refused_by_its_check_writes_nothing_and_starts_nothing(cashier_client, product, starter, check):
    before = written_rows()
    response = post(cashier_client, {"items": [{"barcode": product.barcode, "quantity": 1}],
                                     "payment_method": "mpesa", "customer_phone": "0711000000"})

    assert response.status_code == 400
    assert response.json() == {"success": False,
                               "error": "This phone already has a prompt open. Wait for it to finish, or take cash."}
    assert written_rows() == before and starter == []


def test_a_till_with_no_open_shift_is_told_to_open_one(cashier_client, cashier, till, product):
    close_shift(shift_id=till.shifts.get().pk, counted_cash="0", user=cashier)
    before = written_rows()

    response = post(cashier_client, {"items": [{"barcode": product.barcode, "quantity": 1}],
                                     "payment_method": "cash", "amount_tendered": 116})

    assert response.status_code == 400
    assert response.json() == {"success": False, "error": "Open a shift on Till 1 first: enter the opening float."}
    assert written_rows() == before
