"""C2B validation, confirmation and timeout: stored raw, answered as Daraja expects."""

import pytest
from django.urls import reverse

from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.tests.factories import StkRequestFactory, c2b_confirmation, make_pending_sale, stk_success
from pos.models import Payment, Sale

pytestmark = pytest.mark.django_db
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


def post(client, name, body):
    return client.post(reverse(f"mpesa:{name}"), data=body, content_type="application/json")


def test_validation_accepts_the_payment_and_keeps_the_request(client):
    body = c2b_confirmation()
    response = post(client, "c2b-validation", body)

    assert response.status_code == 200 and response.json() == {"ResultCode": "0", "ResultDesc": "Accepted"}
    log = CallbackLog.objects.get()
    assert log.kind == CallbackLog.Kind.C2B_VALIDATION and bytes(log.body) == body
    assert log.status == CallbackLog.Status.PROCESSED and not MpesaTransaction.objects.exists()


def test_confirmation_enters_the_ledger_as_unmatched(client):
    response = post(client, "c2b-confirmation", c2b_confirmation("RKTQDM7W6S", amount="250.00"))

    assert response.json() == ACCEPTED
    tx = MpesaTransaction.objects.get()
    assert (tx.receipt_number, tx.amount, tx.source) == ("RKTQDM7W6S", 250, MpesaTransaction.Source.C2B)
    assert tx.match_status == MpesaTransaction.Match.UNMATCHED and tx.msisdn == "25470****149"
    assert tx.bill_ref_number == "DEMO-0000001" and tx.transaction_time is not None
    assert CallbackLog.objects.get().trans_id == "RKTQDM7W6S"


def test_repeated_confirmation_is_one_ledger_row(client):
    for _ in range(3):
        assert post(client, "c2b-confirmation", c2b_confirmation("RKTQDM7W6S")).json() == ACCEPTED
    assert MpesaTransaction.objects.count() == 1 and CallbackLog.objects.count() == 3


@pytest.mark.parametrize("body", [b"{}", b"nope", b'{"TransID": "X1", "TransAmount": "ten"}',
                                  b'{"TransID": "X1", "TransAmount": "-5"}'])
def test_unreadable_confirmation_is_stored_and_marked_invalid(client, body):
    assert post(client, "c2b-confirmation", body).json() == ACCEPTED
    assert CallbackLog.objects.get().status == CallbackLog.Status.INVALID
    assert not MpesaTransaction.objects.exists()


def test_timeout_notice_is_stored_and_acknowledged(client):
    assert post(client, "c2b-timeout", b'{"Result": {"ResultCode": 1}}').json() == ACCEPTED
    assert CallbackLog.objects.get().kind == CallbackLog.Kind.C2B_TIMEOUT


def test_stk_payment_already_seen_as_c2b_links_to_it_and_counts_once(client, cashier, till, product):
    sale = make_pending_sale(cashier=cashier, till=till, product=product)
    stk = StkRequestFactory(sale=sale, amount=116)
    post(client, "c2b-confirmation", c2b_confirmation("NLJ7RT61SV", amount="116.00"))
    post(client, "stk-callback", stk_success(stk.checkout_request_id, amount=116, receipt="NLJ7RT61SV"))

    tx = MpesaTransaction.objects.get()
    assert tx.stk_request == stk and tx.source == MpesaTransaction.Source.C2B
    assert tx.payment == Payment.objects.get(sale=sale)
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED

    post(client, "c2b-confirmation", c2b_confirmation("NLJ7RT61SV", amount="116.00"))
    assert MpesaTransaction.objects.count() == 1 and Payment.objects.count() == 1


def test_receipt_already_used_by_another_request_is_not_counted_again(client, cashier, till, product):
    first = StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product), amount=116)
    second = StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product), amount=116)
    post(client, "stk-callback", stk_success(first.checkout_request_id, amount=116, receipt="NLJREPLAY1"))
    post(client, "stk-callback", stk_success(second.checkout_request_id, amount=116, receipt="NLJREPLAY1"))

    second.refresh_from_db()
    assert second.status == StkRequest.Status.PENDING
    assert Payment.objects.count() == 1
    assert "already in the ledger" in CallbackLog.objects.latest("pk").error
