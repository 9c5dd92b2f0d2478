"""GET /cashier/check-mpesa-payment/<id>: what the till shows while it waits, in two queries."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from mpesa.models import StkRequest
from mpesa.tests.factories import StkRequestFactory, make_pending_sale, stk_success
from mpesa.views import CheckMpesaPaymentView
from pos.services import take_cash
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory

KEYS = {"status", "payment_received", "mpesa_receipt", "amount_paid", "balance_due", "timeout", "result_code",
        "message"}


@pytest.fixture
def sale(cashier, till, product):
    return make_pending_sale(cashier=cashier, till=till, product=product)


def poll(client, sale):
    response = client.get(reverse("mpesa:check-payment", args=[sale.pk]))
    assert response.status_code == 200
    return response.json()


def test_an_open_prompt_is_waiting_for_the_pin(cashier_client, sale):
    StkRequestFactory(sale=sale, amount=116, phone="254712345678")
    status = poll(cashier_client, sale)

    assert KEYS <= set(status)
    assert status["status"] == "waiting" and status["timeout"] is False and status["payment_received"] is False
    assert "enter their M-Pesa PIN" in status["message"] and "2547*****678" in status["message"]
    assert status["balance_due"] == "116.00" and status["amount_paid"] == "0.00"


def test_the_till_stops_waiting_at_a_clear_timeout(cashier_client, sale, settings):
    stk = StkRequestFactory(sale=sale, amount=116)
    StkRequest.objects.filter(pk=stk.pk).update(created_at=timezone.now() - timedelta(seconds=91))
    status = poll(cashier_client, sale)

    assert status["status"] == "timeout" and status["timeout"] is True
    assert "No answer from M-Pesa after 91 s" in status["message"]


def test_paid_shows_the_mpesa_code(client, cashier_client, sale):
    stk = StkRequestFactory(sale=sale, amount=116)
    client.post("/mpesa/stk/callback", data=stk_success(stk.checkout_request_id, amount=116, receipt="NLJ7RT61SV"),
                content_type="application/json")
    status = poll(cashier_client, sale)

    assert status["status"] == "paid" and status["payment_received"] is True
    assert status["mpesa_receipt"] == "NLJ7RT61SV" and "NLJ7RT61SV" in status["message"]
    assert status["balance_due"] == "0.00" and status["amount_paid"] == "116.00"


def test_no_prompt_yet_and_cancelled(cashier_client, sale):
    assert poll(cashier_client, sale)["status"] == "none"
    sale.status = "cancelled"
    sale.save(update_fields=["status"])
    assert poll(cashier_client, sale)["status"] == "cancelled"


def test_a_refused_push_says_why(cashier_client, sale):
    StkRequestFactory(sale=sale, status=StkRequest.Status.REFUSED, result_desc="Daraja refused: bad shortcode.")
    status = poll(cashier_client, sale)
    assert status["status"] == "failed" and status["message"] == "Daraja refused: bad shortcode."


def test_another_shops_sale_is_404(client, sale):
    other_shop = ShopFactory(code="OTHR")
    other = StaffFactory(shop=other_shop, default_till=TillFactory(shop=other_shop)).user
    client.force_login(other)
    assert client.get(reverse("mpesa:check-payment", args=[sale.pk])).status_code == 404


def test_logged_out_is_refused(client, sale):
    assert client.get(reverse("mpesa:check-payment", args=[sale.pk])).status_code == 403


def test_the_poll_itself_costs_one_query_and_two_before_any_prompt(
        cashier, sale, django_assert_num_queries):
    def poll_view():
        request = RequestFactory().get(reverse("mpesa:check-payment", args=[sale.pk]))
        request.user = cashier  # loaded by the auth middleware, as in a real request
        return CheckMpesaPaymentView.as_view()(request, sale_id=sale.pk)

    with django_assert_num_queries(2):
        assert poll_view().data["status"] == "none"
    StkRequestFactory(sale=sale, amount=116)
    with django_assert_num_queries(1):
        assert poll_view().data["status"] == "waiting"


def test_a_whole_poll_request_costs_two_queries_the_user_and_the_status(
        cashier_client, sale, django_assert_max_num_queries):
    StkRequestFactory(sale=sale, amount=116)
    poll(cashier_client, sale)  # the session is now in the cache (cached_db sessions)
    with django_assert_max_num_queries(2):
        assert poll(cashier_client, sale)["status"] == "waiting"


def test_the_till_page_carries_the_mpesa_panel_and_script(cashier_client):
    page = cashier_client.get("/").content.decode()
    assert 'id="mpesa-panel"' in page and "mpesa/till-mpesa.js" in page
    assert f'data-start-url="{reverse("mpesa:start-stk", args=[987654321])}"' in page
    assert f'data-check-url="{reverse("mpesa:check-payment", args=[987654321])}"' in page


def test_a_cash_sale_polls_as_paid_in_cash(cashier_client, sale):
    take_cash(sale_id=sale.pk, tendered=Decimal("200"))
    status = poll(cashier_client, sale)

    assert status["status"] == "paid" and status["payment_received"] is True
    assert status["message"] == "Paid in cash." and status["result_code"] == "" and status["mpesa_receipt"] == ""
    assert status["balance_due"] == "0.00" and status["amount_paid"] == "116.00"


def test_cash_after_a_cancelled_prompt_polls_as_paid_in_cash(cashier_client, sale):
    StkRequestFactory(sale=sale, amount=116, status=StkRequest.Status.FAILED, result_code="1032")
    take_cash(sale_id=sale.pk, tendered=Decimal("116"))
    status = poll(cashier_client, sale)

    assert (status["status"], status["payment_received"], status["message"]) == ("paid", True, "Paid in cash.")
    assert status["result_code"] == "1032"


def test_the_result_code_is_always_a_string(cashier_client, sale):
    assert poll(cashier_client, sale)["result_code"] == ""
    StkRequestFactory(sale=sale, amount=116)
    assert poll(cashier_client, sale)["result_code"] == ""
