"""POST /cashier/sales/<id>/mpesa: the refusals made before Daraja is ever called.

The prompts that do go out are tested through the simulator in test_stk_end_to_end.py.
"""

from decimal import Decimal

import pytest
from django.db import IntegrityError
from django.test import Client
from django.urls import reverse

from mpesa.models import StkRequest
from mpesa.services import NOT_SENT_MESSAGE
from mpesa.tests.factories import StkRequestFactory, make_pending_sale
from pos.services import take_cash
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory

pytestmark = pytest.mark.django_db


def start(client, sale, **body):
    return client.post(reverse("mpesa:start-stk", args=[sale.pk]), data=body, content_type="application/json")


def refusal(response):
    assert response.status_code == 400, response.content
    assert response.json()["success"] is False
    return response.json()["error"]


def test_a_bad_phone_number_is_refused_in_words(cashier_client, sale):
    assert "wrong number of digits" in refusal(start(cashier_client, sale, phone="0712 345"))
    assert "Enter the customer's M-Pesa phone number" in refusal(start(cashier_client, sale, phone=""))
    assert not StkRequest.objects.exists()


@pytest.mark.parametrize("amount, words", [
    ("99.50", "whole shillings"), ("0", "whole shillings"), ("abc", "number of shillings"),
    ("117", "more than the KES 116 still to pay"),
])
def test_a_bad_amount_is_refused_in_words(cashier_client, sale, amount, words):
    assert words in refusal(start(cashier_client, sale, phone="0708374149", amount=amount))
    assert not StkRequest.objects.exists()


def test_a_second_prompt_while_one_is_open_is_refused(cashier_client, sale):
    StkRequestFactory(sale=sale, amount=116)
    assert "already open" in refusal(start(cashier_client, sale, phone="0708374149"))
    assert StkRequest.objects.count() == 1


def test_a_prompt_to_a_phone_busy_with_another_sale_is_refused(cashier_client, cashier, till, product, sale):
    StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product), phone="254708374149")
    assert "already has an M-Pesa prompt open" in refusal(start(cashier_client, sale, phone="0708374149"))


def test_the_same_amount_to_the_same_phone_within_two_minutes_is_refused(cashier_client, sale):
    StkRequestFactory(sale=sale, amount=116, status=StkRequest.Status.FAILED, result_code="1032")
    error = refusal(start(cashier_client, sale, phone="0708374149"))
    assert "same amount (KES 116) to the same phone within 2 minutes" in error and "take another method" in error


def test_a_paid_or_cancelled_sale_takes_no_prompt(cashier_client, sale):
    take_cash(sale_id=sale.pk, tendered=Decimal("200"))
    assert "is completed" in refusal(start(cashier_client, sale, phone="0708374149"))


def test_another_shops_sale_is_404(client, sale):
    other_shop = ShopFactory(code="OTHR")
    client.force_login(StaffFactory(shop=other_shop, default_till=TillFactory(shop=other_shop)).user)
    assert start(client, sale, phone="0708374149").status_code == 404


def test_the_endpoint_needs_a_csrf_token(cashier, sale):
    client = Client(enforce_csrf_checks=True)
    client.force_login(cashier)
    assert start(client, sale, phone="0708374149").status_code == 403
    assert not StkRequest.objects.exists()


def test_the_database_allows_one_open_prompt_per_sale(sale):
    StkRequestFactory(sale=sale, status=StkRequest.Status.PENDING)
    with pytest.raises(IntegrityError):
        StkRequestFactory(sale=sale, status=StkRequest.Status.CREATED)


def test_a_refused_connection_sends_no_prompt_and_blocks_nothing(cashier_client, sale, settings):
    # The outcome-unknown case (a push sent but not answered) is in test_stk_start_unreachable.py.
    settings.MPESA_BASE_URL = "http://127.0.0.1:9"  # nothing listens there: a real connection failure
    settings.MPESA_CONNECT_TIMEOUT = 2

    assert refusal(start(cashier_client, sale, phone="0708374149")) == NOT_SENT_MESSAGE
    stk = StkRequest.objects.get()
    assert stk.status == StkRequest.Status.REFUSED and stk.checkout_request_id is None
    # Tried again at once: the same refusal, not "already open" or the 2-minute rule.
    assert refusal(start(cashier_client, sale, phone="0708374149")) == NOT_SENT_MESSAGE
    assert cashier_client.get(reverse("mpesa:check-payment", args=[sale.pk])).json()["status"] == "failed"
