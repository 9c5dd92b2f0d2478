"""Deliveries hold no lock while in flight and go out once even when two senders race."""

import threading

import pytest
from django.db import DatabaseError, connection, transaction

from mpesa.simulator.models import StkPrompt
from mpesa.simulator.services import run_due_work

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")


def _lock_prompt_from_another_connection(checkout_id, outcomes):
    def on_post(body):
        try:
            with transaction.atomic():
                StkPrompt.objects.select_for_update(nowait=True).get(checkout_request_id=checkout_id)
            outcomes.append("free")
        except DatabaseError:
            outcomes.append("locked")
        finally:
            connection.close()

    return on_post


def test_no_lock_is_held_while_a_callback_is_posted(push, listener, daraja_sim):
    checkout_id = push().json()["CheckoutRequestID"]
    outcomes = []
    listener.on_post = _lock_prompt_from_another_connection(checkout_id, outcomes)
    daraja_sim.deliver()
    assert outcomes == ["free"]


def test_no_lock_is_held_while_an_early_callback_is_posted(push, listener, daraja_sim):
    outcomes = []
    listener.on_post = lambda body: _lock_prompt_from_another_connection(
        body["Body"]["stkCallback"]["CheckoutRequestID"], outcomes
    )(body)
    push(phone="254700009003")
    assert outcomes == ["free"]


def test_two_senders_racing_post_each_callback_once(push, listener, daraja_sim, settings):
    settings.DARAJA_SIM_CALLBACK_DELAY = 0
    for phone in ("254711000001", "254711000002", "254711000003"):
        push(phone=phone)
    listener.delay = 0.1
    barrier = threading.Barrier(2)

    def sender():
        barrier.wait()
        try:
            run_due_work()
        finally:
            connection.close()

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    ids = sorted(b["Body"]["stkCallback"]["CheckoutRequestID"] for b in listener.bodies("/stk"))
    assert ids == sorted(p.checkout_request_id for p in daraja_sim.prompts())
