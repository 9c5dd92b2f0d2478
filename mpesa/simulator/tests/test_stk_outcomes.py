"""Every phone number of DESIGN.md §4.3, over HTTP, with the callback and the query answer."""

import time

import pytest

from mpesa.simulator.models import Delivery, StkPrompt
from mpesa.simulator.services import run_due_work

from .conftest import query_body

FAILURES = [
    ("254700000001", 1, "The balance is insufficient for the transaction."),
    ("254700001032", 1032, "Request cancelled by user"),
    ("254700001037", 1037, "DS timeout user cannot be reached"),
    ("254700002001", 2001, "The initiator information is invalid."),
    ("254700001019", 1019, "Transaction has expired."),
    ("254700000017", 17, "Rule limited."),
]


@pytest.mark.parametrize(("phone", "code", "desc"), FAILURES)
def test_failure_numbers_get_their_result_code_and_no_metadata(push, listener, daraja_sim, daraja, phone, code, desc):
    ids = push(phone=phone).json()
    daraja_sim.deliver()
    assert listener.bodies("/stk") == [{"Body": {"stkCallback": {
        "MerchantRequestID": ids["MerchantRequestID"],
        "CheckoutRequestID": ids["CheckoutRequestID"],
        "ResultCode": code,
        "ResultDesc": desc,
    }}}]
    query = daraja.post("/mpesa/stkpushquery/v1/query", query_body(ids["CheckoutRequestID"])).json()
    assert query["ResultCode"] == str(code)
    assert query["ResultDesc"] == desc


def test_1037_comes_only_after_the_prompt_timeout(push, settings):
    settings.DARAJA_SIM_PROMPT_TIMEOUT = 45
    checkout_id = push(phone="254700001037").json()["CheckoutRequestID"]
    prompt = StkPrompt.objects.get(checkout_request_id=checkout_id)
    assert (prompt.decide_at - prompt.created_at).total_seconds() == pytest.approx(45, abs=0.5)
    assert run_due_work() == 0


def test_any_other_number_pays(push, listener, daraja_sim):
    push(phone="254712345678")
    daraja_sim.deliver()
    assert listener.bodies("/stk")[0]["Body"]["stkCallback"]["ResultCode"] == 0


def test_lost_callback_is_never_delivered_but_the_query_reports_it_paid(push, listener, daraja_sim, daraja):
    checkout_id = push(phone="254700009001").json()["CheckoutRequestID"]
    daraja_sim.deliver()
    assert listener.received == []
    query = daraja.post("/mpesa/stkpushquery/v1/query", query_body(checkout_id)).json()
    assert query["ResultCode"] == "0"
    assert daraja_sim.prompt(checkout_id).receipt_number


def test_duplicated_callback_is_delivered_twice_identically(push, listener, daraja_sim):
    push(phone="254700009002")
    daraja_sim.deliver()
    first, second = listener.bodies("/stk")
    assert first == second
    assert first["Body"]["stkCallback"]["ResultCode"] == 0


def test_early_callback_arrives_before_the_push_response(push, listener):
    response = push(phone="254700009003")
    answered_at = time.monotonic()
    # Delivery is queued in tests, so only the push itself can have sent this.
    [callback] = listener.received
    assert callback["at"] < answered_at
    stk = callback["body"]["Body"]["stkCallback"]
    assert stk["CheckoutRequestID"] == response.json()["CheckoutRequestID"]
    assert stk["ResultCode"] == 0


def test_delayed_callback_is_due_a_minute_after_the_push(push, listener, daraja_sim, settings):
    settings.DARAJA_SIM_CALLBACK_DELAY = 0
    settings.DARAJA_SIM_LATE_DELAY = 60
    checkout_id = push(phone="254700009004").json()["CheckoutRequestID"]
    assert run_due_work() == 1  # decided (paid) at once ...
    assert listener.received == []  # ... but not yet delivered
    prompt = daraja_sim.prompt(checkout_id)
    delivery = Delivery.objects.get(prompt=prompt)
    assert (delivery.due_at - prompt.created_at).total_seconds() == pytest.approx(60, abs=0.5)
    daraja_sim.deliver()
    assert listener.bodies("/stk")[0]["Body"]["stkCallback"]["ResultCode"] == 0


def test_locked_subscriber_is_refused_at_once(push, listener, daraja_sim):
    response = push(phone="254700009005")
    assert response.status_code == 500
    body = response.json()
    assert body["errorCode"] == "500.001.1001"
    assert body["errorMessage"] == (
        "Unable to lock subscriber, a transaction is already in process for the current subscriber"
    )
    assert daraja_sim.prompts() == []


def test_manual_phone_waits_for_a_person(push, listener, daraja_sim):
    checkout_id = push(phone="254700000000").json()["CheckoutRequestID"]
    daraja_sim.deliver()
    assert listener.received == []
    assert daraja_sim.prompt(checkout_id).is_open
    daraja_sim.answer(checkout_id, "pay")
    daraja_sim.deliver()
    assert listener.bodies("/stk")[0]["Body"]["stkCallback"]["ResultCode"] == 0


@pytest.mark.parametrize(("answer", "code"), [("pay", 0), ("cancel", 1032), ("wrong_pin", 2001), ("ignore", 1037)])
def test_any_prompt_can_be_answered_by_hand_before_its_outcome(push, listener, daraja_sim, answer, code):
    checkout_id = push(phone="254700000001").json()["CheckoutRequestID"]
    daraja_sim.answer(checkout_id, answer)
    daraja_sim.deliver()
    assert [b["Body"]["stkCallback"]["ResultCode"] for b in listener.bodies("/stk")] == [code]
