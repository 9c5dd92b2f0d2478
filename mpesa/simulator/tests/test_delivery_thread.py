"""The development mode: results go out by themselves from the background thread."""

import pytest

from mpesa.simulator.scheduler import wait_until_idle

from .conftest import query_body


@pytest.fixture
def threaded(settings, daraja_sim):
    settings.DARAJA_SIM_DELIVERY = "thread"
    settings.DARAJA_SIM_CALLBACK_DELAY = 0.2
    yield
    assert wait_until_idle(10), "the delivery thread should exit once nothing is pending"


def test_callback_is_posted_by_the_thread_after_the_delay(threaded, push, listener):
    push()
    [received] = listener.wait_for(1)
    assert received["body"]["Body"]["stkCallback"]["ResultCode"] == 0


def test_query_after_the_delay_gives_the_final_answer(threaded, push, listener, daraja):
    checkout_id = push(phone="254700001032").json()["CheckoutRequestID"]
    listener.wait_for(1)
    body = daraja.post("/mpesa/stkpushquery/v1/query", query_body(checkout_id)).json()
    assert body["ResultCode"] == "1032"
