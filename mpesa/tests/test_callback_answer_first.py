"""Safaricom is answered as soon as its callback is stored; the callback is applied after the answer
is sent (when the WSGI server closes the response), and by the sweep if the worker dies in between."""

import io
import time
from datetime import timedelta

import pytest
import requests
from django.core.handlers.wsgi import WSGIHandler
from django.utils import timezone

from mpesa import services
from mpesa.models import CallbackLog, StkRequest
from mpesa.tests.factories import StkRequestFactory, make_pending_sale, stk_success
from pos.models import Sale

URL = "/mpesa/stk/callback"
# Committed for real: a WSGI server's request closes the database connection the test would hold.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stk(cashier, till, product):
    return StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product), amount=116)


def answer(body: bytes):
    """The application's WSGI answer to a callback, as a server gets it before closing it."""
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": URL, "SERVER_NAME": "testserver", "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "196.201.214.200", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
    }
    status = []
    response = WSGIHandler()(environ, lambda line, headers, exc_info=None: status.append(line))
    return status[0], b"".join(response), response


def test_the_answer_is_ready_before_the_callback_is_applied_and_closing_applies_it(stk):
    status, content, response = answer(stk_success(stk.checkout_request_id, amount=116))

    assert status == "200 OK" and content == b'{"ResultCode": 0, "ResultDesc": "Accepted"}'
    assert CallbackLog.objects.get().status == CallbackLog.Status.RECEIVED
    assert Sale.objects.get().status == Sale.Status.PENDING

    response.close()

    assert CallbackLog.objects.get().status == CallbackLog.Status.PROCESSED
    assert Sale.objects.get().status == Sale.Status.COMPLETED
    assert StkRequest.objects.get().status == StkRequest.Status.PAID


def test_a_callback_answered_by_a_worker_that_died_before_applying_it_is_applied_by_the_sweep(stk):
    status, _, _ = answer(stk_success(stk.checkout_request_id, amount=116))  # never closed: the worker died
    assert status == "200 OK"
    CallbackLog.objects.update(received_at=timezone.now() - timedelta(seconds=10))

    assert services.rerun_callbacks() == {"callbacks paid": 1}
    assert Sale.objects.get().status == Sale.Status.COMPLETED


def test_over_real_http_the_sale_completes_after_the_answer(live_server, stk, settings):
    settings.MPESA_CALLBACK_ALLOWED_IPS = ["127.0.0.1"]
    response = requests.post(live_server.url + URL, data=stk_success(stk.checkout_request_id, amount=116),
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 200 and response.json() == services.ACCEPTED

    deadline = time.monotonic() + 10
    while Sale.objects.get().status != Sale.Status.COMPLETED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Sale.objects.get().status == Sale.Status.COMPLETED
    assert CallbackLog.objects.get().status == CallbackLog.Status.PROCESSED


def test_with_answer_first_off_the_callback_is_applied_before_the_answer(stk, settings):
    settings.MPESA_CALLBACK_ANSWER_FIRST = False
    status, _, _ = answer(stk_success(stk.checkout_request_id, amount=116))

    assert status == "200 OK" and Sale.objects.get().status == Sale.Status.COMPLETED
