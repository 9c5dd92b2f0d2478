"""C2B URL registration and C2B simulate against the Daraja simulator over HTTP."""

import pytest

from mpesa.conf import BUY_GOODS_ONLINE, callback_url
from mpesa.daraja import DarajaRequestError, get_client
from mpesa.models import DarajaCall
from mpesa.simulator.models import C2BRegistration, Payment


def register(**overrides):
    arguments = dict(confirmation_url=callback_url("c2b-confirmation"), validation_url=callback_url("c2b-validation"))
    arguments.update(overrides)
    return get_client().register_c2b_urls(**arguments)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_register_urls_uses_the_configured_version(daraja_sim, settings, version):
    settings.MPESA_C2B_VERSION = version
    result = register()
    assert result.response_code == "0" and result.originator_conversation_id
    registration = C2BRegistration.objects.get(shortcode="174379")
    assert (registration.version, registration.response_type) == (version, "Completed")
    assert registration.confirmation_url == callback_url("c2b-confirmation")
    assert DarajaCall.objects.filter(endpoint=f"/mpesa/c2b/{version}/registerurl", status_code=200).exists()


def test_a_second_registration_in_production_explains_the_one_time_rule(daraja_sim, settings):
    settings.DARAJA_SIM_MODE = "production"
    settings.MPESA_CALLBACK_BASE_URL = "https://pos.duka.co.ke"
    urls = dict(confirmation_url="https://pos.duka.co.ke/hooks/c2b/confirmation",
                validation_url="https://pos.duka.co.ke/hooks/c2b/validation")
    register(**urls)
    with pytest.raises(DarajaRequestError) as refused:
        register(**urls)
    assert refused.value.error_code == "500.003.1001"
    assert "one-time" in refused.value.message and "URL Management" in refused.value.message


def test_daraja_refusing_a_banned_word_is_a_request_error(daraja_sim, settings):
    settings.DARAJA_SIM_MODE = "production"
    with pytest.raises(DarajaRequestError) as refused:
        register(confirmation_url="https://pos.duka.co.ke/mpesa/c2b/confirmation",
                 validation_url="https://pos.duka.co.ke/hooks/c2b/validation")
    assert refused.value.http_status == 400
    assert "MPESA" in refused.value.error_message


def test_a_response_type_daraja_would_refuse_is_not_sent(daraja_sim):
    with pytest.raises(DarajaRequestError):
        register(response_type="completed")
    assert not DarajaCall.objects.exists()


def test_simulating_a_paybill_payment_records_it_with_the_account_number(daraja_sim):
    result = get_client().c2b_simulate(amount=250, phone="0708374149", bill_ref_number="S-000123")
    assert result.response_code == "0" and result.originator_conversation_id
    payment = Payment.objects.get(originator_conversation_id=result.originator_conversation_id)
    assert (payment.shortcode, payment.amount, payment.bill_ref_number, payment.phone) == (
        "174379", 250, "S-000123", "254708374149")


def test_simulating_a_till_payment_uses_buy_goods_without_an_account(daraja_sim, settings):
    settings.MPESA_SHORTCODE_TYPE, settings.MPESA_SHORTCODE, settings.MPESA_TILL_NUMBER = "till", "300300", "5123456"
    result = get_client().c2b_simulate(amount=99, phone="254708374149", shortcode="5123456",
                                       command_id=BUY_GOODS_ONLINE)
    payment = Payment.objects.get(originator_conversation_id=result.originator_conversation_id)
    assert (payment.shortcode, payment.bill_ref_number) == ("5123456", "")


def test_a_paybill_simulated_as_buy_goods_is_refused(daraja_sim):
    with pytest.raises(DarajaRequestError) as refused:
        get_client().c2b_simulate(amount=10, phone="254708374149", command_id=BUY_GOODS_ONLINE)
    assert refused.value.error_code == "400.002.02"


def test_simulate_is_refused_in_production_without_calling_daraja(daraja_sim, settings):
    settings.MPESA_ENVIRONMENT = "production"
    with pytest.raises(DarajaRequestError) as refused:
        get_client().c2b_simulate(amount=10, phone="254708374149")
    assert "not in production" in refused.value.message
    assert not DarajaCall.objects.exists()
