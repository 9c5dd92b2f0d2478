"""Daraja at its worst, seen from the till: the cashier gets a clear sentence, the sale is never
left pending with no way out, and a push that may have gone out is never sent a second time.

Over real TCP: the simulator behind a proxy that answers after the read timeout, a gateway that
answers with an HTML page, and the simulator's own spike arrest. Daraja unreachable (a closed
port) is covered by test_stk_start_unreachable.py (nothing sent, the same prompt may go out at
once) and, at the client, by test_daraja_errors.py.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from mpesa import services
from mpesa.invariants import check_books
from mpesa.models import StkRequest
from mpesa.simulator.models import TrafficEntry
from mpesa.tests.fault_servers import SlowDaraja
from mpesa.tests.test_daraja_errors import STK, FakeDaraja, answer
from mpesa.tests.test_stk_start_unreachable import create_mpesa_sale, poll, start
from pos.models import Sale

@pytest.fixture
def quick(settings):
    settings.MPESA_CONNECT_TIMEOUT = 2.0
    settings.MPESA_READ_TIMEOUT = 2.0
    return settings


def give_up_on(stk, settings):
    StkRequest.objects.filter(pk=stk.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.MPESA_STK_GIVE_UP_AFTER + 1))


def test_a_push_answered_after_the_read_timeout_waits_for_its_callback_and_is_never_sent_twice(
        daraja_sim, quick, cashier_client, product):
    slow = SlowDaraja(daraja_sim.base_url, delays={STK: 4.0})
    quick.MPESA_BASE_URL = slow.url
    try:
        response = create_mpesa_sale(cashier_client, product)
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["mpesa_checkout_id"] is None
        assert body["message"] == ("M-Pesa did not answer in time; the prompt may still reach the phone. "
                                   "Wait for the result here and do not send again.")
        stk = StkRequest.objects.get()
        assert stk.status == StkRequest.Status.UNKNOWN and stk.checkout_request_id is None
        assert poll(cashier_client, body["sale_id"])["status"] == "waiting"

        again = start(cashier_client, body["sale_id"])
        assert again.status_code == 400 and "already open" in again.json()["error"]
        assert slow.count(STK) == 1 and len(daraja_sim.prompts()) == 1
    finally:
        slow.close()

    daraja_sim.deliver()  # the customer pays; the callback finds the request by its URL token

    stk.refresh_from_db()
    assert stk.status == StkRequest.Status.PAID
    assert stk.checkout_request_id == daraja_sim.prompts()[0].checkout_request_id
    assert Sale.objects.get().status == Sale.Status.COMPLETED
    assert poll(cashier_client, body["sale_id"])["status"] == "paid"
    assert check_books() == []


def test_a_gateway_page_instead_of_an_answer_is_never_pushed_again_and_ends_for_the_cashier(
        daraja_sim, quick, cashier_client, product):
    gateway = FakeDaraja()
    gateway.script[STK] = [answer(503, html="<html><body><h1>503 Service Unavailable</h1></body></html>")]
    threading.Thread(target=gateway.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    quick.MPESA_BASE_URL = f"http://127.0.0.1:{gateway.server_port}"
    try:
        response = create_mpesa_sale(cashier_client, product)
        sale_id = response.json()["sale_id"]
        assert response.status_code == 201 and "do not send again" in response.json()["message"]
        assert start(cashier_client, sale_id).status_code == 400
        assert gateway.count(STK) == 1
    finally:
        gateway.shutdown()
        gateway.server_close()

    # No CheckoutRequestID to ask about: the sweep gives up at the prompt's lifetime, in words.
    stk = StkRequest.objects.get()
    give_up_on(stk, quick)
    quick.MPESA_SWEEP_AFTER = 0
    assert services.sweep_stk_requests() == {"prompts expired": 1}
    status = poll(cashier_client, sale_id)
    assert status["status"] == "failed" and "Check the M-Pesa statement" in status["message"]

    # Daraja is back: the cashier sends a new prompt, and it is paid.
    quick.MPESA_BASE_URL = daraja_sim.base_url
    assert start(cashier_client, sale_id).status_code == 201
    daraja_sim.deliver()
    assert Sale.objects.get().status == Sale.Status.COMPLETED
    assert check_books() == []


def test_spike_arrest_on_a_push_is_a_clear_refusal_that_leaves_nothing_open(daraja_sim, cashier_client, product,
                                                                            settings):
    settings.DARAJA_SIM_MAX_TPS = 1  # the token request takes this second's only slot

    response = create_mpesa_sale(cashier_client, product)

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == ("Daraja is limiting how fast we call it (Error Occurred: Spike Arrest Violation); "
                             "wait a moment and try again.")
    stk = StkRequest.objects.get()
    assert stk.status == StkRequest.Status.REFUSED and stk.result_code == "500.003.02" and stk.resolved_at
    assert daraja_sim.prompts() == []
    status = poll(cashier_client, body["sale_id"])
    assert status["status"] == "failed" and "limiting how fast" in status["message"]

    time.sleep(1.1)
    assert start(cashier_client, body["sale_id"]).status_code == 201  # same amount, same phone: nothing open
    daraja_sim.deliver()
    assert len(daraja_sim.prompts()) == 1
    assert Sale.objects.get().status == Sale.Status.COMPLETED
    assert check_books() == []


def test_spike_arrest_on_the_sweeps_query_leaves_the_prompt_waiting_not_failed(daraja_sim, cashier_client, product,
                                                                              settings):
    settings.MPESA_SWEEP_AFTER = 0
    settings.MPESA_SWEEP_REQUERY_EVERY = 0
    sale_id = create_mpesa_sale(cashier_client, product, phone="254700009001").json()["sale_id"]  # callback lost
    daraja_sim.deliver()
    # Another caller has taken this second's only slot: the query is refused (Spike Arrest).
    settings.DARAJA_SIM_MAX_TPS = 1
    TrafficEntry.objects.create(direction=TrafficEntry.Direction.IN, method="POST", url="/elsewhere")
    assert services.sweep_stk_requests() == {"prompts pending": 1}

    assert StkRequest.objects.get().status == StkRequest.Status.PENDING
    assert poll(cashier_client, sale_id)["status"] == "waiting"

    settings.DARAJA_SIM_MAX_TPS = 0
    assert services.sweep_stk_requests() == {"prompts paid": 1}
    assert Sale.objects.get().status == Sale.Status.COMPLETED
    assert check_books() == []
