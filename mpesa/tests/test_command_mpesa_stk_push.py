"""`manage.py mpesa_stk_push` against the Daraja simulator."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command



def run(*args):
    out = StringIO()
    call_command("mpesa_stk_push", *args, stdout=out)
    return out.getvalue()


def test_a_push_prints_its_checkout_request_id_and_masks_the_phone(daraja_sim):
    output = run("0708 374 149", "116", "S-000123")
    checkout_id = output.split("CheckoutRequestID: ")[1].split()[0]
    prompt = daraja_sim.prompt(checkout_id)
    assert (prompt.phone, prompt.amount, prompt.account_reference) == ("254708374149", 116, "S-000123")
    assert prompt.callback_url.endswith("/stk/callback")
    assert "2547*****149" in output and "254708374149" not in output
    assert f"mpesa_stk_query {checkout_id}" in output


def test_a_till_push_uses_buy_goods_with_the_configured_store_and_till(daraja_sim, settings):
    settings.MPESA_SHORTCODE_TYPE, settings.MPESA_SHORTCODE, settings.MPESA_TILL_NUMBER = "till", "300300", "5123456"
    checkout_id = run("0708374149", "50", "S-1").split("CheckoutRequestID: ")[1].split()[0]
    prompt = daraja_sim.prompt(checkout_id)
    assert (prompt.business_shortcode, prompt.party_b, prompt.transaction_type) == (
        "300300", "5123456", "CustomerBuyGoodsOnline")


def test_a_bad_phone_fails_in_words(daraja_sim):
    with pytest.raises(CommandError, match="not a mobile number"):
        run("0208374149", "116", "S-1")


def test_a_busy_subscriber_fails_in_words(daraja_sim):
    with pytest.raises(CommandError, match="already has an M-Pesa request open"):
        run("254700009005", "116", "S-1")
