"""STK Push and STK Query against the Daraja simulator over HTTP."""

import secrets
from dataclasses import replace

import pytest

from mpesa.conf import BUY_GOODS_ONLINE, callback_url, mpesa_config
from mpesa.daraja import (
    DarajaAuthError,
    DarajaBusy,
    DarajaClient,
    DarajaRateLimited,
    DarajaRequestError,
    get_client,
)
from mpesa.models import DarajaCall

STK = "/mpesa/stkpush/v1/processrequest"


def push(phone="0708374149", amount=116, **overrides):
    arguments = dict(phone=phone, amount=amount, account_reference="S-000123", description="Demo Duka",
                     callback_url=callback_url("stk-callback", token=secrets.token_urlsafe(16)))
    arguments.update(overrides)
    return get_client().stk_push(**arguments)


def test_a_paybill_push_is_accepted_with_its_ids(daraja_sim):
    result = push()
    assert result.response_code == "0"
    assert result.checkout_request_id.startswith("ws_CO_")
    assert result.merchant_request_id and result.customer_message
    prompt = daraja_sim.prompt(result.checkout_request_id)
    assert (prompt.business_shortcode, prompt.party_b, prompt.transaction_type) == (
        "174379", "174379", "CustomerPayBillOnline")
    assert (prompt.phone, prompt.amount, prompt.account_reference) == ("254708374149", 116, "S-000123")


def test_a_till_push_sends_the_store_number_and_the_till_as_party_b(daraja_sim, settings):
    settings.MPESA_SHORTCODE_TYPE, settings.MPESA_SHORTCODE, settings.MPESA_TILL_NUMBER = "till", "300300", "5123456"
    result = push(shortcode="300300", party_b="5123456", transaction_type=BUY_GOODS_ONLINE)
    prompt = daraja_sim.prompt(result.checkout_request_id)
    assert (prompt.business_shortcode, prompt.party_b, prompt.transaction_type) == (
        "300300", "5123456", "CustomerBuyGoodsOnline")
    daraja_sim.deliver()
    assert get_client().stk_query(checkout_request_id=result.checkout_request_id, shortcode="300300").result_code == 0


def test_query_is_pending_until_the_customer_answers_then_final(daraja_sim):
    result = push()
    pending = get_client().stk_query(checkout_request_id=result.checkout_request_id)
    assert pending.pending and pending.result_code is None
    assert "being processed" in pending.result_desc
    daraja_sim.deliver()
    paid = get_client().stk_query(checkout_request_id=result.checkout_request_id)
    assert (paid.pending, paid.result_code) == (False, 0)
    assert paid.checkout_request_id == result.checkout_request_id


@pytest.mark.parametrize("phone, code", [("254700001032", 1032), ("254700000001", 1), ("254700002001", 2001)])
def test_query_reports_the_final_failure_code(daraja_sim, phone, code):
    result = push(phone=phone)
    daraja_sim.deliver()
    final = get_client().stk_query(checkout_request_id=result.checkout_request_id)
    assert (final.pending, final.result_code) == (False, code)


def test_a_paybill_pushed_as_a_till_ends_with_2028(daraja_sim):
    result = push(party_b="5123456", transaction_type=BUY_GOODS_ONLINE)
    daraja_sim.deliver()
    assert get_client().stk_query(checkout_request_id=result.checkout_request_id).result_code == 2028


def test_a_till_push_to_the_wrong_party_b_ends_with_the_non_numeric_sfc_code(daraja_sim, settings):
    settings.MPESA_SHORTCODE_TYPE, settings.MPESA_SHORTCODE, settings.MPESA_TILL_NUMBER = "till", "300300", "5123456"
    result = push(shortcode="300300", party_b="5999999", transaction_type=BUY_GOODS_ONLINE)
    daraja_sim.deliver()
    final = get_client().stk_query(checkout_request_id=result.checkout_request_id, shortcode="300300")
    assert (final.pending, final.result_code, final.raw["ResultCode"]) == (False, None, "SFC_IC0003")


def test_a_locked_subscriber_is_busy_and_not_retried(daraja_sim):
    with pytest.raises(DarajaBusy) as busy:
        push(phone="254700009005")
    assert busy.value.error_code == "500.001.1001"
    assert busy.value.http_status == 500 and busy.value.request_id
    assert DarajaCall.objects.filter(endpoint=STK).count() == 1


def test_a_second_push_to_a_phone_with_an_open_prompt_is_busy(daraja_sim):
    push(phone="254711000001")
    with pytest.raises(DarajaBusy):
        push(phone="254711000001", amount=50)


def test_a_wrong_passkey_is_an_auth_error(daraja_sim):
    client = DarajaClient(replace(mpesa_config(), passkey="not-the-passkey"))
    with pytest.raises(DarajaAuthError) as refused:
        client.stk_push(phone="0708374149", amount=1, account_reference="S-1", description="x",
                        callback_url=callback_url("stk-callback"))
    assert refused.value.error_message == "[MerchantValidate] - Wrong credentials"
    assert "MPESA_PASSKEY" in refused.value.message


def test_an_unknown_shortcode_is_a_request_error_in_words(daraja_sim):
    with pytest.raises(DarajaRequestError) as refused:
        push(shortcode="999999")
    assert refused.value.error_message == "Merchant does not exist"
    assert "store (head office) number" in refused.value.message


def test_spike_arrest_is_rate_limited(daraja_sim, settings):
    get_client().access_token()
    settings.DARAJA_SIM_MAX_TPS = 1
    with pytest.raises(DarajaRateLimited) as limited:
        push()
        push(phone="254711000002")
    assert limited.value.error_code == "500.003.02"


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"phone": "0208374149"}, "not a mobile number"),
        ({"amount": 0}, "between KES 1 and KES 250,000"),
        ({"amount": 250_001}, "between KES 1 and KES 250,000"),
        ({"amount": "116.50"}, "whole shillings"),
        ({"account_reference": "S-0001234567890"}, "1 to 12 characters"),
        ({"description": "Demo Duka Westlands"}, "13 characters"),
        ({"callback_url": "http://127.0.0.1:8000/a path"}, "contains a space"),
        ({"transaction_type": "CustomerPayMerchant"}, "use CustomerPayBillOnline"),
        ({"transaction_type": BUY_GOODS_ONLINE}, "needs the till number"),
        ({"party_b": "5123456"}, "not 5123456"),
    ],
)
def test_bad_pushes_are_refused_before_anything_is_sent(daraja_sim, overrides, words):
    with pytest.raises(DarajaRequestError) as refused:
        push(**overrides)
    assert words in refused.value.message
    assert not DarajaCall.objects.filter(endpoint=STK).exists()


def test_a_production_push_refuses_a_callback_url_safaricom_would_refuse(daraja_sim, settings):
    settings.MPESA_ENVIRONMENT = "production"
    with pytest.raises(DarajaRequestError) as refused:
        push(callback_url="http://pos.duka.co.ke/mpesa/stk/callback")
    assert "uses http" in refused.value.message and "'mpesa'" in refused.value.message
    assert not DarajaCall.objects.exists()


def test_the_push_is_logged_redacted(daraja_sim):
    push(phone="0708 374 149")
    call = DarajaCall.objects.get(endpoint=STK)
    assert call.request_body["Password"] == "[redacted]"
    assert call.request_body["PhoneNumber"] == call.request_body["PartyA"] == "2547*****149"
    assert "/stk/callback/[token]" in call.request_body["CallBackURL"]
    assert call.duration_ms >= 0 and call.outcome == "ok"


def test_the_sandbox_push_is_not_refused_for_words_only_production_is(daraja_sim, settings):
    settings.MPESA_ENVIRONMENT = "sandbox"
    assert push(callback_url="http://127.0.0.1:8000/mpesa/stk/callback").checkout_request_id
