"""C2B validation through the simulator over HTTP: accept-all and strict shops, the C2B000xx
codes, an answer before Daraja's deadline while the database is locked (T25), the timeout notice."""

import json
import logging
import threading

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse

from mpesa.models import CallbackLog, MpesaAccount, MpesaTransaction
from mpesa.simulator.models import Delivery, Payment as SimPayment
from mpesa.tests.factories import register_c2b_urls
from pos.models import Sale

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="row and table locks need PostgreSQL")


def make_paybill(shop, policy):
    MpesaAccount.objects.create(shop=shop, shortcode=settings.MPESA_SHORTCODE, validation_policy=policy)
    register_c2b_urls()


@pytest.fixture
def strict(daraja_sim, shop):
    make_paybill(shop, MpesaAccount.ValidationPolicy.STRICT)
    return daraja_sim


def validation_answer() -> dict:
    delivery = Delivery.objects.get(kind=Delivery.Kind.C2B_VALIDATION)
    assert (delivery.status_code, delivery.error) == (200, ""), "the answer did not reach Daraja in time"
    return json.loads(delivery.response_body)


def validation_log() -> CallbackLog:
    return CallbackLog.objects.get(kind=CallbackLog.Kind.C2B_VALIDATION)


def test_a_shop_that_takes_everything_accepts_a_mistyped_account_number(daraja_sim, shop, sale):
    make_paybill(shop, MpesaAccount.ValidationPolicy.ACCEPT_ALL)
    payment = daraja_sim.send_c2b(amount=116, account="DEMO-9999999")
    daraja_sim.deliver()

    assert validation_answer() == {"ResultCode": "0", "ResultDesc": "Accepted"}
    assert validation_log().status == CallbackLog.Status.PROCESSED
    assert MpesaTransaction.objects.get().receipt_number == payment.receipt_number


def test_a_strict_shop_refuses_an_account_number_that_names_no_open_sale(strict, sale):
    payment = strict.send_c2b(amount=116, account="DEMO-9999999")
    strict.deliver()

    assert validation_answer() == {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
    assert "no open sale's receipt number" in validation_log().error
    payment.refresh_from_db()
    assert payment.status == SimPayment.Status.CANCELLED and not MpesaTransaction.objects.exists()


def test_a_strict_shop_refuses_an_amount_other_than_the_balance(strict, sale):
    strict.send_c2b(amount=100, account="demo 0000001")
    strict.deliver()

    assert validation_answer()["ResultCode"] == "C2B00013"
    assert "KES 100.00 offered for sale DEMO-0000001, which needs KES 116" in validation_log().error
    assert not MpesaTransaction.objects.exists()


def test_a_strict_shop_takes_the_right_amount_for_an_open_sale_and_it_pays_the_sale(strict, sale):
    strict.send_c2b(amount=116, account="DEMO0000001")
    strict.deliver()

    assert validation_answer()["ResultCode"] == "0"
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED


def test_an_unreadable_validation_request_is_stored_and_accepted(daraja_sim, client):
    response = client.post(reverse("mpesa:c2b-validation"), data=b"not json", content_type="application/json")

    assert response.json() == {"ResultCode": "0", "ResultDesc": "Accepted"}
    log = validation_log()
    assert bytes(log.body) == b"not json" and "Unreadable" in log.error


def hold_lock(sql: str, params=()) -> tuple[threading.Thread, dict]:
    """Another connection takes a lock and keeps it until our validation answer is stored."""
    state = {"locked": threading.Event(), "released_after_answer": None}

    def run():
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(sql, params)
                    state["locked"].set()
                    answered = False
                    for _ in range(150):  # at most 15 s, then give up: the test fails below
                        cursor.execute("SELECT count(*) FROM mpesa_callbacklog WHERE kind = 'c2b_validation' "
                                       "AND status = 'processed'")
                        if cursor.fetchone()[0]:
                            answered = True
                            break
                        cursor.execute("SELECT pg_sleep(0.1)")
                    state["released_after_answer"] = answered
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert state["locked"].wait(10)
    return thread, state


@postgres_only
def test_validation_answers_before_daraja_gives_up_while_the_tables_it_reads_are_locked(strict, sale, settings):
    # Daraja's deadline, tightened to 1 s; a migration (say) holds the tables validation reads.
    settings.DARAJA_SIM_VALIDATION_TIMEOUT = 1.0
    thread, state = hold_lock("LOCK TABLE pos_sale, mpesa_mpesaaccount IN ACCESS EXCLUSIVE MODE")
    try:
        strict.send_c2b(amount=100, account="DEMO-0000001")
        strict.deliver()
    finally:
        thread.join()

    assert state["released_after_answer"] is True, "validation waited for the lock instead of answering"
    assert validation_answer()["ResultCode"] == "0"
    assert "did not answer in time" in validation_log().error
    # Accepted by default, the confirmation is still processed once the lock is gone: a part payment.
    sale.refresh_from_db()
    assert (sale.status, sale.amount_paid) == (Sale.Status.PENDING, 100)


@postgres_only
def test_a_locked_sale_row_does_not_hold_up_or_change_the_validation_answer(strict, sale, settings):
    settings.DARAJA_SIM_VALIDATION_TIMEOUT = 1.0
    # A cashier's payment of this very sale holds its row.
    thread, state = hold_lock("SELECT id FROM pos_sale WHERE id = %s FOR UPDATE", [sale.pk])
    try:
        strict.send_c2b(amount=100, account="DEMO-0000001")
        strict.deliver()
    finally:
        thread.join()

    assert state["released_after_answer"] is True
    assert validation_answer()["ResultCode"] == "C2B00013"


def test_the_timeout_notice_is_stored_and_logged(daraja_sim, client, caplog):
    body = json.dumps({"TransID": "TKTIMEOUT1", "TransAmount": "116.00"}).encode()
    with caplog.at_level(logging.WARNING, logger="mpesa.services"):
        response = client.post(reverse("mpesa:c2b-timeout"), data=body, content_type="application/json")

    assert response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    log = CallbackLog.objects.get(kind=CallbackLog.Kind.C2B_TIMEOUT)
    assert (bytes(log.body), log.status, log.trans_id) == (body, CallbackLog.Status.PROCESSED, "TKTIMEOUT1")
    assert "validation timed out at Safaricom (TransID TKTIMEOUT1)" in caplog.text
