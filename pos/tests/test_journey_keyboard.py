"""Journey 9 in a real browser: a whole sale, from logging in to the cash payment and the next
sale, with the keyboard only (real key events; the mouse is never used)."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from comolor.testing.browser import wait_for_till
from inventory.models import StockLevel
from pos.models import Sale

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_cashier_sells_with_the_keyboard_only(page, cashier, shop, product, screenshot):
    keys = page.keyboard
    page.goto("/")
    expect(page.locator("#id_username")).to_be_focused()
    keys.type(cashier.username)
    keys.press("Tab")
    keys.type("password")
    keys.press("Enter")
    wait_for_till(page)

    keys.type(product.barcode)  # a keyboard-wedge scan: the digits, then Enter
    keys.press("Enter")
    expect(page.locator("#till-count")).to_have_text("1 item")
    keys.type(f"2*{product.barcode}")
    keys.press("Enter")
    expect(page.locator("#till-count")).to_have_text("3 items")
    keys.press("+")  # one more of the selected line
    keys.press("+")
    keys.press("-")
    expect(page.locator("#till-count")).to_have_text("4 items")
    expect(page.locator("#till-total")).to_have_text("KES 464.00")
    expect(page.locator("#till-vat")).to_have_text("64.00")
    screenshot(page, "keyboard-cart")

    keys.press("F2")
    expect(page.locator("#till-tendered")).to_be_focused()
    keys.type("500")
    expect(page.locator("#till-change")).to_have_text("KES 36.00")
    keys.press("Enter")
    expect(page.locator("#till-total-label")).to_have_text("Change due")
    expect(page.locator("#till-total")).to_have_text("KES 36.00")
    expect(page.locator("#till-search")).to_be_focused()
    screenshot(page, "keyboard-paid")

    sale = Sale.objects.get()
    assert (sale.status, sale.total, sale.lines.get().quantity) == (Sale.Status.COMPLETED, Decimal("464.00"), 4)
    payment = sale.payments.get()
    assert (payment.method, payment.change_given) == ("cash", Decimal("36.00"))
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 46

    keys.press("Escape")  # next customer
    expect(page.locator("#till-status")).to_have_text("Till 1 · ready")
    expect(page.locator("#till-total")).to_have_text("KES 0.00")


def test_the_till_searches_by_name_and_explains_a_bad_scan_and_a_short_payment(page, cashier, product):
    keys = page.keyboard
    page.goto("/")
    expect(page.locator("#id_username")).to_be_focused()
    keys.type(cashier.username)
    keys.press("Tab")
    keys.type("password")
    keys.press("Enter")
    wait_for_till(page)

    keys.type("0000000000000")
    keys.press("Enter")
    expect(page.locator("#till-message")).to_contain_text("No product found")

    keys.type("sug")
    expect(page.locator("#till-results .result")).to_have_count(1)
    keys.press("Enter")
    expect(page.locator("#till-count")).to_have_text("1 item")

    keys.press("F2")
    keys.type("50")
    keys.press("Enter")
    expect(page.locator("#till-message")).to_contain_text("less than the total")
    assert not Sale.objects.exists()

    keys.press("Escape")  # back to the cart
    expect(page.locator("#till-cash-panel")).to_be_hidden()
    keys.press("Escape")
    expect(page.locator("#till-message")).to_contain_text("Press Esc again to clear the whole cart")
    keys.press("Escape")
    expect(page.locator("#till-count")).to_have_text("0 items")
    assert not Sale.objects.exists()
