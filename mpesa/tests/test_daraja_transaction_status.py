"""Transaction Status against the Daraja simulator over HTTP."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mpesa.daraja import DarajaAuthError, DarajaRequestError, get_client
from mpesa.models import DarajaCall


class _ResultListener(BaseHTTPRequestHandler):
    """Stands in for the shop's Transaction Status ResultURL."""

    def do_POST(self):
        self.server.received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def listener():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ResultListener)
    server.received = []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_port}"
    server.urls = {"result_url": origin + "/status/result", "timeout_url": origin + "/status/timeout"}
    yield server
    server.shutdown()
    server.server_close()


def test_status_by_receipt_is_accepted_and_its_result_posted_to_the_result_url(daraja_sim, listener):
    payment = daraja_sim.send_c2b(amount=116, account="S-1")
    daraja_sim.deliver()
    accepted = get_client().transaction_status(transaction_id=payment.receipt_number, **listener.urls)
    assert accepted.response_code == "0"
    assert accepted.conversation_id.startswith("AG_") and accepted.originator_conversation_id
    daraja_sim.deliver()
    [(path, body)] = listener.received
    result = body["Result"]
    assert path == "/status/result"
    assert (result["ResultCode"], result["ConversationID"]) == (0, accepted.conversation_id)
    parameters = {p["Key"]: p.get("Value") for p in result["ResultParameters"]["ResultParameter"]}
    assert parameters["ReceiptNo"] == payment.receipt_number


def test_status_sends_the_initiator_and_redacts_the_security_credential(daraja_sim, listener):
    get_client().transaction_status(original_conversation_id="AG_20260101_000000000000000", **listener.urls)
    call = DarajaCall.objects.get(endpoint="/mpesa/transactionstatus/v1/query")
    assert call.request_body["Initiator"] == "testapi"
    assert call.request_body["SecurityCredential"] == "[redacted]"


def test_status_without_initiator_credentials_says_which_settings(daraja_sim, settings, listener):
    settings.MPESA_SECURITY_CREDENTIAL = ""
    with pytest.raises(DarajaAuthError) as refused:
        get_client().transaction_status(transaction_id="NLJ7RT61SV", **listener.urls)
    assert "MPESA_SECURITY_CREDENTIAL" in refused.value.message


def test_status_needs_a_receipt_or_a_conversation_id(daraja_sim, listener):
    with pytest.raises(DarajaRequestError):
        get_client().transaction_status(**listener.urls)
