import re
from datetime import datetime

import pytest
from django.conf import settings

from mpesa.simulator.models import Delivery, StkPrompt

from .conftest import TEST_PHONE, password_for


def test_accepted_push_answers_with_daraja_shaped_ids(push):
    response = push()
    assert response.status_code == 200
    body = response.json()
    assert list(body) == [
        "MerchantRequestID", "CheckoutRequestID", "ResponseCode", "ResponseDescription", "CustomerMessage"
    ]
    assert re.fullmatch(r"\d{5}-\d{8}-1", body["MerchantRequestID"])
    assert re.fullmatch(r"ws_CO_\d{26}", body["CheckoutRequestID"])
    assert body["ResponseCode"] == "0"
    assert body["ResponseDescription"] == "Success. Request accepted for processing"
    assert body["CustomerMessage"] == "Success. Request accepted for processing"


def test_success_callback_has_the_shape_of_a_real_one(push, listener, daraja_sim):
    ids = push(amount=116).json()
    daraja_sim.deliver()
    [callback] = listener.bodies("/stk")
    stk = callback["Body"]["stkCallback"]
    assert list(stk) == ["MerchantRequestID", "CheckoutRequestID", "ResultCode", "ResultDesc", "CallbackMetadata"]
    assert stk["MerchantRequestID"] == ids["MerchantRequestID"]
    assert stk["CheckoutRequestID"] == ids["CheckoutRequestID"]
    assert stk["ResultCode"] == 0 and isinstance(stk["ResultCode"], int)
    assert stk["ResultDesc"] == "The service request is processed successfully."
    items = stk["CallbackMetadata"]["Item"]
    assert [item["Name"] for item in items] == [
        "Amount", "MpesaReceiptNumber", "Balance", "TransactionDate", "PhoneNumber"
    ]
    values = {item["Name"]: item.get("Value") for item in items}
    assert values["Amount"] == 116.0 and isinstance(values["Amount"], float)
    assert re.fullmatch(r"[A-Z][A-Z][A-Z0-9]{8}", values["MpesaReceiptNumber"])
    assert "Value" not in items[2]
    assert isinstance(values["TransactionDate"], int)
    datetime.strptime(str(values["TransactionDate"]), "%Y%m%d%H%M%S")
    assert values["PhoneNumber"] == int(TEST_PHONE)


def test_receipt_numbers_are_unique(push, daraja_sim, listener):
    for phone in ("254711000001", "254711000002", "254711000003"):
        push(phone=phone)
    daraja_sim.deliver()
    receipts = {
        item["Value"]
        for body in listener.bodies("/stk")
        for item in body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
        if item["Name"] == "MpesaReceiptNumber"
    }
    assert len(receipts) == 3


def _error(response):
    body = response.json()
    assert list(body) == ["requestId", "errorCode", "errorMessage"]
    return response.status_code, body["errorCode"], body["errorMessage"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"PhoneNumber": "0708374149"}, "Bad Request - Invalid PhoneNumber"),
    ({"PhoneNumber": "254808374149"}, "Bad Request - Invalid PhoneNumber"),
    ({"PartyA": "25470837414"}, "Bad Request - Invalid PartyA"),
    ({"Amount": 0}, "Bad Request - Invalid Amount"),
    ({"Amount": 1.5}, "Bad Request - Invalid Amount"),
    ({"Amount": "ten"}, "Bad Request - Invalid Amount"),
    ({"CallBackURL": "https://shop.example.co.ke/hooks/stk "}, "Bad Request - Invalid CallBackURL"),
    ({"CallBackURL": "shop.example.co.ke/stk"}, "Bad Request - Invalid CallBackURL"),
    ({"TransactionType": "CustomerPayBill"}, "Bad Request - Invalid TransactionType"),
    ({"Timestamp": "2024-01-01"}, "Bad Request - Invalid Timestamp"),
    ({"AccountReference": "INV-0000012345"}, "The element AccountReference is invalid."),
])
def test_invalid_fields_are_refused_with_400_002_02(push, fields, message):
    assert _error(push(**fields)) == (400, "400.002.02", message)


def test_password_not_made_from_the_passkey_is_wrong_credentials(push):
    response = push(Password=password_for("174379", "20240101120000", passkey="0" * 64))
    assert _error(response) == (500, "500.001.1001", "[MerchantValidate] - Wrong credentials")


def test_password_with_another_timestamp_is_wrong_credentials(push):
    response = push(Password=password_for(str(settings.MPESA_SHORTCODE), "20200101000000"))
    assert _error(response)[2] == "[MerchantValidate] - Wrong credentials"


def test_unknown_business_shortcode_is_merchant_does_not_exist(push):
    assert _error(push(BusinessShortCode="999111")) == (500, "500.001.1001", "Merchant does not exist")


def test_second_push_to_a_phone_with_an_open_prompt_cannot_lock_the_subscriber(push):
    assert push(phone="254711222333").status_code == 200
    assert _error(push(phone="254711222333", amount=2)) == (
        500, "500.001.1001",
        "Unable to lock subscriber, a transaction is already in process for the current subscriber",
    )


def test_paybill_pushed_as_buy_goods_fails_with_2028_in_the_callback(push, listener, daraja_sim):
    assert push(TransactionType="CustomerBuyGoodsOnline").status_code == 200
    daraja_sim.deliver()
    stk = listener.bodies("/stk")[0]["Body"]["stkCallback"]
    assert stk["ResultCode"] == 2028
    assert "CallbackMetadata" not in stk


def test_till_paid_with_the_wrong_party_b_fails_with_sfc_ic0003(push, listener, daraja_sim, settings):
    settings.MPESA_SHORTCODE_TYPE = "till"
    settings.MPESA_TILL_NUMBER = "5123456"
    assert push(TransactionType="CustomerBuyGoodsOnline", PartyB="174379").status_code == 200
    daraja_sim.deliver()
    stk = listener.bodies("/stk")[0]["Body"]["stkCallback"]
    assert stk["ResultCode"] == "SFC_IC0003"
    assert stk["ResultDesc"] == "The operator does not exist."


def test_till_paid_as_buy_goods_to_the_till_number_succeeds(push, listener, daraja_sim, settings):
    settings.MPESA_SHORTCODE_TYPE = "till"
    settings.MPESA_TILL_NUMBER = "5123456"
    assert push(TransactionType="CustomerBuyGoodsOnline", PartyB="5123456").status_code == 200
    daraja_sim.deliver()
    assert listener.bodies("/stk")[0]["Body"]["stkCallback"]["ResultCode"] == 0


def test_same_amount_to_the_same_phone_within_two_minutes_gets_17(push, listener, daraja_sim):
    push(amount=50)
    daraja_sim.deliver()
    push(amount=50)
    push(phone="254711999888", amount=50)
    daraja_sim.deliver()
    codes = [b["Body"]["stkCallback"]["ResultCode"] for b in listener.bodies("/stk")]
    assert codes == [0, 17, 0]


def test_success_is_decided_after_the_configured_delay(push, settings):
    settings.DARAJA_SIM_CALLBACK_DELAY = 2.0
    checkout_id = push().json()["CheckoutRequestID"]
    prompt = StkPrompt.objects.get(checkout_request_id=checkout_id)
    assert (prompt.decide_at - prompt.created_at).total_seconds() == pytest.approx(2.0, abs=0.2)
    assert not Delivery.objects.exists()
