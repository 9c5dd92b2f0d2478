"""Journey 6 in a real browser: the customer paid the shop's Buy Goods till from their phone (the
simulator's C2B over real HTTP) and shows the SMS. The cashier types the code, or picks the payment
from the till's list; only Safaricom's confirmation pays the sale. A fake code is refused after the
wait, a code that already paid a sale is refused with that sale. Each ends with checks on the page
and in the database."""

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from comolor.testing.browser import scan
from inventory.models import StockLevel, StockMovement
from mpesa.models import MpesaAccount, MpesaTransaction, PaymentClaim
from mpesa.tests.factories import register_c2b_urls
from pos.models import Payment, Sale

pytestmark = pytest.mark.django_db(transaction=True)

TILL, STORE = "5200200", "600200"
CALLBACK_SHOWN_WITHIN_MS = 2000  # the till polls a waiting claim every second


@pytest.fixture
def buy_goods(daraja_sim, settings, shop):
    """The demo shop is paid on Buy Goods till 5200200 (store 600200), its C2B URLs registered."""
    settings.DARAJA_SIM_EXTRA_SHORTCODES = [f"{STORE}:{TILL}"]
    MpesaAccount.objects.create(shop=shop, kind=MpesaAccount.Kind.TILL, shortcode=STORE, till_number=TILL)
    register_c2b_urls()
    return daraja_sim


def open_claim(page):
    """F6: the panel asks for the code, with the list of this shop's unclaimed payments."""
    page.keyboard.press("F6")
    expect(page.locator("#claim-title:visible")).to_have_text("Customer paid to till")
    expect(page.locator("#claim-code")).to_be_focused()


def expect_sale_paid(page, sale, **timeout):
    expect(page.locator("#till-status:visible")).to_have_text(f"Paid · {sale.receipt_number}", **timeout)


def test_the_cashier_types_the_code_from_the_sms_and_the_till_waits_for_safaricom(
        buy_goods, till_page, shop, product, cashier, screenshot):
    page = till_page
    payment = buy_goods.send_c2b(amount=116, shortcode=TILL, first_name="AMINA")  # not confirmed yet
    scan(page, product.barcode)
    expect(page.locator("#till-total")).to_have_text("KES 116.00")
    expect(page.get_by_role("button", name="Customer paid to till F6")).to_be_visible()
    open_claim(page)
    expect(page.locator("#claim-amount")).to_have_text(f"KES 116 due to till {TILL}")
    expect(page.locator("#claim-list")).to_contain_text("No unclaimed payment")  # Safaricom has not told us yet

    # Typed as people read it off an SMS: lower case, a space in the middle.
    code = payment.receipt_number
    page.keyboard.type(f"{code[:5].lower()} {code[5:].lower()}")
    expect(page.locator("#claim-code")).to_have_value(code)
    page.keyboard.press("Enter")
    expect(page.locator("#claim-title:visible")).to_have_text("Waiting for Safaricom")
    expect(page.locator("#claim-message")).to_contain_text("do not hand over the goods")
    expect(page.locator("#claim-clock")).to_have_text(re.compile(r"^\d+ s$"))  # the wait's countdown
    sale = Sale.objects.get()
    expect(page.locator("#till-status")).to_have_text(f"Payment due · {sale.receipt_number}")
    screenshot(page, "claim-waiting", readme=True)
    assert sale.status == Sale.Status.PENDING and not sale.payments.exists()
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    assert buy_goods.deliver() >= 1  # Safaricom's confirmation reaches the shop
    expect_sale_paid(page, sale, timeout=CALLBACK_SHOWN_WITHIN_MS)
    assert page.evaluate("window.sameDocument") is True
    expect(page.locator("#till-total-label")).to_have_text("Paid by M-Pesa")
    expect(page.locator("#till-total")).to_have_text(code)
    expect(page.locator("#receipt-status")).to_have_attribute("data-status", "done")
    page.wait_for_function("() => document.getElementById('receipt-preview').naturalWidth > 0")
    screenshot(page, "claim-paid", readme=True)

    sale.refresh_from_db()
    tx = MpesaTransaction.objects.get()
    assert sale.status == Sale.Status.COMPLETED
    assert (tx.receipt_number, tx.sale, tx.match_status, tx.claimed_by, tx.business_shortcode) == (
        code, sale, MpesaTransaction.Match.MATCHED, cashier, TILL)
    assert list(sale.payments.values_list("method", "amount", "reference")) == [("mpesa", Decimal("116.00"), code)]
    assert PaymentClaim.objects.get().status == PaymentClaim.Status.PAID
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 49


def test_a_fake_code_is_refused_after_the_wait_and_the_sale_stays_unpaid(
        buy_goods, till_page, settings, product, screenshot):
    settings.MPESA_CLAIM_WAIT_SECONDS = 2
    page = till_page
    scan(page, product.barcode)
    expect(page.locator("#till-total")).to_have_text("KES 116.00")
    open_claim(page)

    page.keyboard.type("12345")  # not even the shape of a code: refused on the spot, nothing is sent
    page.keyboard.press("Enter")
    expect(page.locator("#claim-hint")).to_have_text(
        "That is not an M-Pesa code: 10 letters and digits, starting with a letter, e.g. QK12AB34CD.")
    assert not Sale.objects.exists() and not PaymentClaim.objects.exists()

    page.locator("#claim-code").fill("QK12AB34CD")  # a fake SMS: Safaricom never confirms it
    page.keyboard.press("Enter")
    expect(page.locator("#claim-title:visible")).to_have_text("Waiting for Safaricom")
    expect(page.locator("#claim-title:visible")).to_have_text("Not confirmed", timeout=5000)
    expect(page.locator("#claim-message")).to_contain_text("is NOT paid. Do not hand over the goods.")
    expect(page.get_by_role("button", name="Take cash F2")).to_be_visible()
    expect(page.locator("#till-total-label")).to_have_text("Balance due")
    screenshot(page, "claim-fake-code")

    sale = Sale.objects.get()
    assert sale.status == Sale.Status.PENDING and not Payment.objects.exists()
    assert not StockMovement.objects.filter(sale=sale).exists() and not MpesaTransaction.objects.exists()
    claim = PaymentClaim.objects.get()
    assert (claim.code, claim.status, claim.sale) == ("QK12AB34CD", PaymentClaim.Status.EXPIRED, sale)


def test_a_payment_picked_from_the_list_pays_once_and_its_code_is_refused_for_the_next_sale(
        buy_goods, till_page, product, screenshot):
    page = till_page
    payment = buy_goods.send_c2b(amount=116, shortcode=TILL, first_name="OTIENO")
    assert buy_goods.deliver() >= 1
    code = payment.receipt_number
    scan(page, product.barcode)
    expect(page.locator("#till-total")).to_have_text("KES 116.00")
    open_claim(page)
    pick = page.locator(".claim-pick", has_text=code)
    expect(pick).to_contain_text("KES 116")
    expect(pick).to_contain_text("Otieno · 2547 ***** 149")
    expect(pick).to_have_class("claim-pick is-match")  # the amount due: marked
    screenshot(page, "claim-list", readme=True)
    pick.click()
    expect(page.locator("#till-total-label")).to_have_text("Paid by M-Pesa")
    expect(page.locator("#till-total")).to_have_text(code)
    first = Sale.objects.get()
    expect_sale_paid(page, first)

    page.keyboard.press("Escape")  # the next customer brings the same SMS
    scan(page, product.barcode)
    expect(page.locator("#till-total")).to_have_text("KES 116.00")
    open_claim(page)
    expect(page.locator("#claim-list")).to_contain_text("No unclaimed payment")  # it paid a sale: gone
    page.keyboard.type(code)
    page.keyboard.press("Enter")
    expect(page.locator("#claim-title:visible")).to_have_text("Code refused")
    expect(page.locator("#claim-message")).to_contain_text(
        f"M-Pesa code {code} was already used for sale {first.receipt_number}")
    expect(page.locator("#claim-message")).to_contain_text("do not hand over the goods")
    expect(page.locator("#claim-code")).to_be_focused()
    screenshot(page, "claim-reused-code")

    second = Sale.objects.exclude(pk=first.pk).get()
    first.refresh_from_db()
    assert first.status == Sale.Status.COMPLETED and second.status == Sale.Status.PENDING
    assert list(Payment.objects.values_list("sale", "reference")) == [(first.pk, code)]
    assert MpesaTransaction.objects.get().sale == first
    assert list(PaymentClaim.objects.order_by("pk").values_list("sale", "status")) == [
        (first.pk, PaymentClaim.Status.PAID), (second.pk, PaymentClaim.Status.REFUSED)]
