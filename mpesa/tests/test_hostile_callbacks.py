"""Hostile input on every callback path (reliability.md T19–T24, T33): whatever arrives is stored
byte for byte (truncated only over the limit), answered as Daraja expects, never a 500, and either
applied whole or not at all."""

import ipaddress
import json
from decimal import Decimal
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import example, given
from hypothesis import strategies as st

from comolor.testing.hostile import (
    CONTENT_TYPES, HEADER_TEXT, HOSTILE, IP_ADDRESSES, RAW_BODIES, SAFARICOM_IPS, deeply_nested, encoded, mutated,
    rolled_back,
)
from inventory.models import StockMovement
from mpesa.invariants import check_books
from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.tests.factories import c2b_confirmation, stk_failure, stk_success
from mpesa.tests.test_callback_security import production_paths  # noqa: F401  (a fixture)
from pos.models import Payment, Sale

pytestmark = pytest.mark.django_db
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}
VALIDATION_ANSWERS = ("0", "C2B00011", "C2B00012", "C2B00013", "C2B00014", "C2B00015", "C2B00016")
# Every callback path, by URL name; "stk-callback+token" is the per-request path.
PATHS = ["stk-callback", "stk-callback+token", "c2b-validation", "c2b-confirmation", "c2b-timeout"]
# A stored callback ends in one of these; "failed" would mean processing crashed on it.
SETTLED = {CallbackLog.Status.PROCESSED, CallbackLog.Status.INVALID, CallbackLog.Status.REJECTED,
           CallbackLog.Status.ORPHAN}


@pytest.fixture
def daraja():
    """Safaricom's side: no session, no CSRF token (the callback views must not need one)."""
    return Client(enforce_csrf_checks=True)


def url_for(name: str, stk: StkRequest) -> str:
    if name == "stk-callback+token":
        return reverse("mpesa:stk-callback", kwargs={"token": stk.callback_token})
    return reverse(f"mpesa:{name}")


def books() -> dict:
    """Everything a callback may change, apart from its own log row."""
    return {
        "ledger": list(MpesaTransaction.objects.order_by("pk").values_list(
            "receipt_number", "amount", "match_status", "sale_id", "payment_id")),
        "payments": Payment.objects.count(),
        "stock": StockMovement.objects.count(),
        "sales": list(Sale.objects.order_by("pk").values_list("status", "amount_paid")),
        "prompts": list(StkRequest.objects.order_by("pk").values_list("status", "checkout_request_id",
                                                                      "mpesa_receipt")),
    }


def post(daraja, url, body, content_type="application/json", **extra):
    return daraja.generic("POST", url, body, content_type=content_type, **extra)


def assert_stored_and_answered(response, name, body, before_logs):
    assert response.status_code == 200, response.content[:300]
    if name == "c2b-validation":
        assert response.json()["ResultCode"] in VALIDATION_ANSWERS
    else:
        assert response.json() == ACCEPTED
    log = CallbackLog.objects.exclude(pk__in=before_logs).get()
    assert bytes(log.body) == body
    assert log.status in SETTLED, f"{log.status}: {log.error[-800:]}"
    return log


def success_document(stk):
    return json.loads(stk_success(stk.checkout_request_id, amount=116.00, receipt="NLJ7RT61SV"))


def failure_document(stk):
    return json.loads(stk_failure(stk.checkout_request_id))


# --- STK results ---------------------------------------------------------------------------------

@HOSTILE
@given(data=st.data(), with_token=st.booleans(), content_type=CONTENT_TYPES)
def test_a_mutated_stk_result_is_stored_as_sent_and_applied_whole_or_not_at_all(
        daraja, stk, data, with_token, content_type):
    base = data.draw(st.sampled_from([success_document(stk), failure_document(stk)]))
    body = data.draw(encoded(data.draw(mutated(base))))
    with rolled_back():
        logs, before = list(CallbackLog.objects.values_list("pk", flat=True)), books()
        response = post(daraja, url_for("stk-callback+token" if with_token else "stk-callback", stk), body,
                        content_type)

        log = assert_stored_and_answered(response, "stk-callback", body, logs)
        if log.status != CallbackLog.Status.PROCESSED:
            assert books() == before, log.error
        assert check_books() == []
        sale = Sale.objects.get(pk=stk.sale_id)
        if sale.status == Sale.Status.COMPLETED:
            tx = MpesaTransaction.objects.get(sale=sale)
            assert tx.amount == Decimal("116.00") and tx.match_status == MpesaTransaction.Match.MATCHED


@pytest.mark.parametrize("amount", [0, -0.0, -116, 0.01, 116.004, 116.5, 10**10, 10**12, 2**63, 10**30, 1e308,
                                    "116.001", "1e10", "-1"])
@pytest.mark.parametrize("with_token", [True, False])
def test_a_success_for_an_impossible_amount_never_completes_the_sale(daraja, stk, amount, with_token):
    """T24: Amount 0, negative or huge is kept for review; T33: more than cents, or more than the
    ledger holds, is invalid (never rounded into the ledger)."""
    body = stk_success(stk.checkout_request_id, amount=amount)
    response = post(daraja, url_for("stk-callback+token" if with_token else "stk-callback", stk), body)

    log = assert_stored_and_answered(response, "stk-callback", body, [])
    assert Sale.objects.get(pk=stk.sale_id).status == Sale.Status.PENDING
    assert not Payment.objects.exists() and not StockMovement.objects.filter(sale_id=stk.sale_id).exists()
    if log.status == CallbackLog.Status.PROCESSED:
        tx = MpesaTransaction.objects.get()
        assert tx.match_status == MpesaTransaction.Match.REVIEW and tx.amount == Decimal(str(amount))
    else:
        assert log.status == CallbackLog.Status.INVALID and "Amount" in log.error
        assert not MpesaTransaction.objects.exists()
    assert check_books() == []


# --- Anything at all, on every path --------------------------------------------------------------

@HOSTILE
@given(name=st.sampled_from(PATHS), body=RAW_BODIES, content_type=CONTENT_TYPES)
@example(name="stk-callback", body=deeply_nested(30_000), content_type="application/json")
@example(name="c2b-confirmation", body=deeply_nested(30_000), content_type="application/json")
@example(name="stk-callback", body=b'{"Body": {"stkCallback": {"CheckoutRequestID": "\\u0000"}}}',
         content_type="application/json")
def test_random_bytes_on_any_callback_path_are_stored_answered_and_change_nothing(
        daraja, stk, name, body, content_type):
    with rolled_back():
        logs, before = list(CallbackLog.objects.values_list("pk", flat=True)), books()
        response = post(daraja, url_for(name, stk), body, content_type)

        assert_stored_and_answered(response, name, body, logs)
        assert books() == before


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_refused_and_store_nothing(daraja, stk, name, method):
    response = daraja.generic(method, url_for(name, stk), stk_success(stk.checkout_request_id, amount=116))

    assert response.status_code == 405
    assert not CallbackLog.objects.exists()


@pytest.mark.parametrize("name", PATHS)
def test_a_body_over_the_limit_is_kept_truncated_and_one_at_the_limit_is_kept_whole(daraja, stk, settings, name):
    settings.MPESA_CALLBACK_MAX_BYTES = 4096
    if name.startswith("stk"):
        valid = stk_success(stk.checkout_request_id, amount=116)
    else:
        valid = c2b_confirmation("RKTQDM7W6S", bill_ref=stk.sale.receipt_number)
    for size in (4095, 4096, 4097, 5 * 1024 * 1024):
        # Still valid JSON at every size: the padding is whitespace inside the object.
        body = valid[:-1] + b" " * (size - len(valid)) + b"}"
        with rolled_back():
            logs = list(CallbackLog.objects.values_list("pk", flat=True))
            response = post(daraja, url_for(name, stk), body)

            assert response.status_code == 200
            log = CallbackLog.objects.exclude(pk__in=logs).get()
            if size > 4096:
                assert bytes(log.body) == body[:4096] and log.status == CallbackLog.Status.INVALID
                assert "larger than 4096 bytes" in log.error and not MpesaTransaction.objects.exists()
            else:
                assert bytes(log.body) == body and log.status == CallbackLog.Status.PROCESSED


# --- C2B -------------------------------------------------------------------------------------------

@HOSTILE
@given(data=st.data(), content_type=CONTENT_TYPES, name=st.sampled_from(["c2b-confirmation", "c2b-validation"]))
def test_a_mutated_c2b_notice_is_stored_as_sent_and_entered_whole_or_not_at_all(
        daraja, stk, data, content_type, name):
    base = json.loads(c2b_confirmation("RKTQDM7W6S", bill_ref=stk.sale.receipt_number, shortcode="174379"))
    body = data.draw(encoded(data.draw(mutated(base))))
    with rolled_back():
        logs, before = list(CallbackLog.objects.values_list("pk", flat=True)), books()
        response = post(daraja, url_for(name, stk), body, content_type)

        log = assert_stored_and_answered(response, name, body, logs)
        after = books()
        if log.status != CallbackLog.Status.PROCESSED or name == "c2b-validation":
            assert after == before, log.error
        else:
            new = [row for row in after["ledger"] if row not in before["ledger"]]
            assert len(new) <= 1
            for receipt, amount, *_ in new:
                assert receipt == log.trans_id and 0 < amount < 10**10
        assert check_books() == []


@pytest.mark.parametrize("amount", ["116.00", 116, "116", 116.0, " 116 ", "1.16e2"])
def test_a_c2b_amount_written_any_way_is_read_as_the_same_shillings(daraja, amount):
    """T33."""
    body = json.dumps({**json.loads(c2b_confirmation("RKTQDM7W6S")), "TransAmount": amount}).encode()
    post(daraja, reverse("mpesa:c2b-confirmation"), body)

    assert MpesaTransaction.objects.get().amount == Decimal("116.00")


@pytest.mark.parametrize("amount", ["116.001", 116.5001, "1e10", 10**12, "0", "-116", "NaN", "Infinity", True])
def test_a_c2b_amount_that_is_not_shillings_and_cents_is_kept_as_invalid(daraja, amount):
    """T33: money the ledger cannot hold exactly is never rounded into it."""
    body = json.dumps({**json.loads(c2b_confirmation("RKTQDM7W6S")), "TransAmount": amount}).encode()
    assert post(daraja, reverse("mpesa:c2b-confirmation"), body).json() == ACCEPTED

    log = CallbackLog.objects.get()
    assert log.status == CallbackLog.Status.INVALID and bytes(log.body) == body
    assert not MpesaTransaction.objects.exists()


# --- Where it came from ---------------------------------------------------------------------------

def as_ipv4_if_mapped(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    return str(getattr(address, "ipv4_mapped", None) or address)


@HOSTILE
@given(proxies=st.integers(0, 2), written=st.lists(st.sampled_from(SAFARICOM_IPS) | IP_ADDRESSES | HEADER_TEXT,
                                                    max_size=4),
       peer=IP_ADDRESSES.filter(lambda ip: as_ipv4_if_mapped(ip) not in SAFARICOM_IPS), name=st.sampled_from(PATHS))
def test_an_address_the_caller_writes_never_makes_it_safaricom(daraja, stk, settings, proxies, written, peer, name):
    """T20/T21: the caller's own entries sit left of what our proxies append, and are ignored."""
    settings.MPESA_ENVIRONMENT = "production"
    settings.MPESA_TRUSTED_PROXY_COUNT = proxies
    seen_by_proxies = written + [peer] + [f"10.0.0.{n}" for n in range(1, proxies)]
    forwarded = ", ".join(seen_by_proxies) if proxies else ", ".join(written)
    remote = f"10.0.0.{proxies}" if proxies else peer
    body = stk_success(stk.checkout_request_id, amount=116)
    with rolled_back():
        logs, before = list(CallbackLog.objects.values_list("pk", flat=True)), books()
        response = post(daraja, url_for(name, stk), body, REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)

        log = assert_stored_and_answered(response, name, body, logs)
        assert log.status == CallbackLog.Status.REJECTED and log.source_ip == as_ipv4_if_mapped(peer)
        assert books() == before


@HOSTILE
@given(proxies=st.integers(1, 2), written=st.lists(IP_ADDRESSES | HEADER_TEXT, max_size=4),
       safaricom=st.sampled_from(SAFARICOM_IPS))
def test_safaricom_behind_our_proxies_is_believed_whatever_the_caller_wrote_first(
        daraja, stk, settings, proxies, written, safaricom):
    settings.MPESA_ENVIRONMENT = "production"
    settings.MPESA_TRUSTED_PROXY_COUNT = proxies
    forwarded = ", ".join(written + [safaricom] + [f"10.0.0.{n}" for n in range(1, proxies)])
    body = stk_success(stk.checkout_request_id, amount=116)
    with rolled_back():
        response = post(daraja, url_for("stk-callback+token", stk), body, REMOTE_ADDR=f"10.0.0.{proxies}",
                        HTTP_X_FORWARDED_FOR=forwarded)

        assert response.json() == ACCEPTED
        assert CallbackLog.objects.get().source_ip == safaricom
        assert Sale.objects.get(pk=stk.sale_id).status == Sale.Status.COMPLETED


@pytest.mark.parametrize("remote", [f"::ffff:{SAFARICOM_IPS[0]}", SAFARICOM_IPS[0]])
def test_safaricom_seen_by_a_dual_stack_listener_is_believed(daraja, stk, settings, remote):
    settings.MPESA_ENVIRONMENT = "production"
    post(daraja, url_for("stk-callback+token", stk), stk_success(stk.checkout_request_id, amount=116),
         REMOTE_ADDR=remote)

    assert CallbackLog.objects.get().source_ip == SAFARICOM_IPS[0]
    assert Sale.objects.get(pk=stk.sale_id).status == Sale.Status.COMPLETED


@HOSTILE
@given(remote=HEADER_TEXT | IP_ADDRESSES, forwarded=HEADER_TEXT, proxies=st.integers(0, 3),
       name=st.sampled_from(PATHS))
@example(remote="fe80::1%eth0", forwarded="", proxies=0, name="stk-callback")
@example(remote="10.0.0.1", forwarded="fe80::1%eth0", proxies=1, name="c2b-confirmation")
@example(remote="", forwarded="", proxies=0, name="stk-callback")
def test_a_garbled_source_address_is_stored_and_rejected_not_a_server_error(
        daraja, stk, settings, remote, forwarded, proxies, name):
    settings.MPESA_ENVIRONMENT = "production"
    settings.MPESA_TRUSTED_PROXY_COUNT = proxies
    body = stk_success(stk.checkout_request_id, amount=116)
    with rolled_back():
        logs, before = list(CallbackLog.objects.values_list("pk", flat=True)), books()
        response = post(daraja, url_for(name, stk), body, REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)

        log = assert_stored_and_answered(response, name, body, logs)
        if log.source_ip not in SAFARICOM_IPS:
            assert log.status == CallbackLog.Status.REJECTED and books() == before


# --- Path tokens -----------------------------------------------------------------------------------

SEGMENTS = st.text(min_size=1, max_size=60).map(lambda s: quote(s, safe="")) | st.sampled_from(
    ["%00", "%00abc", "..", "%2e%2e", "%2F", "token%0a", "%E2%80%AE", "%FF%FE", "a" * 300])


@HOSTILE
@given(segment=SEGMENTS)
@example(segment="%00")
def test_a_wrong_per_request_token_is_stored_rejected_and_changes_nothing(daraja, stk, segment):
    """T19, development paths: the token is the only thing that names the request."""
    url = reverse("mpesa:stk-callback") + "/" + segment
    body = stk_success(stk.checkout_request_id, amount=116)
    with rolled_back():
        logs, before = list(CallbackLog.objects.values_list("pk", flat=True)), books()
        response = post(daraja, url, body)

        if response.status_code == 404:  # a segment that is not one path segment ("..", "%2F")
            assert not CallbackLog.objects.exclude(pk__in=logs).exists()
        else:
            log = assert_stored_and_answered(response, "stk-callback", body, logs)
            assert log.status == CallbackLog.Status.REJECTED and "Unknown callback token" in log.error
        assert books() == before


@HOSTILE
@given(secret=SEGMENTS, name=st.sampled_from(PATHS))
def test_a_wrong_or_missing_path_secret_is_a_404_and_stores_nothing(daraja, stk, production_paths, secret, name):  # noqa: F811
    """T19, production paths: /hooks/<MPESA_CALLBACK_TOKEN>/…; anything else is not a callback URL."""
    right = url_for(name, stk)
    assert right.startswith("/hooks/s3cret-Token-123/")
    wrong = [right.replace("/s3cret-Token-123/", f"/{secret}/"), right.replace("/s3cret-Token-123/", "/"),
             right.replace("/hooks/s3cret-Token-123/", "/mpesa/")]
    for url in wrong:
        if secret == "s3cret-Token-123":
            continue
        response = post(daraja, url, stk_success(stk.checkout_request_id, amount=116))
        assert response.status_code == 404, url
    assert not CallbackLog.objects.exists()
    assert Sale.objects.get(pk=stk.sale_id).status == Sale.Status.PENDING


@HOSTILE
@given(token=SEGMENTS)
@example(token="%00")
def test_the_right_secret_with_a_wrong_request_token_is_stored_and_rejected(
        daraja, stk, production_paths, token):  # noqa: F811
    body = stk_success(stk.checkout_request_id, amount=116)
    url = reverse("mpesa:stk-callback") + "/" + token
    with rolled_back():
        logs, before = list(CallbackLog.objects.values_list("pk", flat=True)), books()
        response = post(daraja, url, body)

        if response.status_code != 404:
            log = assert_stored_and_answered(response, "stk-callback", body, logs)
            assert log.status == CallbackLog.Status.REJECTED
        assert books() == before


@pytest.mark.parametrize("moment", ["00010101000000", "00010101023000", "99991231235959", "20191219102115"])
def test_a_transaction_time_at_the_ends_of_the_calendar_is_stored_and_read_back(daraja, stk, moment):
    stk_document = success_document(stk)
    stk_document["Body"]["stkCallback"]["CallbackMetadata"]["Item"][3]["Value"] = moment
    c2b_document = {**json.loads(c2b_confirmation("RKTQDM7W6S", shortcode="174379")), "TransTime": moment}

    post(daraja, url_for("stk-callback+token", stk), json.dumps(stk_document).encode())
    post(daraja, reverse("mpesa:c2b-confirmation"), json.dumps(c2b_document).encode())

    times = list(MpesaTransaction.objects.values_list("transaction_time", flat=True))  # read back: no error
    assert len(times) == 2
    if moment.startswith("2019"):
        assert all(time.year == 2019 for time in times)
    else:
        assert times == [None, None]
    assert check_books() == []
