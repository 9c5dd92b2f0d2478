"""How the client reads Daraja's failures, against a real local HTTP server that answers the way
Daraja and its gateways misbehave (HTML pages, spike arrest, silence, refused connections)."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.utils import timezone

from mpesa.daraja import (
    DarajaAuthError,
    DarajaBusy,
    DarajaClient,
    DarajaNotReached,
    DarajaRateLimited,
    DarajaRequestError,
    DarajaUnavailable,
)
from mpesa.models import DarajaCall

STK = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
OAUTH = "/oauth/v1/generate"
PUSH = dict(phone="0708374149", amount=116, account_reference="S-000123", description="Sale",
            callback_url="http://127.0.0.1:8000/hooks/stk/callback")
ACCEPTED = {
    "MerchantRequestID": "2654-4b64-97ff-b827b542881d3130",
    "CheckoutRequestID": "ws_CO_1007202409152617172396192",
    "ResponseCode": "0",
    "ResponseDescription": "Success. Request accepted for processing",
    "CustomerMessage": "Success. Request accepted for processing",
}


def answer(status=200, body=None, *, html=None, delay=0.0):
    if html is not None:
        return status, html.encode(), "text/html", delay
    raw = b"" if body is None else json.dumps(body).encode()
    return status, raw, "application/json", delay


class FakeDaraja(ThreadingHTTPServer):
    """Answers each path from a script: a list of answers, the last one repeating."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = {}
        self.received = []
        self.tokens_issued = 0
        self.lock = threading.Lock()

    def count(self, path):
        return sum(1 for request in self.received if request["path"] == path)

    def next_answer(self, path):
        with self.lock:
            if path == OAUTH and OAUTH not in self.script:
                self.tokens_issued += 1
                return answer(200, {"access_token": f"token-{self.tokens_issued}", "expires_in": "3599"})
            answers = self.script.get(path)
            if not answers:
                return answer(404, {"errorCode": "404.001.01", "errorMessage": "Resource not found"})
            return answers.pop(0) if len(answers) > 1 else answers[0]


class _Handler(BaseHTTPRequestHandler):
    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        self.server.received.append({
            "path": path, "method": self.command, "headers": dict(self.headers),
            "json": json.loads(body) if body else None,
        })
        status, raw, content_type, delay = self.server.next_answer(path)
        if delay:
            time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = _serve

    def log_message(self, *args):
        pass


@pytest.fixture
def daraja(settings, db):
    server = FakeDaraja()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    settings.MPESA_BASE_URL = f"http://127.0.0.1:{server.server_port}"
    settings.MPESA_READ_TIMEOUT = 0.5
    settings.MPESA_CONNECT_TIMEOUT = 0.5
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client():
    return DarajaClient()


def test_gateway_html_page_with_200_is_unavailable_and_the_push_is_sent_once(daraja, client):
    daraja.script[STK] = [answer(200, html="<html><body>Service Temporarily Unavailable</body></html>")]
    with pytest.raises(DarajaUnavailable) as failed:
        client.stk_push(**PUSH)
    assert "web page" in failed.value.message
    assert failed.value.http_status == 200
    assert daraja.count(STK) == 1


def test_spike_arrest_is_rate_limited_with_darajas_codes_kept(daraja, client):
    daraja.script[STK] = [answer(500, {"requestId": "11728-2929992-1", "errorCode": "500.003.02",
                                       "errorMessage": "Error Occurred: Spike Arrest Violation"})]
    with pytest.raises(DarajaRateLimited) as limited:
        client.stk_push(**PUSH)
    error = limited.value
    assert (error.error_code, error.request_id, error.http_status) == ("500.003.02", "11728-2929992-1", 500)
    assert "Spike Arrest Violation" in error.error_message
    assert "wait a moment" in error.message
    assert daraja.count(STK) == 1


def test_http_429_without_a_body_is_rate_limited(daraja, client):
    daraja.script[STK] = [answer(429)]
    with pytest.raises(DarajaRateLimited):
        client.stk_push(**PUSH)


def test_an_answer_slower_than_the_read_timeout_is_unavailable_and_never_re_pushed(daraja, client):
    daraja.script[STK] = [answer(200, ACCEPTED, delay=1.5)]
    started = time.monotonic()
    with pytest.raises(DarajaUnavailable) as failed:
        client.stk_push(**PUSH)
    assert time.monotonic() - started < 1.4
    assert "did not answer" in failed.value.message
    assert daraja.count(STK) == 1


def test_a_refused_connection_is_unavailable_in_words(settings, db, client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.MPESA_BASE_URL = f"http://127.0.0.1:{port}"
    with pytest.raises(DarajaUnavailable) as failed:
        client.stk_push(**PUSH)
    assert "refused" in failed.value.message
    assert DarajaCall.objects.filter(endpoint=OAUTH, status_code=None).count() == 2  # token: one retry


def test_wrong_consumer_key_or_secret_is_an_auth_error_naming_the_settings(daraja, client):
    daraja.script[OAUTH] = [answer(400)]
    with pytest.raises(DarajaAuthError) as refused:
        client.access_token()
    assert "MPESA_CONSUMER_KEY" in refused.value.message
    assert "sandbox keys do not work on production" in refused.value.message
    assert refused.value.error_message == "Bad Request"
    assert daraja.count(OAUTH) == 1


# Transactional: the threads write their DarajaCall rows on their own connections.
@pytest.mark.django_db(transaction=True)
def test_concurrent_callers_with_refused_credentials_ask_daraja_once(daraja, client):
    daraja.script[OAUTH] = [answer(400)]
    start = threading.Barrier(10)

    def ask(_):
        start.wait()
        with pytest.raises(DarajaAuthError):
            client.access_token()
        connection.close()

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(ask, range(10)))
    assert daraja.count(OAUTH) == 1
    with pytest.raises(DarajaAuthError):
        client.access_token(fresh=True)  # mpesa_check always asks again
    assert daraja.count(OAUTH) == 2


@pytest.mark.parametrize("expires_in", ["3599", 3599, "3599.0"])
def test_expires_in_may_be_a_string_or_a_number(daraja, client, expires_in):
    daraja.script[OAUTH] = [answer(200, {"access_token": "abc", "expires_in": expires_in})]
    assert client.access_token() == "abc"
    assert client.access_token() == "abc"
    assert daraja.count(OAUTH) == 1


def test_token_request_uses_basic_auth_and_get(daraja, client):
    client.access_token()
    request = daraja.received[0]
    assert request["method"] == "GET"
    assert request["headers"]["Authorization"].startswith("Basic ")


def test_a_token_is_retried_once_after_a_gateway_failure(daraja, client):
    daraja.script[OAUTH] = [answer(503, html="<html>bad gateway</html>"),
                            answer(200, {"access_token": "second", "expires_in": "3599"})]
    assert client.access_token() == "second"
    assert daraja.count(OAUTH) == 2


def test_invalid_token_answer_renews_the_token_once_and_resends(daraja, client):
    daraja.script[STK] = [answer(404, {"requestId": "r1", "errorCode": "404.001.03",
                                       "errorMessage": "Invalid Access Token"}), answer(200, ACCEPTED)]
    result = client.stk_push(**PUSH)
    assert result.checkout_request_id == ACCEPTED["CheckoutRequestID"]
    pushes = [r for r in daraja.received if r["path"] == STK]
    assert [p["headers"]["Authorization"] for p in pushes] == ["Bearer token-1", "Bearer token-2"]
    assert daraja.count(OAUTH) == 2


def test_a_token_refused_twice_is_an_auth_error_not_a_loop(daraja, client):
    daraja.script[STK] = [answer(404, {"errorCode": "404.001.03", "errorMessage": "Invalid Access Token"})]
    with pytest.raises(DarajaAuthError) as refused:
        client.stk_push(**PUSH)
    assert refused.value.error_code == "404.001.03"
    assert daraja.count(STK) == 2


def test_a_product_not_enabled_on_the_app_is_explained(daraja, client):
    daraja.script["/mpesa/c2b/v2/registerurl"] = [answer(401, {
        "errorCode": "401.003.01",
        "errorMessage": "Error Occurred - Invalid Access Token - Invalid API call as no apiproduct match found"})]
    with pytest.raises(DarajaAuthError) as refused:
        client.register_c2b_urls(confirmation_url="http://127.0.0.1:8000/hooks/c2b/confirmation",
                                 validation_url="http://127.0.0.1:8000/hooks/c2b/validation")
    assert "MPESA_C2B_VERSION" in refused.value.message
    assert daraja.count("/mpesa/c2b/v2/registerurl") == 1


def test_urls_left_on_the_old_broker_platform_are_explained(daraja, client):
    daraja.script["/mpesa/c2b/v2/registerurl"] = [answer(500, {
        "errorCode": "500.003.1001", "errorMessage": "Duplicate notification info, SP ID is 107031"})]
    with pytest.raises(DarajaRequestError) as refused:
        client.register_c2b_urls(confirmation_url="http://127.0.0.1:8000/hooks/c2b/confirmation",
                                 validation_url="http://127.0.0.1:8000/hooks/c2b/validation")
    assert "older broker platform" in refused.value.message


def test_subscriber_locked_is_busy(daraja, client):
    daraja.script[STK] = [answer(500, {"errorCode": "500.001.1001", "errorMessage":
                                       "Unable to lock subscriber, a transaction is already in process "
                                       "for the current subscriber"})]
    with pytest.raises(DarajaBusy) as busy:
        client.stk_push(**PUSH)
    assert "try again in a minute" in busy.value.message


def test_wrong_passkey_is_an_auth_error(daraja, client):
    daraja.script[STK] = [answer(500, {"errorCode": "500.001.1001",
                                       "errorMessage": "[MerchantValidate] - Wrong credentials"})]
    with pytest.raises(DarajaAuthError) as refused:
        client.stk_push(**PUSH)
    assert "MPESA_PASSKEY" in refused.value.message


def test_unknown_shortcode_is_explained_as_paybill_or_store_number(daraja, client):
    daraja.script[STK] = [answer(500, {"errorCode": "500.001.1001", "errorMessage": "Merchant does not exist"})]
    with pytest.raises(DarajaRequestError) as refused:
        client.stk_push(**PUSH)
    assert "store (head office) number" in refused.value.message


def test_bad_field_answers_are_put_in_words(daraja, client):
    daraja.script[STK] = [answer(400, {"requestId": "x", "errorCode": "400.002.02",
                                       "errorMessage": "Bad Request - Invalid PhoneNumber"})]
    with pytest.raises(DarajaRequestError) as refused:
        client.stk_push(**PUSH)
    assert "not a valid Safaricom number" in refused.value.message
    assert refused.value.http_status == 400


def test_a_5xx_on_a_push_is_unavailable_and_never_retried(daraja, client):
    daraja.script[STK] = [answer(503, {"errorCode": "503.001", "errorMessage": "Service Unavailable"})]
    with pytest.raises(DarajaUnavailable):
        client.stk_push(**PUSH)
    assert daraja.count(STK) == 1


def test_query_being_processed_is_pending(daraja, client):
    daraja.script[QUERY] = [answer(500, {"requestId": "ws_CO_1", "errorCode": "500.001.1001",
                                         "errorMessage": "The transaction is being processed"})]
    result = client.stk_query(checkout_request_id="ws_CO_1")
    assert result.pending is True and result.result_code is None


def test_a_query_is_retried_once_after_a_network_failure(daraja, client):
    daraja.script[QUERY] = [
        answer(502, html="<html>Bad gateway</html>"),
        answer(200, {"ResponseCode": "0", "ResponseDescription": "The service request has been accepted successsfully",
                     "MerchantRequestID": "m", "CheckoutRequestID": "ws_CO_1", "ResultCode": "1032",
                     "ResultDesc": "Request cancelled by user"}),
    ]
    result = client.stk_query(checkout_request_id="ws_CO_1")
    assert (result.pending, result.result_code, result.result_desc) == (False, 1032, "Request cancelled by user")
    assert daraja.count(QUERY) == 2


def test_query_with_a_non_numeric_result_code_is_final_and_keeps_the_code(daraja, client):
    daraja.script[QUERY] = [answer(200, {"ResponseCode": "0", "CheckoutRequestID": "ws_CO_1",
                                         "ResultCode": "SFC_IC0003", "ResultDesc": "The operator does not exist"})]
    result = client.stk_query(checkout_request_id="ws_CO_1")
    assert result.pending is False and result.result_code is None
    assert result.raw["ResultCode"] == "SFC_IC0003"


def test_pull_flattens_nested_records_and_reads_1001_as_no_records(daraja, client):
    path = "/pulltransactions/v1/query"
    record = {"transactionId": "NLJ7RT61SV", "trxDate": "2020-08-05T10:13:00Z", "msisdn": "722000000",
              "transactiontype": "c2b-pay-bill-debit", "billreference": "S-1", "amount": "116",
              "organizationname": "Demo"}
    daraja.script[path] = [
        answer(200, {"ResponseRefID": "r", "ResponseCode": "1000", "ResponseMessage": "Success",
                     "TotalPages": "2", "Response": [[record, dict(record, transactionId="NLJ7RT61SW")]]}),
        answer(200, {"ResponseCode": "1001", "ResponseMessage": "No records found or Organization Name not available"}),
    ]
    end = timezone.now()
    page = client.pull_query(start=end - timedelta(hours=2), end=end)
    assert [r["transactionId"] for r in page.records] == ["NLJ7RT61SV", "NLJ7RT61SW"]
    assert page.total_pages == 2
    empty = client.pull_query(start=end - timedelta(hours=2), end=end, offset=1)
    assert empty.records == [] and empty.total_pages == 0
    sent = [r["json"] for r in daraja.received if r["path"] == path]
    assert sent[1]["OffSetValue"] == "1"


def test_every_call_is_logged_without_secrets_or_full_phone_numbers(daraja, client):
    daraja.script[STK] = [answer(200, ACCEPTED)]
    client.stk_push(**dict(PUSH, callback_url="http://127.0.0.1:8000/hooks/AbCdEfGhIjKlMnOpQrStUv/stk"))
    token_call, push_call = DarajaCall.objects.order_by("id")
    assert (token_call.endpoint, token_call.method, token_call.status_code) == (OAUTH, "GET", 200)
    assert token_call.response_body["access_token"] == "[redacted]"
    assert (push_call.endpoint, push_call.status_code, push_call.outcome) == (STK, 200, "ok")
    assert push_call.request_id == ACCEPTED["CheckoutRequestID"]
    logged = json.dumps([push_call.request_body, push_call.response_body, token_call.response_body])
    sent = daraja.received[-1]["json"]
    assert sent["Password"] not in logged and "token-1" not in logged
    assert "254708374149" not in logged and "2547*****149" in logged
    assert "AbCdEfGhIjKlMnOpQrStUv" not in logged


def test_a_failed_call_is_logged_with_its_outcome(daraja, client):
    daraja.script[STK] = [answer(500, {"requestId": "rq-9", "errorCode": "500.003.02",
                                       "errorMessage": "Spike Arrest Violation"})]
    with pytest.raises(DarajaRateLimited):
        client.stk_push(**PUSH)
    call = DarajaCall.objects.get(endpoint=STK)
    assert call.status_code == 500 and call.request_id == "rq-9"
    assert call.outcome.startswith("DarajaRateLimited: 500.003.02")


class SilentListener:
    """Hands out a token, then takes each request and answers nothing, or hangs up after reading."""

    def __init__(self, *, hang_up: bool = False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.hang_up, self.received, self.open = hang_up, [], []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            conn.settimeout(2)
            try:
                request = conn.recv(65536)
            except OSError:
                continue
            if request.startswith(b"GET /oauth"):
                token = b'{"access_token": "silent-token", "expires_in": "3599"}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(token), token))
                conn.close()
                continue
            self.received.append(request)
            if self.hang_up:
                conn.close()

    def close(self):
        for conn in self.open:
            conn.close()
        self.sock.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_a_request_never_sent(settings, db, client):
    settings.MPESA_BASE_URL = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(DarajaNotReached) as failed:
        client.stk_push(**PUSH)
    assert failed.value.request_sent is False
    assert "was not sent" in failed.value.message and "refused" in failed.value.message


def test_an_unresolvable_host_is_a_request_never_sent(settings, db, client):
    settings.MPESA_BASE_URL = "http://daraja.invalid"
    with pytest.raises(DarajaNotReached):
        client.stk_query(checkout_request_id="ws_CO_1")


def test_a_token_request_that_times_out_means_the_push_was_never_sent(daraja, client):
    daraja.script[OAUTH] = [answer(200, {"access_token": "t", "expires_in": "3599"}, delay=1.5)]
    with pytest.raises(DarajaNotReached) as failed:
        client.stk_push(**PUSH)
    assert failed.value.request_sent is False and "not sent" in failed.value.message
    assert daraja.count(STK) == 0


def test_a_token_gateway_failure_means_the_push_was_never_sent(daraja, client):
    daraja.script[OAUTH] = [answer(503, html="<html>Service Unavailable</html>")]
    with pytest.raises(DarajaNotReached):
        client.stk_push(**PUSH)
    assert daraja.count(STK) == 0


def test_a_push_that_got_no_answer_is_sent_and_its_outcome_unknown(daraja, client):
    daraja.script[STK] = [answer(200, ACCEPTED, delay=1.5)]
    with pytest.raises(DarajaUnavailable) as failed:
        client.stk_push(**PUSH)
    assert not isinstance(failed.value, DarajaNotReached) and failed.value.request_sent is True


@pytest.mark.parametrize("hang_up", [False, True], ids=["silent", "hangs-up-after-reading"])
def test_a_connection_that_takes_the_request_without_answering_leaves_the_outcome_unknown(
        settings, db, client, hang_up):
    listener = SilentListener(hang_up=hang_up)
    settings.MPESA_BASE_URL = f"http://127.0.0.1:{listener.port}"
    settings.MPESA_READ_TIMEOUT = 0.5
    try:
        with pytest.raises(DarajaUnavailable) as failed:
            client.stk_query(checkout_request_id="ws_CO_1")
    finally:
        listener.close()
    assert failed.value.request_sent is True and not isinstance(failed.value, DarajaNotReached)
    assert listener.received and listener.received[0].startswith(b"POST /mpesa/stkpushquery")
