"""Paybill payments from the customer's phone, through the simulator's C2B flow over HTTP: the
account number names the sale; exact, under and over payments; typos; other shortcodes; masked
and hashed MSISDN; an STK payment confirmed a second time as C2B (T7, T12, T13, T16, T29, T33)."""

import json
import logging
from decimal import Decimal

import pytest
from django.conf import settings
from django.urls import reverse

from inventory.models import StockMovement
from mpesa import services
from mpesa.conf import callback_url
from mpesa.daraja import get_client
from mpesa.models import CallbackLog, MpesaAccount, MpesaTransaction, StkRequest
from mpesa.simulator.models import Delivery
from mpesa.tests.factories import make_pending_sale, register_c2b_urls
from pos.models import Payment, Sale


@pytest.fixture
def paybill(daraja_sim, shop):
    """The demo shop is paid on the simulator's paybill, whose C2B URLs are registered."""
    MpesaAccount.objects.create(shop=shop, shortcode=settings.MPESA_SHORTCODE)
    register_c2b_urls()
    return daraja_sim


@pytest.fixture
def sale(paybill, cashier, till, product):
    sale = make_pending_sale(cashier=cashier, till=till, product=product)
    assert sale.receipt_number == "DEMO-0000001" and sale.total == Decimal("116.00")
    return sale


def pay(sim, amount, account, **kwargs):
    payment = sim.send_c2b(amount=amount, account=account, **kwargs)
    sim.deliver()
    return payment


@pytest.mark.parametrize("typed", ["DEMO-0000001", "demo 0000001", "DEMO0000001", " Demo-0000001 ", "demo_0000001"])
def test_an_exact_payment_naming_the_sale_pays_it_however_the_number_was_typed(paybill, sale, typed):
    payment = pay(paybill, 116, typed)

    sale.refresh_from_db()
    tx = MpesaTransaction.objects.get()
    assert sale.status == Sale.Status.COMPLETED
    assert (tx.receipt_number, tx.sale, tx.match_status) == (payment.receipt_number, sale, "matched")
    assert tx.source == MpesaTransaction.Source.C2B and tx.excess_amount == 0
    assert Payment.objects.get(sale=sale).reference == payment.receipt_number
    assert StockMovement.objects.filter(sale=sale).count() == 1


def test_a_smaller_payment_leaves_the_sale_partly_paid_with_the_balance_shown(paybill, sale, cashier):
    pay(paybill, 100, "DEMO-0000001")

    sale.refresh_from_db()
    assert (sale.status, sale.amount_paid, sale.balance_due) == ("pending", Decimal("100"), Decimal("16"))
    assert not StockMovement.objects.filter(sale=sale).exists()
    status = services.get_payment_status(sale_id=sale.pk, user_id=cashier.pk)
    assert (status["amount_paid"], status["balance_due"]) == ("100.00", "16.00")

    pay(paybill, 16, "DEMO-0000001")
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and Payment.objects.filter(sale=sale).count() == 2


def test_a_larger_payment_pays_the_sale_and_keeps_the_excess_for_review(paybill, sale):
    pay(paybill, 150, "DEMO-0000001")

    sale.refresh_from_db()
    tx = MpesaTransaction.objects.get()
    payment = Payment.objects.get(sale=sale)
    assert sale.status == Sale.Status.COMPLETED
    assert (payment.amount, payment.tendered, payment.change_given) == (116, 150, 0)
    assert tx.match_status == "matched" and tx.excess_amount == Decimal("34.00")
    assert "Overpaid by KES 34.00" in tx.review_reason
    assert tx in services.amount_mismatches()


def test_a_mistyped_account_number_leaves_the_payment_unmatched_and_visible(paybill, sale, shop):
    payment = pay(paybill, 116, "DEMO-0000011")

    sale.refresh_from_db()
    tx = MpesaTransaction.objects.get()
    assert sale.status == Sale.Status.PENDING and not Payment.objects.exists()
    assert (tx.match_status, tx.shop, tx.sale) == ("unmatched", shop, None)
    assert "'DEMO-0000011' is no sale's receipt number" in tx.review_reason
    assert [p["receipt_number"] for p in services.list_unclaimed_payments(shop_id=shop.pk)] == [payment.receipt_number]
    assert tx in services.unmatched_payments()


def test_a_payment_naming_a_sale_already_paid_is_not_applied_again(paybill, sale):
    pay(paybill, 116, "DEMO-0000001")
    second = pay(paybill, 116, "DEMO-0000001", phone="254711000002")

    tx = MpesaTransaction.objects.get(receipt_number=second.receipt_number)
    assert tx.match_status == "unmatched" and tx.payment is None
    assert "which is completed" in tx.review_reason
    assert Payment.objects.filter(sale=sale).count() == 1


def test_cents_in_a_paybill_amount_hold_the_payment_for_review(paybill, sale, client):
    # The simulator's menu takes whole shillings only; this is the confirmation a broken relay might send.
    body = json.dumps({"TransactionType": "Pay Bill", "TransID": "TKC2B0CENT", "TransTime": "20261128101010",
                       "TransAmount": "115.50", "BusinessShortCode": settings.MPESA_SHORTCODE,
                       "BillRefNumber": "DEMO-0000001", "MSISDN": "2547 ***** 149"})
    client.post(reverse("mpesa:c2b-confirmation"), data=body, content_type="application/json")

    tx = MpesaTransaction.objects.get()
    assert tx.match_status == "review" and "not a whole number" in tx.review_reason
    sale.refresh_from_db()
    assert sale.amount_paid == 0


@pytest.mark.parametrize("amount", ["116.00", "116", 116, 116.0])
def test_every_shape_of_trans_amount_is_the_same_decimal(paybill, sale, client, amount):
    body = json.dumps({"TransID": "TKC2B00AMT", "TransAmount": amount, "BusinessShortCode": settings.MPESA_SHORTCODE,
                       "BillRefNumber": "DEMO-0000001"})
    client.post(reverse("mpesa:c2b-confirmation"), data=body, content_type="application/json")

    assert MpesaTransaction.objects.get().amount == Decimal("116.00")
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED


def test_a_payment_to_a_shortcode_of_no_shop_is_kept_unmatched_and_logged(daraja_sim, settings, shop, cashier,
                                                                          till, product, caplog):
    settings.DARAJA_SIM_EXTRA_SHORTCODES = ["600100"]
    MpesaAccount.objects.create(shop=shop, shortcode=settings.MPESA_SHORTCODE)
    make_pending_sale(cashier=cashier, till=till, product=product)
    # Another paybill's URLs point at us too (a mix-up at registration), but no shop owns it.
    get_client().register_c2b_urls(shortcode="600100", confirmation_url=callback_url("c2b-confirmation"),
                                   validation_url=callback_url("c2b-validation"))

    with caplog.at_level(logging.WARNING, logger="mpesa.services"):
        payment = daraja_sim.send_c2b(amount=116, shortcode="600100", account="DEMO-0000001")
        daraja_sim.deliver()

    tx = MpesaTransaction.objects.get()
    assert (tx.receipt_number, tx.shop, tx.sale, tx.match_status) == (payment.receipt_number, None, None, "unmatched")
    assert tx.business_shortcode == "600100" and "no shop's paybill or till" in tx.review_reason
    assert Sale.objects.get(receipt_number="DEMO-0000001").status == Sale.Status.PENDING
    assert "which is no shop's M-Pesa account" in caplog.text


@pytest.mark.parametrize("version, msisdn_shape", [("v1", "hashed"), ("v2", "masked")])
def test_hashed_or_masked_msisdn_missing_names_and_an_odd_reference_never_crash(paybill, sale, shop, version,
                                                                               msisdn_shape):
    register_c2b_urls(version=version)
    pay(paybill, 116, "  demo   0000001 ", first_name="", middle_name="", last_name="")

    tx = MpesaTransaction.objects.get()
    log = CallbackLog.objects.get(kind=CallbackLog.Kind.C2B_CONFIRMATION)
    assert log.status == CallbackLog.Status.PROCESSED and json.loads(bytes(log.body))["TransID"] == tx.receipt_number
    if msisdn_shape == "hashed":
        assert len(tx.msisdn) == 64 and "254" not in tx.msisdn
    else:
        assert "*" in tx.msisdn
    assert (tx.first_name, tx.last_name, tx.match_status) == ("", "", "matched")
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED


def test_an_stk_payment_also_confirmed_as_c2b_is_one_ledger_row_and_one_payment(paybill, sale, cashier_client,
                                                                                 settings):
    settings.DARAJA_SIM_C2B_FOR_STK = True
    response = cashier_client.post(reverse("mpesa:start-stk", args=[sale.pk]), data={"phone": "0708374149"},
                                   content_type="application/json")
    assert response.status_code == 201
    paybill.deliver()
    # Daraja sent the C2B copy first: it waited while the prompt was open; the sweep settles it.
    services.sweep_mpesa()

    tx = MpesaTransaction.objects.get()
    stk = StkRequest.objects.get()
    assert tx.stk_request == stk and tx.receipt_number == stk.mpesa_receipt
    assert Payment.objects.get().reference == tx.receipt_number
    confirmation = CallbackLog.objects.get(kind=CallbackLog.Kind.C2B_CONFIRMATION)
    assert confirmation.status == CallbackLog.Status.PROCESSED and confirmation.trans_id == tx.receipt_number
    assert "already in the ledger" in confirmation.error
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and StockMovement.objects.filter(sale=sale).count() == 1


def test_a_success_known_only_from_stk_query_gets_its_receipt_from_the_c2b_confirmation(paybill, sale,
                                                                                        cashier_client, settings):
    settings.DARAJA_SIM_C2B_FOR_STK = True
    settings.MPESA_SWEEP_AFTER = 0
    # 254700009001: the STK callback never comes; only the C2B copy of the payment does.
    cashier_client.post(reverse("mpesa:start-stk", args=[sale.pk]), data={"phone": "254700009001"},
                        content_type="application/json")
    paybill.deliver()
    assert not Delivery.objects.filter(kind=Delivery.Kind.STK_CALLBACK).exists()
    services.sweep_mpesa()  # STK Query: paid, receipt number unknown
    services.sweep_mpesa()  # the waiting confirmation brings the number

    tx = MpesaTransaction.objects.get()
    stk = StkRequest.objects.get()
    assert tx.source == MpesaTransaction.Source.STK_QUERY and tx.receipt_number
    assert stk.mpesa_receipt == tx.receipt_number == Payment.objects.get().reference
    assert CallbackLog.objects.get(kind=CallbackLog.Kind.C2B_CONFIRMATION).status == CallbackLog.Status.PROCESSED
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED


def test_the_same_confirmation_delivered_twice_is_one_payment(paybill, sale):
    # 254700009002: the simulator confirms this phone's payments twice.
    pay(paybill, 116, "DEMO-0000001", phone="254700009002")

    assert CallbackLog.objects.filter(kind=CallbackLog.Kind.C2B_CONFIRMATION).count() == 2
    assert MpesaTransaction.objects.count() == 1 and Payment.objects.count() == 1
