"""Talking to the simulator as the outside world does: HTTP with requests, and a small HTTP
listener standing in for the shop's callback endpoints."""

import base64
import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.conf import settings


TEST_PHONE = "254708374149"


class Listener:
    """Records every POST (path, headers, JSON body, arrival time) and answers `reply` with
    HTTP 200 after `delay` seconds."""

    def __init__(self):
        self.received = []
        self.reply = {"ResultCode": 0, "ResultDesc": "Accepted"}
        self.delay = 0.0
        self.on_post = None  # called with the JSON body while the sender waits for the answer
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                listener.received.append({
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": json.loads(raw),
                    "at": time.monotonic(),
                })
                if listener.on_post:
                    listener.on_post(listener.received[-1]["body"])
                time.sleep(listener.delay)
                payload = json.dumps(listener.reply).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the simulator stopped waiting (validation timeout)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def bodies(self, path: str) -> list[dict]:
        return [r["body"] for r in self.received if r["path"] == path]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


class Daraja:
    """A bare Daraja caller (deliberately not our client): token, then JSON POSTs."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self._token = None

    def token(self) -> str:
        if self._token is None:
            response = requests.get(
                f"{self.base_url}/oauth/v1/generate?grant_type=client_credentials",
                auth=(settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET), timeout=10,
            )
            assert response.status_code == 200, response.text
            self._token = response.json()["access_token"]
        return self._token

    def post(self, path: str, body: dict, *, token: str | None = None) -> requests.Response:
        return requests.post(
            self.base_url + path, json=body, timeout=15,
            headers={"Authorization": f"Bearer {token or self.token()}"},
        )


def password_for(shortcode: str, timestamp: str, passkey: str | None = None) -> str:
    return base64.b64encode(f"{shortcode}{passkey or settings.MPESA_PASSKEY}{timestamp}".encode()).decode()


def stk_body(callback_url: str, *, phone: str = TEST_PHONE, amount=1, **overrides) -> dict:
    timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
    shortcode = str(settings.MPESA_SHORTCODE)
    body = {
        "BusinessShortCode": int(shortcode),
        "Password": password_for(shortcode, timestamp),
        "Timestamp": timestamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": amount,
        "PartyA": phone,
        "PartyB": shortcode,
        "PhoneNumber": phone,
        "CallBackURL": callback_url,
        "AccountReference": "INV-000123",
        "TransactionDesc": "POS sale",
    }
    body.update(overrides)
    return body


def query_body(checkout_request_id: str) -> dict:
    timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
    shortcode = str(settings.MPESA_SHORTCODE)
    return {
        "BusinessShortCode": shortcode,
        "Password": password_for(shortcode, timestamp),
        "Timestamp": timestamp,
        "CheckoutRequestID": checkout_request_id,
    }


@pytest.fixture
def daraja(daraja_sim):  # noqa: F811
    return Daraja(daraja_sim.base_url)


@pytest.fixture
def push(daraja, listener):
    """push(phone=…, amount=…, **fields) → the sync response; callbacks go to /stk."""

    def push(**kwargs):
        return daraja.post("/mpesa/stkpush/v1/processrequest", stk_body(listener.url("/stk"), **kwargs))

    return push
