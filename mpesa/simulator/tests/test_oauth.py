import base64

import requests
from django.conf import settings


def _generate(base_url, *, auth=None, grant_type="client_credentials", headers=None):
    return requests.get(
        f"{base_url}/oauth/v1/generate", params={"grant_type": grant_type} if grant_type else None,
        auth=auth, headers=headers, timeout=10,
    )


def test_token_is_issued_for_the_configured_key_and_secret_with_expires_in_as_a_string(daraja_sim):
    response = _generate(daraja_sim.base_url, auth=(settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in"}
    assert body["expires_in"] == "3599"
    assert len(body["access_token"]) == 28


def test_wrong_secret_gets_400_with_an_empty_body(daraja_sim):
    response = _generate(daraja_sim.base_url, auth=(settings.MPESA_CONSUMER_KEY, "not-the-secret"))
    assert response.status_code == 400
    assert response.content == b""
    assert response.reason == "Bad Request: Invalid Credentials"


def test_wrong_grant_type_is_refused_with_400_008_02(daraja_sim):
    response = _generate(
        daraja_sim.base_url, auth=(settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET), grant_type="password"
    )
    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["requestId", "errorCode", "errorMessage"]
    assert body["errorCode"] == "400.008.02"
    assert body["errorMessage"] == "Invalid grant type passed"


def test_bearer_instead_of_basic_is_an_invalid_authentication_type(daraja_sim):
    response = _generate(daraja_sim.base_url, headers={"Authorization": "Bearer abc"})
    assert response.status_code == 400
    assert response.json()["errorCode"] == "400.008.01"


def test_post_to_oauth_is_method_not_allowed(daraja_sim):
    credentials = base64.b64encode(b"simulator-key:simulator-secret").decode()
    response = requests.post(
        f"{daraja_sim.base_url}/oauth/v1/generate?grant_type=client_credentials",
        headers={"Authorization": f"Basic {credentials}"}, timeout=10,
    )
    assert response.status_code == 405
    assert response.json()["errorCode"] == "405.001"


def test_a_new_token_revokes_the_previous_one_when_single_token_is_on(daraja_sim, settings):
    settings.DARAJA_SIM_SINGLE_TOKEN = True
    auth = (settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET)
    first = _generate(daraja_sim.base_url, auth=auth).json()["access_token"]
    _generate(daraja_sim.base_url, auth=auth)
    response = requests.post(
        f"{daraja_sim.base_url}/mpesa/stkpushquery/v1/query", json={}, timeout=10,
        headers={"Authorization": f"Bearer {first}"},
    )
    assert response.status_code == 404
    assert response.json()["errorCode"] == "404.001.03"
