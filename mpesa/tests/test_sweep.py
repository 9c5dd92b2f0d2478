"""The sweep: stale prompts, lost and failed callbacks, several workers at once."""

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from mpesa import services
from mpesa.daraja import StkQueryResult
from mpesa.invariants import check_books
from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.tests.factories import StkRequestFactory, c2b_confirmation, make_pending_sale, stk_success
from pos.models import Payment, Sale

pytestmark = pytest.mark.django_db


def age(stk, seconds):
    StkRequest.objects.filter(pk=stk.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))


def test_a_push_with_no_answer_from_daraja_is_given_up_with_a_clear_status(cashier_client, sale, settings):
    stk = StkRequestFactory(sale=sale, checkout_request_id=None, status=StkRequest.Status.UNKNOWN)
    age(stk, settings.MPESA_STK_GIVE_UP_AFTER - 10)
    assert services.sweep_stk_requests() == {"prompts pending": 1}

    age(stk, settings.MPESA_STK_GIVE_UP_AFTER + 1)
    settings.MPESA_SWEEP_REQUERY_EVERY = 0
    assert services.sweep_stk_requests() == {"prompts expired": 1}

    stk.refresh_from_db()
    assert stk.status == StkRequest.Status.EXPIRED and stk.resolved_at is not None
    status = cashier_client.get(f"/cashier/check-mpesa-payment/{sale.pk}").json()
    assert status["status"] == "failed" and "Check the M-Pesa statement" in status["message"]


def test_young_prompts_and_recently_queried_ones_are_left_alone(sale, settings):
    stk = StkRequestFactory(sale=sale, checkout_request_id=None)
    assert services.sweep_stk_requests() == {}
    age(stk, settings.MPESA_SWEEP_AFTER + 1)
    StkRequest.objects.filter(pk=stk.pk).update(last_queried_at=timezone.now())
    assert services.sweep_stk_requests() == {}


def test_success_found_by_query_completes_the_sale_and_the_late_callback_fills_in_the_receipt(client, sale):
    stk = StkRequestFactory(sale=sale, amount=116)
    paid = StkQueryResult(stk.checkout_request_id, False, 0, "The service request is processed successfully.", {})

    assert services.apply_stk_query_result(stk_request_id=stk.pk, answer=paid) == "paid"
    sale.refresh_from_db()
    tx = MpesaTransaction.objects.get()
    assert sale.status == Sale.Status.COMPLETED and tx.receipt_number is None
    assert Payment.objects.get().reference == ""

    client.post("/mpesa/stk/callback", data=stk_success(stk.checkout_request_id, amount=116, receipt="NLJLATE001"),
                content_type="application/json")
    tx.refresh_from_db()
    assert tx.receipt_number == "NLJLATE001" and Payment.objects.get().reference == "NLJLATE001"
    assert Payment.objects.count() == 1


def test_a_late_callback_folds_the_query_found_payment_into_its_c2b_copy_counted_once(client, sale):
    # Found by the mpesa_storm: paid by STK Query, then its C2B confirmation without an account
    # number (a till) comes in unmatched, then the late callback names that very receipt.
    stk = StkRequestFactory(sale=sale, amount=116)
    paid = StkQueryResult(stk.checkout_request_id, False, 0, "The service request is processed successfully.", {})
    services.apply_stk_query_result(stk_request_id=stk.pk, answer=paid)
    client.post("/mpesa/c2b/confirmation", data=c2b_confirmation("NLJFOLD001", amount="116.00", bill_ref=""),
                content_type="application/json")
    assert MpesaTransaction.objects.count() == 2

    client.post("/mpesa/stk/callback", data=stk_success(stk.checkout_request_id, amount=116, receipt="NLJFOLD001"),
                content_type="application/json")

    tx = MpesaTransaction.objects.get()
    assert (tx.receipt_number, tx.stk_request, tx.sale, tx.match_status) == (
        "NLJFOLD001", stk, sale, MpesaTransaction.Match.MATCHED)
    assert tx.payment == Payment.objects.get() and tx.payment.reference == "NLJFOLD001"
    assert check_books() == []


def test_a_query_answer_after_the_callback_changes_nothing(client, sale):
    stk = StkRequestFactory(sale=sale, amount=116)
    client.post("/mpesa/stk/callback", data=stk_success(stk.checkout_request_id, amount=116),
                content_type="application/json")
    paid = StkQueryResult(stk.checkout_request_id, False, 0, "", {})
    assert services.apply_stk_query_result(stk_request_id=stk.pk, answer=paid) == "settled"
    assert MpesaTransaction.objects.count() == 1 and Payment.objects.count() == 1


def test_a_non_numeric_query_result_is_a_failure(sale):
    stk = StkRequestFactory(sale=sale)
    answer = StkQueryResult(stk.checkout_request_id, False, None, "The operator does not exist",
                            {"ResultCode": "SFC_IC0003"})
    assert services.apply_stk_query_result(stk_request_id=stk.pk, answer=answer) == "failed"
    stk.refresh_from_db()
    assert stk.result_code == "SFC_IC0003"


def test_failed_callbacks_are_retried_a_limited_number_of_times(sale):
    stk = StkRequestFactory(sale=sale, amount=116)
    log = CallbackLog.objects.create(kind=CallbackLog.Kind.STK, body=stk_success(stk.checkout_request_id, amount=116),
                                     status=CallbackLog.Status.FAILED, attempts=services.MAX_CALLBACK_ATTEMPTS)
    assert services.rerun_callbacks() == {}
    CallbackLog.objects.filter(pk=log.pk).update(attempts=1)
    assert services.rerun_callbacks() == {"callbacks paid": 1}


def test_received_but_never_processed_callbacks_are_picked_up(sale):
    stk = StkRequestFactory(sale=sale, amount=116)
    log = CallbackLog.objects.create(kind=CallbackLog.Kind.STK, body=stk_success(stk.checkout_request_id, amount=116))
    assert services.rerun_callbacks() == {}  # seconds old: its own request may still be on it
    CallbackLog.objects.filter(pk=log.pk).update(received_at=timezone.now() - timedelta(seconds=10))
    assert services.rerun_callbacks() == {"callbacks paid": 1}


def test_the_command_prints_what_it_did(sale, settings):
    out = StringIO()
    call_command("mpesa_sweep", stdout=out)
    assert "Nothing to do" in out.getvalue()

    stk = StkRequestFactory(sale=sale, checkout_request_id=None, status=StkRequest.Status.UNKNOWN)
    age(stk, settings.MPESA_STK_GIVE_UP_AFTER + 1)
    out = StringIO()
    call_command("mpesa_sweep", stdout=out)
    assert out.getvalue().strip() == "1 prompts expired"


def test_the_worker_runs_the_sweep_by_default(settings):
    assert "mpesa.services.sweep_mpesa" in settings.POS_WORKER_TASKS


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="SKIP LOCKED needs PostgreSQL")
def test_several_sweepers_at_once_claim_each_prompt_once(cashier, till, product, settings):
    requests = [StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product),
                                  checkout_request_id=None, status=StkRequest.Status.UNKNOWN) for _ in range(30)]
    StkRequest.objects.update(created_at=timezone.now() - timedelta(seconds=settings.MPESA_SWEEP_AFTER + 1))
    barrier, results = threading.Barrier(4), []

    def sweeper():
        barrier.wait()
        results.append(services.sweep_stk_requests())
        connection.close()

    threads = [threading.Thread(target=sweeper) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sum(r.get("prompts pending", 0) for r in results) == len(requests)
    assert set(StkRequest.objects.values_list("query_count", flat=True)) == {1}
