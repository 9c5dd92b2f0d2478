"""Configuration from settings, the STK password and timestamp, and the M-Pesa system checks."""

from datetime import datetime, timezone as dt_timezone

import pytest
from django.core.checks import Error, Warning, run_checks

from comolor.logging import redact_payload, redact_url
from mpesa.conf import (
    PRODUCTION_URL,
    SANDBOX_PASSKEY,
    SANDBOX_URL,
    account_problems,
    callback_url,
    callback_url_problems,
    configuration_problems,
    mpesa_config,
)
from mpesa.daraja import daraja_timestamp, stk_password
from mpesa.models import MpesaAccount


@pytest.fixture
def production(settings):
    settings.MPESA_ENVIRONMENT = "production"
    settings.MPESA_CONSUMER_KEY = "live-key"
    settings.MPESA_CONSUMER_SECRET = "live-secret"
    settings.MPESA_SHORTCODE = "888880"
    settings.MPESA_PASSKEY = "live-passkey"
    settings.MPESA_CALLBACK_BASE_URL = "https://pos.duka.co.ke"
    return settings


def ids(problems):
    return sorted(problem.id for problem in problems)


def test_the_environment_selects_the_daraja_address(settings):
    settings.MPESA_CALLBACK_BASE_URL = "http://127.0.0.1:8101/"
    assert mpesa_config().base_url == "http://127.0.0.1:8101/daraja-sim"
    settings.MPESA_ENVIRONMENT = "sandbox"
    assert mpesa_config().base_url == SANDBOX_URL
    settings.MPESA_ENVIRONMENT = "production"
    assert mpesa_config().base_url == PRODUCTION_URL


def test_mpesa_base_url_overrides_the_environment(settings):
    settings.MPESA_ENVIRONMENT = "sandbox"
    settings.MPESA_BASE_URL = "http://daraja.internal:9000/"
    config = mpesa_config()
    assert config.base_url == "http://daraja.internal:9000"
    assert config.base_url_overridden


def test_a_till_pays_the_till_with_buy_goods_and_a_paybill_itself(settings):
    settings.MPESA_SHORTCODE_TYPE = "till"
    settings.MPESA_SHORTCODE, settings.MPESA_TILL_NUMBER = "300300", "5123456"
    till = mpesa_config()
    assert (till.party_b, till.transaction_type) == ("5123456", "CustomerBuyGoodsOnline")
    settings.MPESA_SHORTCODE_TYPE, settings.MPESA_TILL_NUMBER = "paybill", ""
    paybill = mpesa_config()
    assert (paybill.party_b, paybill.transaction_type) == ("300300", "CustomerPayBillOnline")


def test_callback_url_is_the_callback_base_plus_the_routed_path(settings):
    settings.MPESA_CALLBACK_BASE_URL = "https://pos.duka.co.ke/"
    assert callback_url("c2b-confirmation").startswith("https://pos.duka.co.ke/")
    assert callback_url("c2b-confirmation").endswith("/c2b/confirmation")
    assert callback_url("stk-callback", token="abc").endswith("/stk/callback/abc")


def test_the_password_is_base64_of_shortcode_passkey_and_timestamp():
    # Daraja's own sample request.
    assert stk_password("174379", SANDBOX_PASSKEY, "20210628092408") == (
        "MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZWQyYzkxOTIwMjEwNjI4MDkyNDA4"
    )


def test_the_timestamp_is_nairobi_time_whatever_the_server_zone():
    assert daraja_timestamp(datetime(2026, 3, 1, 21, 30, 5, tzinfo=dt_timezone.utc)) == "20260302003005"


def test_the_default_simulator_configuration_has_no_problems():
    assert configuration_problems() == []


def test_missing_credentials_in_sandbox_are_named(settings):
    settings.MPESA_ENVIRONMENT = "sandbox"
    settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET = "simulator-key", ""
    [problem] = [p for p in configuration_problems() if p.id == "mpesa.E001"]
    assert "MPESA_CONSUMER_KEY, MPESA_CONSUMER_SECRET are not set" in problem.message


def test_a_till_without_a_till_number_is_an_error(settings):
    settings.MPESA_SHORTCODE_TYPE = "till"
    assert ids(configuration_problems()) == ["mpesa.E004"]


def test_a_till_number_used_as_shortcode_is_a_warning(settings):
    settings.MPESA_SHORTCODE_TYPE = "till"
    settings.MPESA_SHORTCODE = settings.MPESA_TILL_NUMBER = "5123456"
    [problem] = configuration_problems()
    assert problem.id == "mpesa.W005" and "store (head office) number" in problem.hint


def test_a_till_number_on_a_paybill_is_an_error(settings):
    settings.MPESA_TILL_NUMBER = "5123456"
    [problem] = configuration_problems()
    assert problem.id == "mpesa.E006" and "CustomerBuyGoodsOnline" in problem.hint


def test_production_with_sandbox_values_is_an_environment_mismatch(production):
    production.MPESA_SHORTCODE, production.MPESA_PASSKEY = "174379", SANDBOX_PASSKEY
    production.MPESA_BASE_URL = SANDBOX_URL
    [problem] = [p for p in configuration_problems() if p.id == "mpesa.E007"]
    assert "sandbox test paybill" in problem.message and "MPESA_BASE_URL" in problem.message


def test_sandbox_pointed_at_production_daraja_is_a_mismatch(settings):
    settings.MPESA_ENVIRONMENT = "sandbox"
    settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET = "k", "s"
    settings.MPESA_BASE_URL = PRODUCTION_URL
    assert "mpesa.E008" in ids(configuration_problems())


def test_production_callbacks_must_be_https_and_without_banned_words(production):
    production.MPESA_CALLBACK_BASE_URL = "http://pos.duka.co.ke"
    messages = [p.message for p in configuration_problems() if p.id == "mpesa.E012"]
    assert any("uses http" in m for m in messages)
    # The development prefix "mpesa" is one of the words Safaricom refuses.
    assert any("'mpesa'" in m and "MPESA_CALLBACK_PREFIX" in m for m in messages)


def test_a_local_callback_address_cannot_be_reached_by_safaricom(production):
    production.MPESA_CALLBACK_BASE_URL = "https://192.168.1.20"
    assert any("cannot reach" in p.message for p in configuration_problems())


@pytest.mark.parametrize(
    "url, words",
    [
        ("https://pos.duka.co.ke/hooks/c2b/confirmation", []),
        ("https://pos.duka.co.ke/M-Pesa/c2b", ["m-pesa"]),
        ("https://safaricom-payments.duka.co.ke/c2b", ["safaricom"]),
        ("https://pos.duka.co.ke/exec/cmd", ["exec", "cmd"]),
        ("https://pos.duka.co.ke/c2b?query=1", ["query"]),
        ("https://abc.ngrok.io/c2b", ["ngrok"]),
    ],
)
def test_callback_url_problems_name_the_words_safaricom_refuses(url, words):
    problems = " ".join(callback_url_problems(url, "production"))
    for word in words:
        assert word in problems
    assert bool(problems) == bool(words)


def test_the_simulator_accepts_any_absolute_url_but_never_spaces():
    assert callback_url_problems("http://localhost:8000/mpesa/stk/callback", "simulator") == []
    assert callback_url_problems("http://localhost:8000/a b", "simulator")


def test_system_check_reports_configuration_problems_as_errors_and_warnings(settings):
    settings.MPESA_SHORTCODE_TYPE = "till"
    settings.MPESA_SHORTCODE = settings.MPESA_TILL_NUMBER = "5123456"
    [warning] = run_checks(tags=["mpesa"])
    assert isinstance(warning, Warning) and warning.id == "mpesa.W005"
    settings.MPESA_TILL_NUMBER = ""
    [error] = run_checks(tags=["mpesa"])
    assert isinstance(error, Error) and error.id == "mpesa.E004"


def test_deploy_check_refuses_the_simulator(settings):
    assert [e.id for e in run_checks(tags=["mpesa"], include_deployment_checks=True)] == ["mpesa.E100"]
    settings.MPESA_ENVIRONMENT = "sandbox"
    settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET = "k", "s"
    settings.MPESA_CALLBACK_BASE_URL = "https://pos.duka.co.ke"
    assert "mpesa.E100" not in [e.id for e in run_checks(tags=["mpesa"], include_deployment_checks=True)]


@pytest.mark.parametrize(
    "kind, shortcode, till_number, words",
    [
        (MpesaAccount.Kind.TILL, "300300", "", "has no till number"),
        (MpesaAccount.Kind.TILL, "5123456", "5123456", "not the till"),
        (MpesaAccount.Kind.PAYBILL, "888880", "5123456", "clear the till number"),
        (MpesaAccount.Kind.PAYBILL, "88888O", "", "is not a number"),
    ],
)
def test_shop_accounts_mixing_till_and_paybill_are_explained(shop, kind, shortcode, till_number, words):
    account = MpesaAccount(shop=shop, kind=kind, shortcode=shortcode, till_number=till_number)
    assert words in " ".join(account_problems(account))


def test_a_well_formed_till_account_has_no_problems(shop):
    assert account_problems(MpesaAccount(shop=shop, kind="till", shortcode="300300", till_number="5123456")) == []


def test_redacted_payloads_hide_secrets_phones_and_callback_tokens():
    body = {
        "Password": "MTc0Mzc5", "SecurityCredential": "rsa==", "PartyA": "254708374149",
        "PhoneNumber": 254708374149, "PartyB": "174379", "Amount": 1,
        "CallBackURL": "https://pos.duka.co.ke/hooks/s3cr3tT0kenValue-123456/stk/callback",
        "Nested": [{"msisdn": "0708374149", "note": "paid by 0708374149"}],
    }
    redacted = redact_payload(body)
    assert redacted["Password"] == redacted["SecurityCredential"] == "[redacted]"
    assert redacted["PartyA"] == redacted["PhoneNumber"] == "2547*****149"
    assert (redacted["PartyB"], redacted["Amount"]) == ("174379", 1)
    assert redacted["CallBackURL"] == "https://pos.duka.co.ke/hooks/[token]/stk/callback"
    assert redacted["Nested"] == [{"msisdn": "07*****149", "note": "paid by 07*****149"}]
    assert redact_url("https://x.co/c2b?secret=abc") == "https://x.co/c2b?[redacted]"
