"""A day on the till in a real browser, by keyboard and scanner: the cashier opens a shift with a
float, sells, pays the bread man from the drawer, closes with a blind count and prints the Z report
on the till's network printer (a TCP listener)."""

import pytest
from playwright.sync_api import expect

from comolor.testing.browser import scan, wait_for_till
from pos.models import Shift
from pos.services import close_shift
from receipts.tests.factories import PrinterFactory
from receipts.tests.fake_printer import PRINTER_PORT, FakePrinter

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def morning(till, cashier):
    """Yesterday's shift on Till 1 is closed: the till waits for a new one."""
    close_shift(shift_id=till.shifts.get().pk, counted_cash="0", user=cashier)
    return till


@pytest.fixture
def printer(till):
    with FakePrinter(PRINTER_PORT) as listener:
        PrinterFactory(till=till, port=PRINTER_PORT)
        yield listener


def test_a_cashiers_day_from_float_to_z_report(page, morning, cashier, product, printer, screenshot):
    page.goto("/")
    page.get_by_label("Username").fill(cashier.username)
    page.keyboard.press("Tab")
    page.keyboard.type("password")
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name="Open a shift on Till 1")).to_be_visible()
    expect(page.get_by_label("Opening float")).to_be_focused()
    screenshot(page, "shift-open")
    page.keyboard.type("2000")
    page.keyboard.press("Enter")
    wait_for_till(page)

    scan(page, product.barcode)
    expect(page.locator("#till-total")).to_have_text("KES 116.00")
    page.keyboard.press("F2")
    page.keyboard.type("500")
    page.keyboard.press("Enter")
    expect(page.locator("#till-total-panel")).to_have_attribute("data-state", "done")

    page.get_by_role("link", name="Shift", exact=True).click()
    expect(page.get_by_role("heading", name="X report (so far; the shift is still open)")).to_be_visible()
    expect(page.get_by_text("Blind count: the cash the drawer should hold is shown once")).to_be_visible()
    expect(page.get_by_label("Amount")).to_be_focused()
    page.keyboard.type("300")
    page.keyboard.press("Tab")
    page.keyboard.type("paid the bread delivery")
    page.keyboard.press("Enter")
    expect(page.get_by_text("Pay-out of KES 300.00 recorded: paid the bread delivery.")).to_be_visible()
    screenshot(page, "shift-x-report")

    page.get_by_role("link", name="Close shift…").click()
    expect(page.get_by_label("Cash counted")).to_be_focused()
    expect(page.get_by_text("1,816")).to_have_count(0)  # blind: 2,000 + 500 − 384 − 300 is not shown
    page.keyboard.type("1800")
    page.keyboard.press("Enter")
    expect(page.get_by_text("You counted KES 1,800.00.")).to_be_visible()
    screenshot(page, "shift-close-confirm")
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name="Z report · shift #")).to_be_visible()
    expect(page.get_by_text("Cash is KES 16.00 short.")).to_be_visible()
    expect(page.locator(".shift-table")).to_contain_text("1,816.00")
    expect(page.locator(".shift-table")).to_contain_text("-16.00 short")
    screenshot(page, "shift-z-report")

    page.get_by_role("button", name="Print on the receipt printer").click()
    expect(page.get_by_text("The report was sent to the receipt printer.")).to_be_visible()
    assert b"Z REPORT" in printer.jobs[-1] and b"SHORT -16.00" in printer.jobs[-1]

    page.keyboard.press("Escape")
    expect(page.get_by_role("heading", name="Open a shift on Till 1")).to_be_visible()
    shift = Shift.objects.get(till=morning, status=Shift.Status.CLOSED, opening_float=2000)
    assert (shift.expected_cash, shift.counted_cash) == (1816, 1800)
