import re

import pytest


@pytest.fixture
def status_query(daraja, listener):
    def status_query(**fields):
        body = {
            "Initiator": "testapi", "SecurityCredential": "c2VjcmV0", "CommandID": "TransactionStatusQuery",
            "PartyA": "174379", "IdentifierType": "4",
            "ResultURL": listener.url("/result"), "QueueTimeOutURL": listener.url("/timeout"),
            "Remarks": "OK", "Occasion": "recon", **fields,
        }
        return daraja.post("/mpesa/transactionstatus/v1/query", body)

    return status_query


def _parameters(result):
    return {p["Key"]: p.get("Value") for p in result["ResultParameters"]["ResultParameter"]}


def test_status_of_a_paid_stk_push_is_posted_to_the_result_url(push, status_query, daraja_sim, listener):
    checkout_id = push(amount=116).json()["CheckoutRequestID"]
    daraja_sim.deliver()
    receipt = daraja_sim.prompt(checkout_id).receipt_number
    response = status_query(TransactionID=receipt)
    assert response.status_code == 200
    sync = response.json()
    assert list(sync) == ["OriginatorConversationID", "ConversationID", "ResponseCode", "ResponseDescription"]
    assert re.fullmatch(r"AG_\d{8}_[0-9a-f]{20}", sync["ConversationID"])
    assert sync["ResponseDescription"] == "Accept the service request successfully."
    assert listener.bodies("/result") == []  # asynchronous
    daraja_sim.deliver()
    [posted] = listener.bodies("/result")
    result = posted["Result"]
    assert result["ResultType"] == 0 and result["ResultCode"] == 0
    assert result["OriginatorConversationID"] == sync["OriginatorConversationID"]
    assert result["ConversationID"] == sync["ConversationID"]
    parameters = _parameters(result)
    assert parameters["ReceiptNo"] == receipt
    assert parameters["TransactionStatus"] == "Completed"
    assert parameters["Amount"] == 116.0
    assert parameters["DebitPartyName"].startswith("254708374149 - ")
    assert result["ReferenceData"] == {"ReferenceItem": {"Key": "Occasion", "Value": "recon"}}


def test_status_by_checkout_request_id_finds_a_lost_callbacks_receipt(push, status_query, daraja_sim, listener):
    checkout_id = push(phone="254700009001").json()["CheckoutRequestID"]
    daraja_sim.deliver()
    status_query(OriginalConversationID=checkout_id)
    daraja_sim.deliver()
    [posted] = listener.bodies("/result")
    assert _parameters(posted["Result"])["ReceiptNo"] == daraja_sim.prompt(checkout_id).receipt_number


def test_unknown_transaction_gets_a_failed_result(status_query, daraja_sim, listener):
    assert status_query(TransactionID="UAB0000000").status_code == 200
    daraja_sim.deliver()
    result = listener.bodies("/result")[0]["Result"]
    assert result["ResultCode"] == "R000002"
    assert "ResultParameters" not in result


def test_wrong_initiator_gets_2001(status_query, daraja_sim, listener):
    status_query(Initiator="someone", TransactionID="UAB0000000")
    daraja_sim.deliver()
    assert listener.bodies("/result")[0]["Result"]["ResultCode"] == 2001


def test_missing_command_id_is_refused(status_query):
    response = status_query(CommandID="TransactionStatus", TransactionID="UAB0000000")
    assert response.status_code == 400
    assert response.json()["errorMessage"] == "Bad Request - Invalid CommandID"
