"""Journey 7 in a real browser: the till's network printer does not answer (nothing listens at its
address). The cashier sees it in words, prints the receipt from the browser instead, and the sale
stays completed."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from comolor.testing.browser import scan
from pos.models import Sale
from receipts.models import PrintJob
from receipts.tests.factories import PrinterFactory
from receipts.tests.fake_printer import DEAD_PORT

pytestmark = pytest.mark.django_db(transaction=True)


def test_with_the_printer_unreachable_the_cashier_prints_the_receipt_in_the_browser(
        till_page, till, product, screenshot):
    PrinterFactory(till=till, port=DEAD_PORT)
    page = till_page
    scan(page, product.barcode)
    expect(page.locator("#till-total")).to_have_text("KES 116.00")
    page.keyboard.press("F2")
    page.keyboard.type("200")
    page.keyboard.press("Enter")
    expect(page.locator("#till-total-label")).to_have_text("Change due")

    status = page.locator("#receipt-status")
    expect(status).to_contain_text(f"Till 1 printer is not answering at 127.0.0.1:{DEAD_PORT}")
    expect(status).to_have_attribute("data-status", "failed")
    expect(page.get_by_role("button", name="Retry print")).to_be_visible()
    screenshot(page, "printer-down")

    sale = Sale.objects.get()
    with page.expect_popup() as popup:
        page.get_by_role("button", name="Print in browser").click()
    receipt = popup.value
    receipt.wait_for_load_state()
    assert receipt.url.endswith(f"/receipts/{sale.pk}/?print=1")
    expect(receipt.get_by_label(f"Receipt {sale.receipt_number}")).to_contain_text("TOTAL KES")
    expect(receipt.get_by_label(f"Receipt {sale.receipt_number}")).to_contain_text("116.00")
    screenshot(receipt, "printer-down-browser-receipt")

    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED
    payment = sale.payments.get()
    assert (payment.method, payment.amount, payment.change_given) == ("cash", Decimal("116.00"), Decimal("84.00"))
    job = PrintJob.objects.get(sale=sale)
    assert job.status == PrintJob.Status.FAILED and job.attempts == 1
    assert f"127.0.0.1:{DEAD_PORT}" in job.last_error
