"""Starting a prompt when Daraja cannot be reached (nothing sent: say so, free the phone and the
sale) versus when it took the push but did not answer (outcome unknown: wait, never re-push).

Over real HTTP: a closed port on 127.0.0.1, a listener that accepts and never answers, and one
that hands out a token then stays silent on the push.
"""

import socket

import pytest
from django.urls import reverse

from mpesa.models import StkRequest
from mpesa.services import NOT_SENT_MESSAGE
from mpesa.tests.test_daraja_errors import SilentListener, closed_port
from pos.models import Sale


@pytest.fixture
def quick(settings):
    settings.MPESA_CONNECT_TIMEOUT = 0.5
    settings.MPESA_READ_TIMEOUT = 0.5
    return settings


def create_mpesa_sale(client, product, phone="0708374149"):
    return client.post(reverse("pos:create-sale"), data={
        "items": [{"sku": product.sku, "quantity": 1}], "payment_method": "mpesa", "customer_phone": phone,
    }, content_type="application/json")


def start(client, sale_id, phone="0708374149"):
    return client.post(reverse("mpesa:start-stk", args=[sale_id]), data={"phone": phone},
                       content_type="application/json")


def poll(client, sale_id):
    return client.get(reverse("mpesa:check-payment", args=[sale_id])).json()


def assert_not_sent(client, response):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["success"] is False and body["error"] == NOT_SENT_MESSAGE
    sale = Sale.objects.get(pk=body["sale_id"])
    assert sale.status == Sale.Status.PENDING
    stk = StkRequest.objects.get(sale=sale)
    assert stk.status == StkRequest.Status.REFUSED and stk.resolved_at is not None
    status = poll(client, sale.pk)
    assert status["status"] == "failed" and status["message"] == NOT_SENT_MESSAGE
    assert status["payment_received"] is False and status["timeout"] is False
    return sale


def test_a_refused_connection_sends_nothing_and_the_same_prompt_can_go_out_at_once(
        daraja_sim, quick, cashier_client, product):  # noqa: F811
    quick.MPESA_BASE_URL = f"http://127.0.0.1:{closed_port()}"
    sale = assert_not_sent(cashier_client, create_mpesa_sale(cashier_client, product))

    # Daraja is back: the same amount to the same phone goes out now (no 2-minute wait, no
    # "already has a prompt open"), for the same sale.
    quick.MPESA_BASE_URL = daraja_sim.base_url
    response = start(cashier_client, sale.pk)
    assert response.status_code == 201, response.content
    assert "enter their M-Pesa PIN" in response.json()["message"]
    daraja_sim.deliver()
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED


def test_a_token_request_that_is_never_answered_sends_nothing(quick, cashier_client, product):
    # Accepts connections (the kernel's backlog) and never says a word.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        quick.MPESA_BASE_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
        sale = assert_not_sent(cashier_client, create_mpesa_sale(cashier_client, product))
    assert "already has an M-Pesa prompt open" not in start(cashier_client, sale.pk).json()["error"]


def test_a_push_that_got_no_answer_is_unknown_and_never_sent_again(quick, cashier_client, product):
    listener = SilentListener()
    quick.MPESA_BASE_URL = f"http://127.0.0.1:{listener.port}"
    try:
        response = create_mpesa_sale(cashier_client, product)
        assert response.status_code == 201, response.content
        assert "did not answer in time" in response.json()["message"]
        sale_id = response.json()["sale_id"]
        assert StkRequest.objects.get().status == StkRequest.Status.UNKNOWN
        assert poll(cashier_client, sale_id)["status"] == "waiting"

        again = start(cashier_client, sale_id)
        assert again.status_code == 400 and "already open" in again.json()["error"]
    finally:
        listener.close()
    assert len(listener.received) == 1  # one push, never repeated
