"""Journeys 2 to 5 in a real browser: M-Pesa at the till against the Daraja simulator over real
HTTP (live server), each ending with checks on the page and in the database.

The simulator holds its callbacks until the test calls `daraja_sim.deliver()`, so each step of
the page ("waiting", then the answer) is seen in order, without sleeping."""

import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from comolor.testing.browser import scan
from inventory.models import StockLevel, StockMovement
from mpesa.models import MpesaTransaction, StkRequest
from pos.models import Sale

pytestmark = pytest.mark.django_db(transaction=True)

PAYING_PHONE = "0708374149"
CALLBACK_SHOWN_WITHIN_MS = 2000  # the till polls every second: the answer shows by the next poll or the one after


def send_prompt(page, phone):
    """F4, the customer's phone, Enter; returns once the page says it waits for the customer."""
    page.keyboard.press("F4")
    expect(page.locator("#till-phone")).to_be_focused()
    page.keyboard.type(phone)
    page.keyboard.press("Enter")
    expect_mpesa_state(page, "Waiting for the customer's PIN")


def expect_mpesa_state(page, title, **timeout):
    """The big state line of the M-Pesa panel, as the cashier sees it (visible, not just in the page)."""
    expect(page.locator("#mpesa-title:visible")).to_have_text(title, **timeout)


def expect_sale_paid(page, **timeout):
    """The till's total panel turns to paid (the M-Pesa panel then gives way to the receipt)."""
    sale = Sale.objects.get()
    expect(page.locator("#till-status:visible")).to_have_text(f"Paid · {sale.receipt_number}", **timeout)


def answer_arrives(daraja_sim):  # noqa: F811
    """The customer answers: the simulator posts its callback to the shop now."""
    assert daraja_sim.deliver() >= 1


def test_an_mpesa_payment_shows_waiting_then_paid_with_its_code(
        till_page, daraja_sim, shop, product, screenshot):  # noqa: F811
    page = till_page
    scan(page, product.barcode)
    expect(page.locator("#till-total")).to_have_text("KES 116.00")

    send_prompt(page, PAYING_PHONE)
    expect(page.locator("#mpesa-amount")).to_contain_text("KES 116")
    expect(page.locator("#till-total-label")).to_have_text("Balance due")
    expect(page.locator("#mpesa-clock")).to_have_text(re.compile(r"^\d+ s$"))  # the prompt's countdown
    screenshot(page, "mpesa-waiting", readme=True)
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    answer_arrives(daraja_sim)
    expect_sale_paid(page, timeout=CALLBACK_SHOWN_WITHIN_MS)
    assert page.evaluate("window.sameDocument") is True
    tx = MpesaTransaction.objects.get()
    expect(page.locator("#till-total-panel")).to_contain_text(tx.receipt_number)  # the M-Pesa code, big
    expect(page.locator("#receipt-status")).to_have_attribute("data-status", "done")  # printed
    page.wait_for_function("() => document.getElementById('receipt-preview').naturalWidth > 0")
    screenshot(page, "mpesa-paid", readme=True)

    sale = Sale.objects.get()
    payment = sale.payments.get()
    assert sale.status == Sale.Status.COMPLETED
    assert (payment.method, payment.amount, payment.reference) == ("mpesa", Decimal("116.00"), tx.receipt_number)
    assert (tx.sale, tx.match_status, tx.msisdn) == (sale, MpesaTransaction.Match.MATCHED, "254708374149")
    assert StkRequest.objects.get().status == StkRequest.Status.PAID
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 49


def test_a_prompt_cancelled_by_the_customer_is_sent_again_to_another_phone_and_paid(
        till_page, daraja_sim, shop, product, screenshot):  # noqa: F811
    page = till_page
    scan(page, product.barcode)
    expect(page.locator("#till-total")).to_have_text("KES 116.00")
    send_prompt(page, "254700001032")
    answer_arrives(daraja_sim)

    expect_mpesa_state(page, "Not paid", timeout=CALLBACK_SHOWN_WITHIN_MS)
    expect(page.locator("#mpesa-message")).to_contain_text("cancelled the M-Pesa prompt")
    expect(page.locator("#till-total-label")).to_have_text("Balance due")
    screenshot(page, "mpesa-cancelled")
    sale = Sale.objects.get()
    assert sale.status == Sale.Status.PENDING and not sale.payments.exists()

    page.get_by_role("button", name="Change phone / split").click()
    page.locator("#mpesa-phone").fill(PAYING_PHONE)
    page.get_by_role("button", name="Send prompt again").click()
    expect_mpesa_state(page, "Waiting for the customer's PIN")
    answer_arrives(daraja_sim)
    expect_sale_paid(page, timeout=CALLBACK_SHOWN_WITHIN_MS)
    screenshot(page, "mpesa-paid-after-cancel")

    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED
    assert list(StkRequest.objects.order_by("pk").values_list("phone", "status", "result_code")) == [
        ("254700001032", "failed", "1032"), ("254708374149", "paid", "0")]
    assert sale.payments.get().reference == MpesaTransaction.objects.get().receipt_number
    assert StockMovement.objects.filter(sale=sale).count() == 1


def test_insufficient_balance_then_the_sale_is_split_between_mpesa_and_cash(
        till_page, daraja_sim, shop, product, screenshot):  # noqa: F811
    page = till_page
    page.keyboard.type(f"2*{product.barcode}")
    page.keyboard.press("Enter")
    expect(page.locator("#till-total")).to_have_text("KES 232.00")
    send_prompt(page, "254700000001")
    answer_arrives(daraja_sim)
    expect_mpesa_state(page, "Not paid", timeout=CALLBACK_SHOWN_WITHIN_MS)
    expect(page.locator("#mpesa-message")).to_contain_text("balance is too low")

    # The customer pays what they can by M-Pesa from another phone, the rest in cash.
    page.get_by_role("button", name="Change phone / split").click()
    page.locator("#mpesa-phone").fill(PAYING_PHONE)
    page.locator("#mpesa-part").fill("100")
    page.get_by_role("button", name="Send prompt again").click()
    expect_mpesa_state(page, "Waiting for the customer's PIN")
    expect(page.locator("#mpesa-amount")).to_contain_text("KES 100")
    answer_arrives(daraja_sim)
    expect_mpesa_state(page, "Part paid by M-Pesa", timeout=CALLBACK_SHOWN_WITHIN_MS)
    expect(page.locator("#till-total")).to_have_text("KES 132.00")
    screenshot(page, "mpesa-part-paid")

    page.get_by_role("button", name="Take cash").click()
    expect(page.locator("#till-tendered")).to_be_focused()
    page.keyboard.type("200")
    expect(page.locator("#till-change")).to_have_text("KES 68.00")
    page.keyboard.press("Enter")
    expect(page.locator("#till-total-label")).to_have_text("Change due")
    expect(page.locator("#till-total")).to_have_text("KES 68.00")
    screenshot(page, "mpesa-split-paid")

    sale = Sale.objects.get()
    assert sale.status == Sale.Status.COMPLETED and sale.total == Decimal("232.00")
    assert sorted(sale.payments.values_list("method", "amount", "change_given")) == [
        ("cash", Decimal("132.00"), Decimal("68.00")), ("mpesa", Decimal("100.00"), Decimal("0.00"))]
    assert list(StkRequest.objects.order_by("pk").values_list("amount", "status", "result_code")) == [
        (232, "failed", "1"), (100, "paid", "0")]
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 48


def test_a_lost_callback_keeps_the_till_waiting_until_the_sweep_finds_the_payment(
        till_page, daraja_sim, settings, product, screenshot):  # noqa: F811
    page = till_page
    scan(page, product.barcode)
    expect(page.locator("#till-total")).to_have_text("KES 116.00")
    send_prompt(page, "254700009001")
    daraja_sim.deliver()  # the customer pays; the simulator never sends the callback

    # Two more polls later the page still waits: nothing came.
    for _ in range(2):
        with page.expect_response(lambda response: "/cashier/check-mpesa-payment/" in response.url) as poll:
            pass
        assert poll.value.json()["status"] == "waiting"
    expect_mpesa_state(page, "Waiting for the customer's PIN")
    assert Sale.objects.get().status == Sale.Status.PENDING

    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    settings.MPESA_SWEEP_AFTER = 0  # the prompt counts as stale at once
    report = StringIO()
    call_command("mpesa_sweep", stdout=report)
    assert "prompts paid" in report.getvalue()
    expect_sale_paid(page, timeout=CALLBACK_SHOWN_WITHIN_MS)
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, "mpesa-paid-by-sweep")

    sale = Sale.objects.get()
    assert sale.status == Sale.Status.COMPLETED
    tx = MpesaTransaction.objects.get()
    assert (tx.source, tx.sale, tx.match_status) == (
        MpesaTransaction.Source.STK_QUERY, sale, MpesaTransaction.Match.MATCHED)
    assert StkRequest.objects.get().status == StkRequest.Status.PAID
