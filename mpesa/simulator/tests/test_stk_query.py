from .conftest import query_body


def test_open_prompt_is_being_processed_with_http_500(push, daraja):
    checkout_id = push().json()["CheckoutRequestID"]
    response = daraja.post("/mpesa/stkpushquery/v1/query", query_body(checkout_id))
    assert response.status_code == 500
    assert response.json() == {
        "requestId": checkout_id,
        "errorCode": "500.001.1001",
        "errorMessage": "The transaction is being processed",
    }


def test_final_answer_has_every_value_as_a_string(push, daraja, daraja_sim):
    ids = push(phone="254700001032").json()
    daraja_sim.deliver()
    response = daraja.post("/mpesa/stkpushquery/v1/query", query_body(ids["CheckoutRequestID"]))
    assert response.status_code == 200
    assert response.json() == {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": ids["MerchantRequestID"],
        "CheckoutRequestID": ids["CheckoutRequestID"],
        "ResultCode": "1032",
        "ResultDesc": "Request cancelled by user",
    }


def test_paid_prompt_reports_result_code_0_without_receipt(push, daraja, daraja_sim):
    checkout_id = push().json()["CheckoutRequestID"]
    daraja_sim.deliver()
    body = daraja.post("/mpesa/stkpushquery/v1/query", query_body(checkout_id)).json()
    assert body["ResultCode"] == "0"
    assert "MpesaReceiptNumber" not in body and "CallbackMetadata" not in body


def test_unknown_checkout_request_id_is_invalid(daraja):
    response = daraja.post("/mpesa/stkpushquery/v1/query", query_body("ws_CO_00000000000000000000000000"))
    assert response.status_code == 400
    assert response.json()["errorMessage"] == "Bad Request - Invalid CheckoutRequestID"


def test_query_with_a_wrong_password_is_wrong_credentials(push, daraja):
    body = query_body(push().json()["CheckoutRequestID"])
    body["Password"] = "d3Jvbmc="
    response = daraja.post("/mpesa/stkpushquery/v1/query", body)
    assert response.status_code == 500
    assert response.json()["errorMessage"] == "[MerchantValidate] - Wrong credentials"
