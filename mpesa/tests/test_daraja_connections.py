"""The Daraja client reuses a connection while it is fresh, and opens a new one once it has sat idle
longer than MPESA_CONNECTION_IDLE_SECONDS: a server may close an idle keep-alive connection just as a
push goes out on it, and then nobody knows whether the prompt reached the customer."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mpesa.daraja import DarajaClient

QUERY = "/mpesa/stkpushquery/v1/query"


class KeepAliveDaraja(ThreadingHTTPServer):
    """HTTP/1.1 with keep-alive; counts the connections its clients open."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def _serve(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/oauth"):
            body = {"access_token": "token", "expires_in": "3599"}
        else:
            body = {"ResponseCode": "0", "ResultCode": "0", "ResultDesc": "The service request is processed "
                    "successfully.", "CheckoutRequestID": "ws_CO_1", "MerchantRequestID": "1-1"}
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _serve

    def log_message(self, *args):
        pass


@pytest.fixture
def daraja(settings, db):
    server = KeepAliveDaraja()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    settings.MPESA_BASE_URL = f"http://127.0.0.1:{server.server_port}"
    settings.MPESA_CONNECTION_IDLE_SECONDS = 0.3
    yield server
    server.shutdown()
    server.server_close()


def test_queries_in_quick_succession_share_one_connection(daraja):
    client = DarajaClient()

    for _ in range(3):
        assert client.stk_query(checkout_request_id="ws_CO_1").result_code == 0

    assert daraja.connections == 1


def test_a_connection_idle_past_the_limit_is_not_used_again(daraja):
    client = DarajaClient()
    client.stk_query(checkout_request_id="ws_CO_1")

    time.sleep(0.5)
    assert client.stk_query(checkout_request_id="ws_CO_1").result_code == 0

    assert daraja.connections == 2
