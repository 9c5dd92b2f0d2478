"""Prompt spam (reliability.md T27): a phone gets at most MPESA_STK_PROMPTS_PER_PHONE prompts a
minute and a cashier sends at most MPESA_STK_PROMPTS_PER_CASHIER, across tills and shops; the rest
are refused in words and logged with the cashier's id. Real pushes to the Daraja simulator."""

import logging
from decimal import Decimal

import pytest
from django.urls import reverse

from mpesa.models import StkRequest
from mpesa.services import start_stk_payment
from mpesa.tests.factories import make_pending_sale
from pos.models import Sale
from pos.services import SaleError, open_shift
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory

PHONE = "254708374149"


@pytest.fixture
def limits(settings):
    settings.MPESA_STK_PROMPTS_PER_PHONE = 3
    settings.MPESA_STK_PROMPTS_PER_CASHIER = 4
    return settings


@pytest.fixture
def other_cashier(db):
    """A cashier of another shop, selling on its till."""
    till = TillFactory(shop=ShopFactory(code="OTHR", name="Other Duka"), name="Till 1")
    user = StaffFactory(user=UserFactory(username="otieno"), shop=till.shop, default_till=till).user
    open_shift(till=till, user=user, opening_float=Decimal("0"))
    return user, till


def paid_prompt(daraja_sim, *, cashier, till, price, phone=PHONE):
    """A prompt for a new sale, answered at once (so the phone is free for the next one)."""
    sale = make_pending_sale(cashier=cashier, till=till, price=Decimal(price))
    started = start_stk_payment(sale=sale, phone=phone, user=cashier)
    daraja_sim.deliver()
    return started


def test_a_phone_gets_no_more_prompts_than_the_limit_in_a_minute_across_cashiers_and_shops(
        daraja_sim, limits, cashier, till, other_cashier, caplog):
    other, other_till = other_cashier
    paid_prompt(daraja_sim, cashier=cashier, till=till, price="100")
    paid_prompt(daraja_sim, cashier=other, till=other_till, price="101")
    paid_prompt(daraja_sim, cashier=cashier, till=till, price="102")

    sale = make_pending_sale(cashier=other, till=other_till, price=Decimal("103"))
    with caplog.at_level(logging.WARNING, logger="mpesa.services"), pytest.raises(SaleError) as refused:
        start_stk_payment(sale=sale, phone="0708 374 149", user=other)

    assert str(refused.value) == ("2547*****149 has had the most M-Pesa prompts allowed in one minute (3). "
                                  "Wait a minute, or take cash.")
    assert StkRequest.objects.count() == 3 and not StkRequest.objects.filter(sale=sale).exists()
    logged = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert logged == [f"M-Pesa prompt to 2547*****149 refused: 4 prompts this minute, the limit per phone is 3; "
                      f"cashier {other.pk}"]
    assert PHONE not in caplog.text
    # Other phones are not held up by this one.
    assert paid_prompt(daraja_sim, cashier=other, till=other_till, price="104", phone="0711000001")["stk_request_id"]


def test_a_cashier_sends_no_more_prompts_than_the_limit_in_a_minute(daraja_sim, limits, cashier, till, caplog):
    for n in range(4):
        paid_prompt(daraja_sim, cashier=cashier, till=till, price="100", phone=f"071100000{n}")

    sale = make_pending_sale(cashier=cashier, till=till, price=Decimal("100"))
    with caplog.at_level(logging.WARNING, logger="mpesa.services"), pytest.raises(SaleError) as refused:
        start_stk_payment(sale=sale, phone="0711000009", user=cashier)

    assert str(refused.value) == ("You have sent the most M-Pesa prompts allowed in one minute (4). "
                                  "Wait a minute, or take cash.")
    assert f"the limit per cashier is 4; cashier {cashier.pk}" in caplog.text
    assert not StkRequest.objects.filter(sale=sale).exists()


def test_a_phone_over_the_limit_gets_no_new_mpesa_sale_at_the_till(daraja_sim, limits, cashier, till,
                                                                   cashier_client, product):
    for price in ("100", "101", "102"):
        paid_prompt(daraja_sim, cashier=cashier, till=till, price=price)
    sales_before = Sale.objects.count()

    response = cashier_client.post(reverse("pos:create-sale"), data={
        "items": [{"sku": product.sku, "quantity": 1}], "payment_method": "mpesa", "customer_phone": "0708374149",
    }, content_type="application/json")

    assert response.status_code == 400
    assert "most M-Pesa prompts allowed in one minute" in response.json()["error"]
    assert Sale.objects.count() == sales_before
