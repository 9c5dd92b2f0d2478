from datetime import timedelta

from django.utils import timezone

from mpesa.simulator.services import EAT


def _window(hours_back=2):
    now = timezone.now().astimezone(EAT)
    return {
        "StartDate": (now - timedelta(hours=hours_back)).strftime("%Y-%m-%d %H:%M:%S"),
        "EndDate": (now + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S"),
    }


def _register(daraja, listener):
    return daraja.post("/pulltransactions/v1/register", {
        "ShortCode": "174379", "RequestType": "Pull", "NominatedNumber": "0722000000",
        "CallBackURL": listener.url("/pull"),
    }).json()


def test_register_once_then_already_registered(daraja, listener):
    first = _register(daraja, listener)
    assert first["ResponseStatus"] == "1000"
    assert first["ResponseDescription"] == "Shortcode Registered Successfully"
    assert first["ShortCode"] == "174379"
    assert _register(daraja, listener)["ResponseStatus"] == "1001"


def test_query_lists_c2b_and_stk_payments_nested_in_a_list(daraja, listener, daraja_sim, push):
    _register(daraja, listener)
    daraja_sim.send_c2b(amount=30, account="ACC1")
    push(phone="254700009001", amount=40)  # paid, callback lost: Pull is how it is found
    daraja_sim.deliver()
    response = daraja.post("/pulltransactions/v1/query", {"ShortCode": "174379", "OffSetValue": "0", **_window()})
    assert response.status_code == 200
    body = response.json()
    assert body["ResponseCode"] == "1000"
    assert body["TotalPages"] == 1
    [records] = body["Response"]
    assert sorted(r["amount"] for r in records) == ["30.00", "40.00"]
    assert set(records[0]) == {
        "transactionId", "trxDate", "msisdn", "sender", "transactiontype", "billreference", "amount",
        "organizationname",
    }
    assert records[0]["transactiontype"] == "c2b-pay-bill-debit"


def test_nothing_found_is_1001_with_http_200(daraja, listener):
    _register(daraja, listener)
    response = daraja.post("/pulltransactions/v1/query", {"ShortCode": "174379", "OffSetValue": "0", **_window()})
    assert response.status_code == 200
    assert response.json()["ResponseCode"] == "1001"


def test_unregistered_shortcode_is_also_1001(daraja, daraja_sim):
    daraja_sim.send_c2b(amount=30, account="ACC1")
    response = daraja.post("/pulltransactions/v1/query", {"ShortCode": "174379", "OffSetValue": "0", **_window()})
    assert response.status_code == 200
    assert response.json()["ResponseMessage"] == "No records found or Organization Name not available"


def test_payments_older_than_48_hours_are_not_returned(daraja, listener, daraja_sim):
    _register(daraja, listener)
    payment = daraja_sim.send_c2b(amount=30, account="ACC1")
    payment.transacted_at = timezone.now() - timedelta(hours=49)
    payment.save(update_fields=["transacted_at"])
    response = daraja.post("/pulltransactions/v1/query", {"ShortCode": "174379", "OffSetValue": "0", **_window(72)})
    assert response.json()["ResponseCode"] == "1001"
