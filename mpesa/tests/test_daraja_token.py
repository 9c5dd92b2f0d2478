"""The shared OAuth token against the Daraja simulator over HTTP."""

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from django.core.cache import cache
from django.db import connection

from mpesa.conf import callback_url, mpesa_config
from mpesa.daraja import DarajaAuthError, DarajaClient, get_client
from mpesa.models import DarajaCall

OAUTH = "/oauth/v1/generate"


def oauth_calls():
    return DarajaCall.objects.filter(endpoint=OAUTH).count()


def push(client, phone, amount=10):
    return client.stk_push(phone=phone, amount=amount, account_reference="TOKEN-TEST", description="Token test",
                           callback_url=callback_url("stk-callback"))


def test_get_client_is_one_shared_instance_with_one_session():
    assert get_client() is get_client()
    assert get_client().session is get_client().session


def test_the_token_is_minted_once_and_reused_from_the_cache(daraja_sim):
    client = DarajaClient()
    first = client.access_token()
    assert client.access_token() == first
    # Another client in the same process (or another process on the same cache) reuses it too.
    assert DarajaClient().access_token() == first
    assert oauth_calls() == 1


def test_wrong_credentials_are_refused_in_words(daraja_sim):
    # The simulator checks the settings' key and secret, so this client carries other ones.
    client = DarajaClient(replace(mpesa_config(), consumer_secret="not-the-secret"))
    with pytest.raises(DarajaAuthError) as refused:
        client.access_token()
    assert refused.value.http_status == 400
    assert "MPESA_CONSUMER_SECRET" in refused.value.message


def test_an_invalid_token_is_renewed_once_and_the_push_goes_through(daraja_sim, settings):
    # The simulator, like Daraja's FAQ says, revokes the old token when a new one is issued.
    settings.DARAJA_SIM_SINGLE_TOKEN = True
    client = DarajaClient()
    stale = client.access_token()
    DarajaClient().access_token(fresh=True)  # e.g. `mpesa_check` in another process
    cache.set(client._token_key(client.config), stale)  # this process still holds the old one

    result = push(client, "254708374149")

    assert result.checkout_request_id.startswith("ws_CO_")
    refused, accepted = DarajaCall.objects.filter(endpoint="/mpesa/stkpush/v1/processrequest").order_by("id")
    assert (refused.status_code, accepted.status_code) == (404, 200)
    assert "404.001.03" in refused.outcome
    assert client.access_token() != stale


@pytest.mark.skipif(connection.vendor != "postgresql", reason="50 threads writing at once need PostgreSQL")
def test_fifty_concurrent_pushes_mint_one_token(daraja_sim):
    client = get_client()
    start = threading.Barrier(50)
    # Django's test server queues only 10 connections (real Daraja takes more), so the pushes
    # themselves go 8 at a time; the 50 token look-ups before them all start together.
    http_slots = threading.Semaphore(8)

    def one_push(n):
        try:
            start.wait()
            token = client.access_token()
            with http_slots:
                return token, push(client, f"2547100{n:05d}").checkout_request_id
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one_push, range(50)))

    assert len({token for token, _ in results}) == 1
    assert len({checkout_id for _, checkout_id in results}) == 50
    assert oauth_calls() == 1
    assert DarajaCall.objects.filter(endpoint="/mpesa/stkpush/v1/processrequest", status_code=200).count() == 50
