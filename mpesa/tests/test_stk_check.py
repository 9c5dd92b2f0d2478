"""POS_PAYMENT_CHECKS → check_stk_payment: `POST /cashier/create-sale` with M-Pesa refuses a prompt
that cannot go out before any sale exists, so a refusal writes nothing."""

from decimal import Decimal

import pytest
from django.urls import reverse

from mpesa.models import StkRequest
from mpesa.services import check_stk_payment
from mpesa.tests.factories import StkRequestFactory, make_pending_sale
from pos.services import SaleError
from pos.tests.utils import written_rows

pytestmark = pytest.mark.django_db


def create_mpesa_sale(client, product, phone, quantity=1):
    return client.post(reverse("pos:create-sale"), data={
        "items": [{"sku": product.sku, "quantity": quantity}], "payment_method": "mpesa", "customer_phone": phone,
    }, content_type="application/json")


def refused_writing_nothing(client, product, phone, quantity=1) -> str:
    before, requests = written_rows(), StkRequest.objects.count()
    response = create_mpesa_sale(client, product, phone, quantity)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["success"] is False and "sale_id" not in body
    assert written_rows() == before and StkRequest.objects.count() == requests
    return body["error"]


def test_a_phone_that_cannot_take_a_prompt_is_refused_before_the_sale_exists(cashier_client, product):
    assert "use a number starting 07 or 01" in refused_writing_nothing(cashier_client, product, "0812 345 678")


def test_a_phone_with_a_prompt_open_for_another_sale_is_refused_before_the_sale_exists(
        cashier_client, cashier, till, product):
    other = make_pending_sale(cashier=cashier, till=till, product=product, quantity=2)
    StkRequestFactory(sale=other, amount=232, phone="254708374149")

    error = refused_writing_nothing(cashier_client, product, "0708 374 149")
    assert "already has an M-Pesa prompt open for another sale" in error


def test_the_same_amount_to_the_same_phone_within_two_minutes_is_refused_before_the_sale_exists(
        cashier_client, cashier, till, product):
    earlier = make_pending_sale(cashier=cashier, till=till, product=product)
    StkRequestFactory(sale=earlier, amount=116, phone="254708374149", status=StkRequest.Status.FAILED,
                      result_code="1032")

    error = refused_writing_nothing(cashier_client, product, "254708374149")
    assert "same amount (KES 116) to the same phone within 2 minutes" in error


def test_the_check_rounds_a_total_with_cents_up_as_the_prompt_does(cashier, till, product):
    earlier = make_pending_sale(cashier=cashier, till=till, product=product)
    StkRequestFactory(sale=earlier, amount=117, phone="254708374149", status=StkRequest.Status.FAILED)
    with pytest.raises(SaleError, match="KES 117"):
        check_stk_payment(shop=till.shop, phone="0708374149", amount=Decimal("116.40"))
    check_stk_payment(shop=till.shop, phone="0708374149", amount=Decimal("118.00"))  # another amount: fine
