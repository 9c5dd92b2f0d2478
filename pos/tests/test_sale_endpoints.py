"""GET /cashier/sales/<id>, POST …/cash and …/cancel: the till's view of one sale."""

import json
from decimal import Decimal

import pytest
from django.urls import reverse

from inventory.models import StockLevel, StockMovement
from inventory.services import adjust_stock
from pos.models import Sale
from pos.services import ItemRequest, create_sale, take_cash
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory
from pos.tests.utils import written_rows


@pytest.fixture
def pending_sale(cashier, till, product):
    """Two bags of sugar, KES 232, not paid yet (as an M-Pesa sale waits for its callback)."""
    return create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=2, barcode=product.barcode)])


@pytest.fixture
def outsider_client(db, client):
    """A cashier of another shop."""
    other = ShopFactory(code="WEST", name="Westlands")
    client.force_login(StaffFactory(shop=other, default_till=TillFactory(shop=other)).user)
    return client


def post(client, name, sale, body):
    return client.post(reverse(name, args=[sale.pk]), data=json.dumps(body), content_type="application/json")


def test_a_sale_is_shown_with_lines_payments_and_balance(cashier_client, pending_sale, cashier):
    take_cash(sale_id=pending_sale.pk, tendered=Decimal("100"), user=cashier)

    body = cashier_client.get(reverse("pos:sale", args=[pending_sale.pk])).json()

    assert body["success"] is True
    assert body["sale_id"] == pending_sale.pk
    assert body["receipt_number"] == pending_sale.receipt_number
    assert (body["status"], body["total"], body["vat_total"], body["amount_paid"], body["balance_due"]) == (
        "pending", "232.00", "32.00", "100.00", "132.00")
    assert body["lines"] == [{"product_id": pending_sale.lines.get().product_id, "name": "Sugar 1kg", "quantity": 2,
                              "unit_price": "116.00", "line_total": "232.00", "tax_band": "B", "vat_amount": "32.00"}]
    assert [(p["method"], p["amount"], p["tendered"], p["change_given"]) for p in body["payments"]] == [
        ("cash", "100.00", "100.00", "0.00")]
    assert body["receipt_url"] == reverse("receipts:html", args=[pending_sale.pk])
    assert body["till"] == "Till 1" and body["cashier"] == "wanjiru"


def test_cash_for_the_whole_balance_completes_the_sale_and_moves_stock(cashier_client, pending_sale, product):
    response = post(cashier_client, "pos:sale-cash", pending_sale, {"amount_tendered": "300"})

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["change_due"], body["cash_applied"], body["balance_due"]) == (
        "completed", "68.00", "232.00", "0.00")
    assert StockLevel.objects.get(product=product).on_hand == 48
    assert StockMovement.objects.filter(sale=pending_sale).count() == 1


def test_part_cash_leaves_the_rest_due_split_tender(cashier_client, pending_sale, product):
    response = post(cashier_client, "pos:sale-cash", pending_sale, {"amount_tendered": 200})

    body = response.json()
    assert response.status_code == 200
    assert (body["status"], body["change_due"], body["balance_due"], body["amount_paid"]) == (
        "pending", "0.00", "32.00", "200.00")
    assert StockMovement.objects.filter(sale=pending_sale).count() == 0

    body = post(cashier_client, "pos:sale-cash", pending_sale, {"amount_tendered": 50}).json()
    assert (body["status"], body["change_due"], body["balance_due"]) == ("completed", "18.00", "0.00")


@pytest.mark.parametrize("body, message", [
    ({"amount_tendered": 0}, "Enter the cash the customer handed over."),
    ({"amount_tendered": "abc"}, "Cash tendered must be an amount in shillings, e.g. 500 or 99.50."),
    ({}, "Enter the cash the customer handed over."),
    ({"amount_tendered": -10}, "Cash tendered cannot be negative."),
])
def test_bad_cash_is_refused_and_writes_nothing(cashier_client, pending_sale, body, message):
    before = written_rows()
    response = post(cashier_client, "pos:sale-cash", pending_sale, body)

    assert response.status_code == 400
    assert response.json() == {"success": False, "error": message}
    assert written_rows() == before


def test_cash_on_a_paid_sale_is_refused(cashier_client, pending_sale, cashier):
    take_cash(sale_id=pending_sale.pk, tendered=Decimal("232"), user=cashier)
    before = written_rows()

    response = post(cashier_client, "pos:sale-cash", pending_sale, {"amount_tendered": 100})

    assert response.status_code == 400
    assert response.json()["error"] == f"Sale {pending_sale.receipt_number} is already paid."
    assert written_rows() == before


def test_cash_on_a_cancelled_sale_is_refused(cashier_client, pending_sale):
    post(cashier_client, "pos:sale-cancel", pending_sale, {})
    before = written_rows()

    response = post(cashier_client, "pos:sale-cash", pending_sale, {"amount_tendered": 300})

    assert response.status_code == 400
    assert response.json()["error"] == f"Sale {pending_sale.receipt_number} is cancelled; it takes no more payments."
    assert written_rows() == before


def test_cash_is_refused_when_the_stock_ran_out_meanwhile(cashier_client, pending_sale, shop, product):
    adjust_stock(shop_id=shop.pk, product_id=product.pk, quantity=-49, reason="damaged")
    before = written_rows()

    response = post(cashier_client, "pos:sale-cash", pending_sale, {"amount_tendered": 300})

    assert response.status_code == 400
    assert response.json()["error"].startswith("Only 1 of Sugar 1kg in stock; 2 requested.")
    assert written_rows() == before
    assert Sale.objects.get().status == Sale.Status.PENDING


def test_cancelling_a_pending_sale(cashier_client, pending_sale, product):
    response = post(cashier_client, "pos:sale-cancel", pending_sale, {"reason": "customer left"})

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert "message" not in response.json()
    sale = Sale.objects.get()
    assert (sale.status, sale.cancel_reason) == (Sale.Status.CANCELLED, "customer left")
    assert StockLevel.objects.get(product=product).on_hand == 50


def test_cancelling_after_part_payment_says_a_refund_is_due(cashier_client, pending_sale, cashier):
    take_cash(sale_id=pending_sale.pk, tendered=Decimal("100"), user=cashier)

    body = post(cashier_client, "pos:sale-cancel", pending_sale, {}).json()

    assert body["message"] == (
        f"Sale {pending_sale.receipt_number} cancelled. KES 100.00 was already paid: ask a manager to refund it.")


def test_a_completed_sale_cannot_be_cancelled(cashier_client, pending_sale, cashier):
    take_cash(sale_id=pending_sale.pk, tendered=Decimal("232"), user=cashier)

    response = post(cashier_client, "pos:sale-cancel", pending_sale, {})

    assert response.status_code == 400
    assert response.json()["error"] == f"Sale {pending_sale.receipt_number} is completed; make a return instead."
    assert Sale.objects.get().status == Sale.Status.COMPLETED


@pytest.mark.parametrize("method, name, body", [
    ("get", "pos:sale", None),
    ("post", "pos:sale-cash", {"amount_tendered": 300}),
    ("post", "pos:sale-cancel", {}),
])
def test_another_shops_cashier_gets_404_and_changes_nothing(outsider_client, pending_sale, method, name, body):
    before = written_rows()
    if method == "get":
        response = outsider_client.get(reverse(name, args=[pending_sale.pk]))
    else:
        response = post(outsider_client, name, pending_sale, body)

    assert response.status_code == 404
    assert response.json() == {"success": False, "error": "No such sale in this shop."}
    assert written_rows() == before


def test_an_unknown_sale_is_404(cashier_client, shop):
    assert cashier_client.get(reverse("pos:sale", args=[999999])).status_code == 404
