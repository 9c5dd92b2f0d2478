"""POST /mpesa/stk/callback: Daraja-shaped STK results, stored raw first, applied once."""

import json
from decimal import Decimal

import pytest
from django.urls import reverse

from inventory.models import StockLevel, StockMovement
from mpesa import services
from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.tests.factories import StkRequestFactory, make_pending_sale, stk_failure, stk_success
from pos.models import Payment, Sale
from pos.services import cancel_sale, take_cash

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}
URL = "/mpesa/stk/callback"
pytestmark = pytest.mark.django_db


def post(client, body, url=URL, **extra):
    return client.post(url, data=body, content_type="application/json", **extra)


def on_hand(sale):
    line = sale.lines.get()
    return StockLevel.objects.get(shop=sale.shop, product_id=line.product_id).on_hand


def test_success_callback_completes_the_sale_and_moves_stock_once(client, sale, stk):
    response = post(client, stk_success(stk.checkout_request_id, amount=116.00, receipt="NLJ7RT61SV"))

    assert response.status_code == 200 and response.json() == ACCEPTED
    sale.refresh_from_db()
    stk.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and sale.amount_paid == Decimal("116.00")
    assert stk.status == StkRequest.Status.PAID and stk.mpesa_receipt == "NLJ7RT61SV"
    payment = Payment.objects.get(sale=sale)
    assert (payment.method, payment.amount, payment.reference) == ("mpesa", Decimal("116.00"), "NLJ7RT61SV")
    tx = MpesaTransaction.objects.get()
    assert tx.payment == payment and tx.match_status == MpesaTransaction.Match.MATCHED
    assert StockMovement.objects.filter(sale=sale).count() == 1 and on_hand(sale) == 49
    log = CallbackLog.objects.get()
    assert log.status == CallbackLog.Status.PROCESSED and log.checkout_request_id == stk.checkout_request_id


def test_raw_body_headers_and_source_are_stored_byte_for_byte(client, stk):
    body = stk_success(stk.checkout_request_id, amount=116) + b"  "
    post(client, body, HTTP_USER_AGENT="Apache-HttpClient/4.5", HTTP_COOKIE="sessionid=x")

    log = CallbackLog.objects.get()
    assert bytes(log.body) == body and log.kind == CallbackLog.Kind.STK
    assert log.source_ip == "127.0.0.1" and log.path == URL
    assert log.headers["User-Agent"] == "Apache-HttpClient/4.5" and "Cookie" not in log.headers


def test_duplicate_callback_is_ignored(client, sale, stk):
    body = stk_success(stk.checkout_request_id, amount=116)
    answers = [post(client, body).json() for _ in range(3)]

    assert answers == [ACCEPTED] * 3
    assert Payment.objects.filter(sale=sale).count() == 1 and MpesaTransaction.objects.count() == 1
    assert StockMovement.objects.filter(sale=sale).count() == 1 and on_hand(sale) == 49
    assert CallbackLog.objects.filter(status=CallbackLog.Status.PROCESSED).count() == 3


@pytest.mark.parametrize("code, words", [
    (1, "balance is too low"),
    (1032, "cancelled the M-Pesa prompt"),
    (1037, "could not be reached"),
    (2001, "wrong M-Pesa PIN"),
    (1019, "expired"),
    (17, "Wait 2 minutes or take another method"),
    (1001, "busy with another M-Pesa transaction"),
])
def test_failure_callback_fails_the_request_and_tells_the_cashier_why(client, cashier_client, sale, stk, code, words):
    post(client, stk_failure(stk.checkout_request_id, result_code=code, result_desc="whatever Daraja says"))

    stk.refresh_from_db()
    sale.refresh_from_db()
    assert stk.status == StkRequest.Status.FAILED and stk.result_code == str(code)
    assert sale.status == Sale.Status.PENDING and not Payment.objects.exists()
    status = cashier_client.get(reverse("mpesa:check-payment", args=[sale.pk])).json()
    assert status["status"] == "failed" and status["result_code"] == str(code)
    assert words in status["message"] and status["payment_received"] is False


def test_unknown_result_code_is_a_failure_with_daraja_words(client, cashier_client, sale, stk):
    post(client, stk_failure(stk.checkout_request_id, result_code="SFC_IC0003", result_desc="The operator does not exist"))

    status = cashier_client.get(reverse("mpesa:check-payment", args=[sale.pk])).json()
    assert status["status"] == "failed" and "SFC_IC0003" in status["message"]
    assert "The operator does not exist" in status["message"]


def test_wrong_amount_goes_to_review_and_never_completes_the_sale(client, cashier_client, sale, stk):
    post(client, stk_success(stk.checkout_request_id, amount=1.00))

    sale.refresh_from_db()
    tx = MpesaTransaction.objects.get()
    assert sale.status == Sale.Status.PENDING and sale.amount_paid == 0
    assert tx.match_status == MpesaTransaction.Match.REVIEW and "KES 116 was requested" in tx.review_reason
    assert tx.payment is None and not StockMovement.objects.filter(sale=sale).exists() and on_hand(sale) == 50
    status = cashier_client.get(reverse("mpesa:check-payment", args=[sale.pk])).json()
    assert status["status"] == "review" and status["payment_received"] is True
    assert "needs a manager" in status["message"]


@pytest.mark.parametrize("amount", [0, -116, 99999999])
def test_zero_negative_or_huge_amount_goes_to_review(client, sale, stk, amount):
    post(client, stk_success(stk.checkout_request_id, amount=amount))

    assert MpesaTransaction.objects.get().match_status == MpesaTransaction.Match.REVIEW
    sale.refresh_from_db()
    assert sale.status == Sale.Status.PENDING and not Payment.objects.exists()


def test_callback_before_the_push_response_is_matched_by_its_url_token(client, sale):
    stk = StkRequestFactory(sale=sale, checkout_request_id=None, merchant_request_id="",
                            status=StkRequest.Status.CREATED, callback_token="early-bird-token")
    url = reverse("mpesa:stk-callback", kwargs={"token": "early-bird-token"})

    assert post(client, stk_success("ws_CO_EARLY", amount=116), url=url).json() == ACCEPTED

    stk.refresh_from_db()
    sale.refresh_from_db()
    assert stk.checkout_request_id == "ws_CO_EARLY" and stk.status == StkRequest.Status.PAID
    assert sale.status == Sale.Status.COMPLETED


def test_token_and_checkout_id_must_agree(client, sale, stk):
    url = reverse("mpesa:stk-callback", kwargs={"token": stk.callback_token})
    post(client, stk_success("ws_CO_SOMEONE_ELSES", amount=116), url=url)

    assert CallbackLog.objects.get().status == CallbackLog.Status.REJECTED
    sale.refresh_from_db()
    assert sale.status == Sale.Status.PENDING and not MpesaTransaction.objects.exists()


def test_unknown_token_is_rejected_not_processed(client, stk):
    post(client, stk_success(stk.checkout_request_id, amount=116), url=URL + "/guessed-token")

    assert CallbackLog.objects.get().status == CallbackLog.Status.REJECTED
    assert not MpesaTransaction.objects.exists()


def test_unknown_checkout_id_is_kept_as_orphan_and_matched_when_its_request_appears(client, sale):
    post(client, stk_success("ws_CO_NOT_YET", amount=116))
    log = CallbackLog.objects.get()
    assert log.status == CallbackLog.Status.ORPHAN and not MpesaTransaction.objects.exists()

    StkRequestFactory(sale=sale, checkout_request_id="ws_CO_NOT_YET")
    assert services.rerun_callbacks() == {"callbacks paid": 1}

    sale.refresh_from_db()
    log.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and log.status == CallbackLog.Status.PROCESSED


def test_orphan_payment_past_the_give_up_time_enters_the_ledger_unmatched(client, settings):
    settings.MPESA_STK_GIVE_UP_AFTER = 0
    post(client, stk_success("ws_CO_NEVER", amount=116, receipt="NLJORPHAN1"))

    tx = MpesaTransaction.objects.get()
    assert tx.receipt_number == "NLJORPHAN1" and tx.match_status == MpesaTransaction.Match.UNMATCHED
    assert "ws_CO_NEVER" in tx.review_reason
    assert CallbackLog.objects.get().status == CallbackLog.Status.PROCESSED


def test_payment_for_a_cancelled_sale_is_an_overpayment_for_review(client, sale, stk):
    cancel_sale(sale_id=sale.pk, reason="customer left")
    post(client, stk_success(stk.checkout_request_id, amount=116))

    tx = MpesaTransaction.objects.get()
    assert tx.match_status == MpesaTransaction.Match.REVIEW and "overpayment" in tx.review_reason
    sale.refresh_from_db()
    assert sale.status == Sale.Status.CANCELLED and not Payment.objects.exists()


def test_second_payment_for_a_paid_sale_is_an_overpayment_for_review(client, sale, stk):
    post(client, stk_success(stk.checkout_request_id, amount=116, receipt="NLJFIRST01"))
    # The customer paid twice: a second prompt was also answered (reached us with its own request).
    second = StkRequestFactory(sale=sale, amount=116, status=StkRequest.Status.UNKNOWN)
    post(client, stk_success(second.checkout_request_id, amount=116, receipt="NLJSECOND1"))

    assert Payment.objects.filter(sale=sale).count() == 1
    second_tx = MpesaTransaction.objects.get(receipt_number="NLJSECOND1")
    assert second_tx.match_status == MpesaTransaction.Match.REVIEW and "overpayment" in second_tx.review_reason
    assert StockMovement.objects.filter(sale=sale).count() == 1


def test_too_little_stock_keeps_the_money_and_sends_the_sale_to_review(client, cashier_client, sale, stk):
    line = sale.lines.get()
    StockLevel.objects.filter(shop=sale.shop, product_id=line.product_id).update(on_hand=0)

    assert post(client, stk_success(stk.checkout_request_id, amount=116)).json() == ACCEPTED

    tx = MpesaTransaction.objects.get()
    assert tx.match_status == MpesaTransaction.Match.REVIEW and "ran out of stock" in tx.review_reason
    sale.refresh_from_db()
    stk.refresh_from_db()
    assert sale.status == Sale.Status.PENDING and stk.status == StkRequest.Status.PAID
    assert not Payment.objects.exists() and not StockMovement.objects.filter(sale=sale).exists()
    assert cashier_client.get(reverse("mpesa:check-payment", args=[sale.pk])).json()["status"] == "review"


def test_a_total_with_cents_is_paid_with_the_next_whole_shilling(client, cashier, till):
    sale = make_pending_sale(cashier=cashier, till=till, price=Decimal("116.50"))
    stk = StkRequestFactory(sale=sale, amount=117)
    post(client, stk_success(stk.checkout_request_id, amount=117.00))

    sale.refresh_from_db()
    payment = Payment.objects.get(sale=sale)
    assert sale.status == Sale.Status.COMPLETED and sale.amount_paid == Decimal("116.50")
    assert (payment.amount, payment.tendered, payment.change_given) == (
        Decimal("116.50"), Decimal("117.00"), Decimal("0.50"))
    assert MpesaTransaction.objects.get().amount == Decimal("117.00")


def test_split_tender_cash_then_mpesa_completes_when_covered(client, cashier, till, product):
    sale = make_pending_sale(cashier=cashier, till=till, product=product, quantity=2)  # KES 232
    take_cash(sale_id=sale.pk, tendered=Decimal("100"))
    stk = StkRequestFactory(sale=sale, amount=132)
    post(client, stk_success(stk.checkout_request_id, amount=132))

    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and sale.amount_paid == Decimal("232.00")
    assert sorted(sale.payments.values_list("method", "amount")) == [
        ("cash", Decimal("100.00")), ("mpesa", Decimal("132.00"))]


def test_split_tender_mpesa_part_then_cash(client, cashier_client, cashier, till, product):
    sale = make_pending_sale(cashier=cashier, till=till, product=product, quantity=2)  # KES 232
    stk = StkRequestFactory(sale=sale, amount=200)
    post(client, stk_success(stk.checkout_request_id, amount=200, receipt="NLJPART001"))

    status = cashier_client.get(reverse("mpesa:check-payment", args=[sale.pk])).json()
    assert status["status"] == "partly_paid" and status["balance_due"] == "32.00"
    assert "NLJPART001" in status["message"]
    take_cash(sale_id=sale.pk, tendered=Decimal("50"))
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED


def test_a_processing_error_leaves_the_raw_row_marked_and_nothing_half_written(client, sale, stk, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("bug in the payment code")

    monkeypatch.setattr(services, "record_payment", broken)
    response = post(client, stk_success(stk.checkout_request_id, amount=116))

    assert response.status_code == 200 and response.json() == ACCEPTED
    log = CallbackLog.objects.get()
    assert log.status == CallbackLog.Status.FAILED and "bug in the payment code" in log.error
    stk.refresh_from_db()
    assert stk.status == StkRequest.Status.PENDING and not MpesaTransaction.objects.exists()

    monkeypatch.undo()
    assert services.rerun_callbacks() == {"callbacks paid": 1}
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED


def test_callback_view_is_outside_atomic_requests(client, sale, stk, monkeypatch, settings):
    settings.DATABASES["default"]["ATOMIC_REQUESTS"] = True
    monkeypatch.setattr(services, "record_payment", lambda **kwargs: 1 / 0)
    try:
        post(client, stk_success(stk.checkout_request_id, amount=116))
    finally:
        settings.DATABASES["default"]["ATOMIC_REQUESTS"] = False
    assert CallbackLog.objects.get().status == CallbackLog.Status.FAILED


def test_only_post_is_accepted(client):
    assert client.get(URL).status_code == 405
    assert not CallbackLog.objects.exists()


def test_callback_body_is_parsed_by_name_not_position(client, sale, stk):
    document = json.loads(stk_success(stk.checkout_request_id, amount=116))
    document["Body"]["stkCallback"]["CallbackMetadata"]["Item"].reverse()
    post(client, json.dumps(document).encode())

    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED


def test_a_callback_for_a_push_daraja_never_answered_still_pays_the_sale(client, sale):
    stk = StkRequestFactory(sale=sale, checkout_request_id=None, status=StkRequest.Status.UNKNOWN,
                            callback_token="unanswered-push-token")
    post(client, stk_success("ws_CO_LATE", amount=116), url=reverse("mpesa:stk-callback", kwargs={"token": stk.callback_token}))

    stk.refresh_from_db()
    sale.refresh_from_db()
    assert stk.status == StkRequest.Status.PAID and stk.checkout_request_id == "ws_CO_LATE"
    assert sale.status == Sale.Status.COMPLETED
