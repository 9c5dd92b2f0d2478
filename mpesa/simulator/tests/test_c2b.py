import hashlib
import re

import pytest

from mpesa.simulator.models import Payment


@pytest.fixture
def register(daraja, listener):
    def register(version="v2", response_type="Completed", shortcode="174379", **urls):
        body = {
            "ShortCode": shortcode,
            "ResponseType": response_type,
            "ConfirmationURL": listener.url("/confirm"),
            "ValidationURL": listener.url("/validate"),
            **urls,
        }
        return daraja.post(f"/mpesa/c2b/{version}/registerurl", body)

    return register


def test_register_answers_with_daraja_spelling(register):
    response = register()
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["OriginatorCoversationID", "ResponseCode", "ResponseDescription"]
    assert body["ResponseCode"] == "0" and body["ResponseDescription"] == "Success"


def test_response_type_must_be_exactly_completed_or_cancelled(register):
    response = register(response_type="completed")
    assert response.status_code == 400
    assert response.json()["errorMessage"] == "Bad Request - Invalid ResponseType"


def test_sandbox_mode_allows_re_registration(register):
    assert register().status_code == 200
    assert register(version="v1").status_code == 200


def test_production_mode_registers_once(register, settings, listener):
    settings.DARAJA_SIM_MODE = "production"
    https = {"ConfirmationURL": "https://pos.example.co.ke/hooks/c2b/confirm",
             "ValidationURL": "https://pos.example.co.ke/hooks/c2b/validate"}
    assert register(**https).status_code == 200
    response = register(**https)
    assert response.status_code == 500
    assert response.json()["errorCode"] == "500.003.1001"
    assert response.json()["errorMessage"] == "Urls are already registered"


def test_production_mode_refuses_banned_words_in_urls(register, settings):
    settings.DARAJA_SIM_MODE = "production"
    response = register(ConfirmationURL="https://pos.example.co.ke/hooks/confirm",
                        ValidationURL="https://pos.example.co.ke/mpesa/validate")
    assert response.status_code == 400
    assert response.json()["errorCode"] == "400.003.02"
    assert response.json()["errorMessage"] == "Bad Request - Invalid ValidationURL - URL has the word MPESA"


def test_production_mode_refuses_http_urls(register, settings):
    settings.DARAJA_SIM_MODE = "production"
    assert register().json()["errorMessage"] == "Bad Request - Invalid ConfirmationURL"


def test_simulate_then_validation_then_confirmation_v2_masked(register, daraja, daraja_sim, listener):
    register(version="v2")
    response = daraja.post("/mpesa/c2b/v2/simulate", {
        "ShortCode": 174379, "CommandID": "CustomerPayBillOnline", "Amount": 5,
        "Msisdn": 254708374149, "BillRefNumber": "Sample Transaction",
    })
    assert response.status_code == 200
    assert response.json()["ResponseDescription"] == "Accept the service request successfully."
    assert list(response.json()) == ["OriginatorCoversationID", "ResponseCode", "ResponseDescription"]
    daraja_sim.deliver()
    [validation] = listener.bodies("/validate")
    [confirmation] = listener.bodies("/confirm")
    assert list(confirmation) == [
        "TransactionType", "TransID", "TransTime", "TransAmount", "BusinessShortCode", "BillRefNumber",
        "InvoiceNumber", "OrgAccountBalance", "ThirdPartyTransID", "MSISDN", "FirstName", "MiddleName", "LastName",
    ]
    assert all(isinstance(value, str) for value in confirmation.values())
    assert confirmation["TransactionType"] == "Pay Bill"
    assert re.fullmatch(r"[A-Z0-9]{10}", confirmation["TransID"])
    assert re.fullmatch(r"\d{14}", confirmation["TransTime"])
    assert confirmation["TransAmount"] == "5.00"
    assert confirmation["BusinessShortCode"] == "174379"
    assert confirmation["BillRefNumber"] == "Sample Transaction"
    assert confirmation["InvoiceNumber"] == ""
    assert confirmation["OrgAccountBalance"] == "5.00"
    assert confirmation["MSISDN"] == "2547 ***** 149"
    assert validation == {**confirmation, "OrgAccountBalance": ""}


def test_v1_registration_sends_the_sha256_of_the_msisdn(register, daraja_sim, listener):
    register(version="v1")
    daraja_sim.send_c2b(amount=1, account="UM001")
    daraja_sim.deliver()
    [confirmation] = listener.bodies("/confirm")
    assert confirmation["MSISDN"] == hashlib.sha256(b"254708374149").hexdigest()


def test_rejected_validation_means_no_confirmation(register, daraja_sim, listener):
    register()
    listener.reply = {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
    payment = daraja_sim.send_c2b(amount=10, account="NOSUCH")
    daraja_sim.deliver()
    assert len(listener.bodies("/validate")) == 1
    assert listener.bodies("/confirm") == []
    payment.refresh_from_db()
    assert payment.status == Payment.Status.CANCELLED


def test_third_party_trans_id_from_validation_is_echoed_in_the_confirmation(register, daraja_sim, listener):
    register()
    listener.reply = {"ResultCode": "0", "ResultDesc": "Accepted", "ThirdPartyTransID": "SALE-42"}
    daraja_sim.send_c2b(amount=10, account="SALE42")
    daraja_sim.deliver()
    assert listener.bodies("/confirm")[0]["ThirdPartyTransID"] == "SALE-42"


@pytest.mark.parametrize(("response_type", "confirmed"), [("Completed", 1), ("Cancelled", 0)])
def test_validation_timeout_falls_back_to_the_response_type(
    register, daraja_sim, listener, settings, response_type, confirmed
):
    settings.DARAJA_SIM_VALIDATION_TIMEOUT = 0.3
    register(response_type=response_type)
    listener.delay = 1.0
    daraja_sim.send_c2b(amount=10, account="A1")
    daraja_sim.deliver()
    assert len(listener.bodies("/validate")) == 1
    assert len(listener.bodies("/confirm")) == confirmed


def test_till_payment_is_buy_goods_with_no_account(register, daraja, daraja_sim, listener, settings):
    settings.MPESA_SHORTCODE_TYPE = "till"
    settings.MPESA_TILL_NUMBER = "5123456"
    register()
    response = daraja.post("/mpesa/c2b/v2/simulate", {
        "ShortCode": "5123456", "CommandID": "CustomerBuyGoodsOnline", "Amount": 20, "Msisdn": "254708374149",
        "BillRefNumber": None,
    })
    assert response.status_code == 200, response.text
    daraja_sim.deliver()
    [confirmation] = listener.bodies("/confirm")
    assert confirmation["TransactionType"] == "Buy Goods"
    assert confirmation["BusinessShortCode"] == "5123456"
    assert confirmation["BillRefNumber"] == ""


def test_payment_without_registered_urls_is_kept_for_pull_but_posted_nowhere(daraja_sim, listener):
    payment = daraja_sim.send_c2b(amount=10, account="X")
    daraja_sim.deliver()
    assert listener.received == []
    assert payment.status == Payment.Status.COMPLETED


def test_simulate_with_the_wrong_command_for_the_shortcode_is_refused(daraja):
    response = daraja.post("/mpesa/c2b/v1/simulate", {
        "ShortCode": "174379", "CommandID": "CustomerBuyGoodsOnline", "Amount": 1, "Msisdn": "254708374149",
    })
    assert response.json()["errorMessage"] == "Bad Request - Invalid CommandID"


def test_simulate_is_not_offered_in_production_mode(daraja, settings):
    settings.DARAJA_SIM_MODE = "production"
    response = daraja.post("/mpesa/c2b/v2/simulate", {
        "ShortCode": "174379", "CommandID": "CustomerPayBillOnline", "Amount": 1, "Msisdn": "254708374149",
    })
    assert response.status_code == 404
