import pytest
import requests

ROUTES = [
    ("/mpesa/stkpush/v1/processrequest", 404, "404.001.03"),
    ("/mpesa/stkpushquery/v1/query", 404, "404.001.03"),
    ("/mpesa/c2b/v1/registerurl", 400, "400.003.01"),
    ("/mpesa/c2b/v2/registerurl", 400, "400.003.01"),
    ("/mpesa/c2b/v2/simulate", 400, "400.003.01"),
    ("/mpesa/transactionstatus/v1/query", 400, "400.003.01"),
    ("/pulltransactions/v1/register", 401, "401.001"),
    ("/pulltransactions/v1/query", 401, "401.001"),
]


@pytest.mark.parametrize(("path", "status", "code"), ROUTES)
def test_unknown_token_gets_the_products_own_invalid_token_code(daraja_sim, path, status, code):
    response = requests.post(daraja_sim.base_url + path, json={}, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["requestId", "errorCode", "errorMessage"]
    assert body["errorCode"] == code
    assert body["errorMessage"] == "Invalid Access Token"


@pytest.mark.parametrize(("path", "status", "code"), ROUTES)
def test_missing_bearer_header_is_an_invalid_authentication_header(daraja_sim, path, status, code):
    response = requests.post(daraja_sim.base_url + path, json={}, timeout=10)
    assert response.status_code == 404
    assert response.json()["errorCode"] == "404.001.04"
    assert response.json()["errorMessage"] == "Invalid Authentication Header"


def test_get_on_a_product_route_is_method_not_allowed(daraja):
    response = requests.get(
        daraja.base_url + "/mpesa/stkpush/v1/processrequest",
        headers={"Authorization": f"Bearer {daraja.token()}"}, timeout=10,
    )
    assert response.status_code == 405
    assert response.json()["errorCode"] == "405.001"


def test_unknown_path_is_resource_not_found(daraja):
    response = daraja.post("/mpesa/stkpush/v9/processrequest", {})
    assert response.status_code == 404
    assert response.json()["errorCode"] == "404.001.01"


def test_malformed_json_is_an_invalid_request_payload(daraja):
    response = requests.post(
        daraja.base_url + "/mpesa/stkpush/v1/processrequest", data=b"{not json",
        headers={"Authorization": f"Bearer {daraja.token()}", "Content-Type": "application/json"}, timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["errorCode"] == "400.002.05"
    assert response.json()["errorMessage"] == "Invalid Request Payload"


def test_a_push_without_json_content_type_gets_the_misleading_invalid_shortcode(daraja):
    response = requests.post(
        daraja.base_url + "/mpesa/stkpush/v1/processrequest", data=b"BusinessShortCode=174379",
        headers={"Authorization": f"Bearer {daraja.token()}", "Content-Type": "text/plain"}, timeout=10,
    )
    assert response.status_code == 400
    assert response.json() == {
        "requestId": response.json()["requestId"],
        "errorCode": "400.002.02",
        "errorMessage": "Bad Request - Invalid BusinessShortCode",
    }


def test_too_many_requests_a_second_trip_the_spike_arrest(daraja, settings):
    settings.DARAJA_SIM_MAX_TPS = 2
    codes = [daraja.post("/mpesa/stkpushquery/v1/query", {}).json()["errorCode"] for _ in range(4)]
    assert "500.003.02" in codes
