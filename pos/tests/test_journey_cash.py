"""Journey 1 in a real browser: a cashier logs in, scans two items, changes a quantity, takes cash
with change and sees the receipt, which the till's network printer (a TCP listener) receives."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from comolor.testing.browser import scan, wait_for_till
from inventory.models import StockLevel
from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from pos.models import Sale
from receipts.models import PrintJob
from receipts.tests.factories import PrinterFactory
from receipts.tests.fake_printer import PRINTER_PORT, FakePrinter

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def milk(shop):
    milk = ProductFactory(name="Fresh milk 500ml", sku="MILK500", barcode="6161100000024", price=Decimal("60.00"))
    receive_stock(shop_id=shop.pk, product_id=milk.pk, quantity=20)
    return milk


@pytest.fixture
def printer(till):
    with FakePrinter(PRINTER_PORT) as listener:
        PrinterFactory(till=till, port=PRINTER_PORT)
        yield listener


def test_a_cashier_sells_two_items_for_cash_and_the_receipt_prints(
        page, cashier, shop, product, milk, printer, screenshot):
    page.goto("/")
    expect(page.get_by_role("heading", name="Log in to the till")).to_be_visible()
    page.get_by_label("Username").fill(cashier.username)
    page.get_by_label("Password").fill("password")
    page.get_by_role("button", name="Log in").click()
    wait_for_till(page)
    expect(page.locator("#till-status")).to_have_text("Till 1 · ready")
    screenshot(page, "till-idle", readme=True)

    scan(page, product.barcode)
    expect(page.locator("#till-lines .line")).to_have_count(1)
    scan(page, milk.barcode)
    expect(page.locator("#till-lines .line")).to_have_count(2)
    page.get_by_label("Quantity of Sugar 1kg").fill("3")
    page.get_by_label("Quantity of Sugar 1kg").press("Enter")
    expect(page.locator("#till-total")).to_have_text("KES 408.00")
    expect(page.locator("#till-count")).to_have_text("4 items")
    screenshot(page, "cash-cart")

    page.get_by_role("button", name="Cash F2").click()
    page.locator("#till-tendered").fill("1000")
    expect(page.locator("#till-change")).to_have_text("KES 592.00")
    page.get_by_role("button", name="Complete sale").click()

    expect(page.locator("#till-total-label")).to_have_text("Change due")
    expect(page.locator("#till-total")).to_have_text("KES 592.00")
    expect(page.locator("#receipt-panel")).to_be_visible()
    expect(page.locator("#receipt-status")).to_have_text("The receipt was printed on Till 1 printer.")
    page.wait_for_function("() => document.getElementById('receipt-preview').naturalWidth > 0")
    screenshot(page, "receipt-preview", readme=True)

    sale = Sale.objects.get()
    assert page.locator("#receipt-number").text_content() == sale.receipt_number
    assert (sale.status, sale.total, sale.cashier, sale.till.name) == (
        Sale.Status.COMPLETED, Decimal("408.00"), cashier, "Till 1")
    assert sorted(sale.lines.values_list("product__sku", "quantity")) == [("MILK500", 1), ("SUG1KG", 3)]
    payment = sale.payments.get()
    assert (payment.method, payment.amount, payment.change_given) == ("cash", Decimal("408.00"), Decimal("592.00"))
    assert dict(StockLevel.objects.filter(shop=shop).values_list("product__sku", "on_hand")) == {
        "SUG1KG": 47, "MILK500": 19}
    job = PrintJob.objects.get(sale=sale)
    assert job.status == PrintJob.Status.DONE
    assert printer.jobs == [bytes(job.data)]
