"""A manager asks M-Pesa now about a prompt with no answer (STK Query over HTTP to the simulator);
the answer is applied as the sweep applies it, and the question is recorded."""

from datetime import timedelta

import pytest
from django.utils import timezone

from mpesa.models import MpesaTransaction, StkRequest
from mpesa.services import query_stk_request_now, start_stk_payment, unknown_stk_requests
from mpesa.tests.factories import StkRequestFactory
from pos.models import ManagerAction, Sale
from pos.services import SaleError
from pos.tests.backoffice import manager, other_manager, other_shop  # noqa: F401

REASON = "customer says the money left their account"


def prompt(sale, phone, daraja_sim):
    start_stk_payment(sale=sale, phone=phone)
    daraja_sim.deliver()
    stk = StkRequest.objects.get(sale=sale)
    StkRequest.objects.filter(pk=stk.pk).update(created_at=timezone.now() - timedelta(minutes=3))
    return stk


def test_a_payment_whose_callback_was_lost_is_found_and_completes_the_sale(daraja_sim, sale, manager):
    stk = prompt(sale, "254700009001", daraja_sim)  # paid; the simulator never delivers the callback
    assert list(unknown_stk_requests()) == [stk]

    outcome = query_stk_request_now(stk_request_id=stk.pk, user=manager, reason=REASON)

    assert outcome == f"M-Pesa says it is paid: KES 116 recorded on sale {sale.receipt_number}."
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED
    assert MpesaTransaction.objects.get().source == MpesaTransaction.Source.STK_QUERY
    assert not unknown_stk_requests().exists()
    action = ManagerAction.objects.get()
    assert (action.action, action.reason, action.outcome, action.shop_id) == ("query_stk", REASON, outcome,
                                                                             sale.shop_id)
    assert action.target == f"STK request {stk.checkout_request_id} (sale {sale.receipt_number})"
    stk.refresh_from_db()
    assert stk.query_count == 1 and stk.last_queried_at is not None


def test_a_cancelled_prompt_is_settled_failed(daraja_sim, sale, manager):
    stk = prompt(sale, "254700001032", daraja_sim)
    StkRequest.objects.filter(pk=stk.pk).update(status=StkRequest.Status.UNKNOWN)  # as if the callback was lost

    outcome = query_stk_request_now(stk_request_id=stk.pk, user=manager, reason=REASON)

    assert outcome.startswith("M-Pesa says it was not paid (code 1032")
    assert StkRequest.objects.get().status == StkRequest.Status.FAILED
    assert Sale.objects.get().status == Sale.Status.PENDING


def test_a_prompt_the_customer_has_not_answered_stays_open(daraja_sim, sale, manager):
    stk = prompt(sale, "254700000000", daraja_sim)  # waits for a person on the virtual phone

    outcome = query_stk_request_now(stk_request_id=stk.pk, user=manager, reason=REASON)

    assert outcome.startswith("M-Pesa has no final answer yet")
    assert StkRequest.objects.get().status == StkRequest.Status.PENDING
    assert ManagerAction.objects.get().outcome == outcome


def test_daraja_down_is_said_in_words_and_the_attempt_recorded(sale, manager, settings):
    settings.MPESA_BASE_URL = "http://127.0.0.1:9"  # nothing listens there
    settings.MPESA_CONNECT_TIMEOUT = 1
    stk = StkRequestFactory(sale=sale)

    with pytest.raises(SaleError, match="M-Pesa did not answer the query"):
        query_stk_request_now(stk_request_id=stk.pk, user=manager, reason=REASON)

    assert StkRequest.objects.get().status == StkRequest.Status.PENDING
    assert ManagerAction.objects.get().outcome.startswith("M-Pesa did not answer the query")


def test_a_settled_prompt_is_refused(sale, manager):
    stk = StkRequestFactory(sale=sale, status=StkRequest.Status.FAILED)

    with pytest.raises(SaleError, match="has its outcome already: failed"):
        query_stk_request_now(stk_request_id=stk.pk, user=manager, reason=REASON)


def test_a_prompt_daraja_never_acknowledged_is_refused_with_what_to_do(sale, manager):
    stk = StkRequestFactory(sale=sale, checkout_request_id=None, status=StkRequest.Status.UNKNOWN)

    with pytest.raises(SaleError, match="never acknowledged this prompt.*assign it to the sale"):
        query_stk_request_now(stk_request_id=stk.pk, user=manager, reason=REASON)


def test_a_reason_and_the_right_shop_are_required(sale, manager, other_manager):
    stk = StkRequestFactory(sale=sale)

    with pytest.raises(SaleError, match="Say why"):
        query_stk_request_now(stk_request_id=stk.pk, user=manager, reason=" ")
    with pytest.raises(SaleError, match="another shop"):
        query_stk_request_now(stk_request_id=stk.pk, user=other_manager, reason=REASON)
    assert StkRequest.objects.get().query_count == 0
