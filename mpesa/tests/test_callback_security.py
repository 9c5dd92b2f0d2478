"""Hostile and broken callbacks: stored, answered, never a 500, never half-applied."""

import json

import pytest
from django.urls import reverse

from mpesa import services
from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.tests.factories import StkRequestFactory, callback_paths, make_pending_sale, stk_success
from pos.models import Payment, Sale

pytestmark = pytest.mark.django_db
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}
URL = "/mpesa/stk/callback"
SAFARICOM = "196.201.214.200"


@pytest.fixture
def stk(cashier, till, product):
    return StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product), amount=116)


def assert_nothing_applied(stk):
    stk.refresh_from_db()
    assert stk.status == StkRequest.Status.PENDING
    assert not MpesaTransaction.objects.exists() and not Payment.objects.exists()
    assert Sale.objects.get(pk=stk.sale_id).status == Sale.Status.PENDING


def success_without(key, checkout_id):
    document = json.loads(stk_success(checkout_id, amount=116))
    callback = document["Body"]["stkCallback"]
    if key == "CallbackMetadata":
        del callback["CallbackMetadata"]
    elif key in ("Amount", "MpesaReceiptNumber"):
        callback["CallbackMetadata"]["Item"] = [i for i in callback["CallbackMetadata"]["Item"] if i["Name"] != key]
    else:
        del callback[key]
    return json.dumps(document).encode()


@pytest.mark.parametrize("make_body, error", [
    (lambda c: b"this is not json", "not JSON"),
    (lambda c: stk_success(c, amount=116)[:60], "not JSON"),
    (lambda c: b"", "not JSON"),
    (lambda c: b"\xff\xfe\x00garbage", "not JSON"),
    (lambda c: b"[1, 2, 3]", "Body.stkCallback"),
    (lambda c: b'{"Body": "x"}', "Body.stkCallback"),
    (lambda c: b'{"Body": {"stkCallback": []}}', "Body.stkCallback"),
    (lambda c: success_without("CheckoutRequestID", c), "CheckoutRequestID"),
    (lambda c: success_without("ResultCode", c), "ResultCode"),
    (lambda c: success_without("CallbackMetadata", c), "CallbackMetadata"),
    (lambda c: success_without("Amount", c), "Amount"),
    (lambda c: success_without("MpesaReceiptNumber", c), "MpesaReceiptNumber"),
    (lambda c: stk_success(c, amount="lots"), "not a number"),
    (lambda c: stk_success(c, amount="NaN"), "not a number"),
    (lambda c: stk_success(c, amount=116, receipt="X" * 40), "MpesaReceiptNumber"),
])
def test_malformed_body_is_stored_answered_and_not_applied(client, stk, make_body, error):
    body = make_body(stk.checkout_request_id)
    response = client.post(URL, data=body, content_type="application/json")

    assert response.status_code == 200 and response.json() == ACCEPTED
    log = CallbackLog.objects.get()
    assert bytes(log.body) == body and log.status == CallbackLog.Status.INVALID and error in log.error
    assert_nothing_applied(stk)


def test_wrong_content_type_is_still_stored_and_read_as_bytes(client, stk):
    body = stk_success(stk.checkout_request_id, amount=116)
    response = client.post(URL, data=body, content_type="text/plain")

    assert response.status_code == 200
    assert Sale.objects.get(pk=stk.sale_id).status == Sale.Status.COMPLETED


def test_form_encoded_body_is_stored_raw_and_marked_invalid(client, stk):
    response = client.post(URL, data={"Body": "x"})

    assert response.status_code == 200
    assert CallbackLog.objects.get().status == CallbackLog.Status.INVALID
    assert_nothing_applied(stk)


def test_oversized_body_is_stored_truncated_answered_and_not_processed(client, stk, settings):
    settings.MPESA_CALLBACK_MAX_BYTES = 2048
    body = stk_success(stk.checkout_request_id, amount=116)[:-1] + b"," + b" " * (5 * 1024 * 1024) + b"}"

    response = client.post(URL, data=body, content_type="application/json")

    assert response.status_code == 200
    log = CallbackLog.objects.get()
    assert len(bytes(log.body)) == 2048 and log.status == CallbackLog.Status.INVALID
    assert "larger than 2048 bytes" in log.error
    assert_nothing_applied(stk)
    assert services.rerun_callbacks() == {}


def test_callback_from_outside_the_allowlist_is_logged_rejected_and_not_processed(client, stk, settings):
    settings.MPESA_ENVIRONMENT = "production"
    body = stk_success(stk.checkout_request_id, amount=116)

    response = client.post(URL, data=body, content_type="application/json", REMOTE_ADDR="41.90.1.2")

    assert response.status_code == 200
    log = CallbackLog.objects.get()
    assert log.status == CallbackLog.Status.REJECTED and log.source_ip == "41.90.1.2"
    assert "not in MPESA_CALLBACK_ALLOWED_IPS" in log.error and bytes(log.body) == body
    assert_nothing_applied(stk)
    assert services.rerun_callbacks() == {}


def test_loopback_is_allowed_only_for_the_simulator(client, stk, settings):
    settings.MPESA_ENVIRONMENT = "sandbox"
    client.post(URL, data=stk_success(stk.checkout_request_id, amount=116), content_type="application/json")

    assert CallbackLog.objects.get().status == CallbackLog.Status.REJECTED
    assert_nothing_applied(stk)


def test_callback_from_a_safaricom_address_is_processed(client, stk, settings):
    settings.MPESA_ENVIRONMENT = "production"
    client.post(URL, data=stk_success(stk.checkout_request_id, amount=116), content_type="application/json",
                REMOTE_ADDR=SAFARICOM)

    assert Sale.objects.get(pk=stk.sale_id).status == Sale.Status.COMPLETED


def test_forged_forwarded_for_is_read_from_the_right_behind_our_proxy(client, stk, settings):
    settings.MPESA_ENVIRONMENT = "production"
    settings.MPESA_TRUSTED_PROXY_COUNT = 1
    # The attacker writes Safaricom's address; our proxy (REMOTE_ADDR) appends what it really saw.
    client.post(URL, data=stk_success(stk.checkout_request_id, amount=116), content_type="application/json",
                REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=f"{SAFARICOM}, 41.90.1.2")

    log = CallbackLog.objects.get()
    assert log.source_ip == "41.90.1.2" and log.status == CallbackLog.Status.REJECTED
    assert_nothing_applied(stk)


def test_safaricom_behind_our_proxy_is_allowed(client, stk, settings):
    settings.MPESA_ENVIRONMENT = "production"
    settings.MPESA_TRUSTED_PROXY_COUNT = 1
    client.post(URL, data=stk_success(stk.checkout_request_id, amount=116), content_type="application/json",
                REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=SAFARICOM)

    assert Sale.objects.get(pk=stk.sale_id).status == Sale.Status.COMPLETED


@pytest.mark.parametrize("remote, forwarded, trusted, expected", [
    ("196.201.214.200", "", 0, "196.201.214.200"),
    ("196.201.214.200", "1.2.3.4", 0, "196.201.214.200"),
    ("10.0.0.5", "1.2.3.4, 196.201.214.200", 1, "196.201.214.200"),
    ("10.0.0.5", "196.201.214.200, 10.0.0.9", 2, "196.201.214.200"),
    ("10.0.0.5", "", 1, None),
    ("10.0.0.5", "not-an-ip", 1, None),
])
def test_callback_source_ip(settings, remote, forwarded, trusted, expected):
    settings.MPESA_TRUSTED_PROXY_COUNT = trusted
    assert services.callback_source_ip(remote, forwarded) == expected


def test_allowlist_takes_networks(settings):
    settings.MPESA_ENVIRONMENT = "production"
    settings.MPESA_CALLBACK_ALLOWED_IPS = ["196.201.212.0/24"]
    assert services.is_allowed_callback_source("196.201.212.74")
    assert not services.is_allowed_callback_source("196.201.214.200")
    assert not services.is_allowed_callback_source(None)


@pytest.fixture
def production_paths(settings):
    """Reload the URLconf with a neutral prefix and a secret token, as production runs."""
    with callback_paths(settings, prefix="hooks", token="s3cret-Token-123"):
        yield


def test_production_paths_carry_the_secret_token_and_plain_paths_are_gone(client, stk, production_paths):
    assert reverse("mpesa:stk-callback") == "/hooks/s3cret-Token-123/stk/callback"
    assert reverse("mpesa:c2b-confirmation") == "/hooks/s3cret-Token-123/c2b/confirmation"
    body = stk_success(stk.checkout_request_id, amount=116)

    assert client.post(URL, data=body, content_type="application/json").status_code == 404
    assert client.post("/hooks/stk/callback", data=body, content_type="application/json").status_code == 404
    assert not CallbackLog.objects.exists()

    url = reverse("mpesa:stk-callback", kwargs={"token": stk.callback_token})
    assert client.post(url, data=body, content_type="application/json").json() == ACCEPTED
    assert Sale.objects.get(pk=stk.sale_id).status == Sale.Status.COMPLETED


def test_callbacks_need_no_csrf_token(stk):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    response = client.post(URL, data=stk_success(stk.checkout_request_id, amount=116), content_type="application/json")
    assert response.status_code == 200
    assert Sale.objects.get(pk=stk.sale_id).status == Sale.Status.COMPLETED


def test_failure_to_store_the_raw_row_is_the_only_non_200(client, stk):
    from django.db import OperationalError, connection

    def database_down(execute, sql, params, many, context):
        # The database refuses the raw row's INSERT as a dropped connection would.
        if "mpesa_callbacklog" in sql and sql.lstrip().upper().startswith("INSERT"):
            raise OperationalError("connection refused")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(database_down):
        response = client.post(URL, data=stk_success(stk.checkout_request_id, amount=116),
                               content_type="application/json")

    assert response.status_code == 503
    assert_nothing_applied(stk)
