"""The Daraja client reuses a connection while it is fresh, and opens a new one once it has sat idle
longer than MPESA_CONNECTION_IDLE_SECONDS: a server may close an idle keep-alive connection just as a
push goes out on it, and then nobody knows whether the prompt reached the customer."""

import threading
import time

import pytest

from mpesa.daraja import DarajaClient
from mpesa.tests.test_daraja_errors import QUERY, FakeDaraja, _Handler, answer


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1


@pytest.fixture
def daraja(settings, db):
    server = FakeDaraja()
    server.RequestHandlerClass, server.connections = _KeepAliveHandler, 0
    server.script[QUERY] = [answer(200, {"ResponseCode": "0", "ResultCode": "0", "ResultDesc": "Processed.",
                                         "CheckoutRequestID": "ws_CO_1", "MerchantRequestID": "1-1"})]
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
