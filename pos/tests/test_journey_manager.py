"""Journey 8 in a real browser: the manager opens the reconciliation queue, assigns a payment a
customer made to the till (through the Daraja simulator, over HTTP) to the sale it was for, closes
the till's shift with a blind count and reads the Z report."""

import re
from decimal import Decimal

import pytest
from django.conf import settings
from playwright.sync_api import expect

from mpesa.models import MpesaAccount, MpesaTransaction
from mpesa.tests.factories import make_pending_sale, register_c2b_urls
from pos.models import ManagerAction, Sale, Shift, Staff
from pos.services import ItemRequest, add_staff, sell_for_cash
from pos.tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)
LAPTOP = {"width": 1366, "height": 768}


def test_a_manager_assigns_a_till_payment_closes_the_shift_blind_and_reads_the_z_report(
        page, daraja_sim, shop, till, cashier, product, screenshot):  # noqa: F811
    manager = UserFactory(username="akinyi", first_name="Akinyi")
    add_staff(manager, shop, Staff.Role.MANAGER, default_till=till)
    sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, product_id=product.pk)],
                  tendered=Decimal("200"))  # KES 116 in the drawer, KES 84 change
    sale = make_pending_sale(cashier=cashier, till=till, product=product, quantity=2)  # KES 232, left waiting
    MpesaAccount.objects.create(shop=shop, shortcode=settings.MPESA_SHORTCODE)
    register_c2b_urls()
    # The customer paid from the M-Pesa menu to the shop's number instead of answering a prompt.
    daraja_sim.send_c2b(amount=232, phone="254708374149", first_name="JANE")
    daraja_sim.deliver()
    tx = MpesaTransaction.objects.get()
    assert (tx.match_status, tx.sale_id, tx.shop_id) == ("unmatched", None, shop.pk)

    page.set_viewport_size(LAPTOP)
    page.goto("/accounts/login/")
    page.fill("#id_username", "akinyi")
    page.fill("#id_password", "password")
    page.click("button[type=submit]")
    queues = page.locator("#reconciliation-queues")
    unmatched = queues.locator("li", has_text="Unmatched M-Pesa payments")
    expect(unmatched.locator(".recon-count")).to_have_text("1")
    expect(unmatched).to_have_class(re.compile("recon-open"))
    screenshot(page, "back-office-queues", readme=True)

    unmatched.get_by_role("link").click()
    expect(page.locator("h1")).to_have_text("Unmatched M-Pesa payments")
    row = page.locator("#result_list tbody tr", has_text=tx.receipt_number)
    expect(row).to_contain_text("232.00")
    screenshot(page, "reconciliation-queue", readme=True)

    row.get_by_role("link", name="Assign to a sale").click()
    expect(page.locator(".recon-amount")).to_have_text("KES 232.00")
    match = page.locator("tr.recon-match")
    expect(match).to_contain_text(sale.receipt_number)
    expect(match).to_contain_text("amount matches")
    match.locator("input[type=radio]").check()
    page.fill("#id_reason", "Customer paid to the till; the cashier did not see the SMS")
    screenshot(page, "assign-payment")
    page.get_by_role("button", name="Assign to the chosen sale").click()

    expect(page.locator(".messagelist")).to_contain_text(f"Paid: M-Pesa payment {tx.receipt_number} of KES 232.00")
    expect(page.locator("#result_list")).to_have_count(0)  # the queue is empty now
    sale.refresh_from_db()
    tx.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and sale.payments.get().reference == tx.receipt_number
    assert (tx.match_status, tx.claimed_by) == ("matched", manager)
    action = ManagerAction.objects.get()
    assert (action.user, action.action, action.reason) == (
        manager, "assign_payment", "Customer paid to the till; the cashier did not see the SMS")

    # The till's shift, closed on the cashier's page with a blind count: KES 100 found for KES 116 expected.
    page.goto("/cashier/shift/close")
    expect(page.locator("#counted-cash")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("116")  # blind: the expected cash is not shown
    page.fill("#counted-cash", "100")
    page.get_by_role("button", name=re.compile("Count done")).click()
    page.get_by_role("button", name=re.compile("Close shift")).click()

    expect(page).to_have_url(re.compile(r"/cashier/shift/\d+/report$"))
    report = page.locator(".shift-report-body")
    expect(report).to_have_attribute("data-kind", "Z")
    expect(report.locator(".shift-summary")).to_contain_text("Cash is KES 16.00 short.")
    expect(report.locator(".shift-table")).to_contain_text("0.00 balanced")  # M-Pesa: 232 sold, 232 received
    screenshot(page, "z-report-after-reconciliation")
    shift = Shift.objects.get()
    assert (shift.status, shift.counted_cash, shift.expected_cash, shift.closed_by) == (
        "closed", Decimal("100.00"), Decimal("116.00"), manager)
