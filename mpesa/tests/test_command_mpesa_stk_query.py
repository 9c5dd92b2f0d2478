"""`manage.py mpesa_stk_query` against the Daraja simulator."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from mpesa.conf import callback_url
from mpesa.daraja import get_client


def query(checkout_id):
    out = StringIO()
    call_command("mpesa_stk_query", checkout_id, stdout=out)
    return out.getvalue()


def push(phone):
    return get_client().stk_push(phone=phone, amount=116, account_reference="S-1", description="Sale",
                                 callback_url=callback_url("stk-callback")).checkout_request_id


def test_pending_then_paid(daraja_sim):
    checkout_id = push("254708374149")
    assert "pending: the customer has not answered" in query(checkout_id)
    daraja_sim.deliver()
    assert "paid (ResultCode 0" in query(checkout_id)


def test_a_cancelled_push_is_reported_with_its_code(daraja_sim):
    checkout_id = push("254700001032")
    daraja_sim.deliver()
    assert "not paid (ResultCode 1032: Request cancelled by user)" in query(checkout_id)


def test_an_unknown_checkout_request_id_fails_in_words(daraja_sim):
    with pytest.raises(CommandError, match="Invalid CheckoutRequestID"):
        query("ws_CO_00000000000000000000")
