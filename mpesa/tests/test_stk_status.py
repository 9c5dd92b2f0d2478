"""GET /cashier/check-mpesa-payment/<id>: what the till shows while it waits, in two queries, and
its refusals in the till's words."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from mpesa import services
from mpesa.models import MpesaTransaction, StkRequest
from mpesa.tests.factories import MpesaTransactionFactory, StkRequestFactory, stk_success
from mpesa.views import check_mpesa_payment
from pos.services import take_cash
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory

KEYS = {"status", "payment_received", "mpesa_receipt", "amount_paid", "balance_due", "timeout", "result_code",
        "message"}


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


NO_SUCH_SALE = {"success": False, "error": "No such sale in this shop."}


def test_another_shops_sale_is_404_in_words(client, sale):
    other_shop = ShopFactory(code="OTHR")
    other = StaffFactory(shop=other_shop, default_till=TillFactory(shop=other_shop)).user
    client.force_login(other)
    response = client.get(reverse("mpesa:check-payment", args=[sale.pk]))

    assert (response.status_code, response.json()) == (404, NO_SUCH_SALE)


@pytest.mark.parametrize("sale_id", [987654321, 2**63 - 1, 2**63, 10**40])
def test_an_unknown_sale_is_404_in_words(cashier_client, sale_id):
    response = cashier_client.get(reverse("mpesa:check-payment", args=[sale_id]))

    assert (response.status_code, response.json()) == (404, NO_SUCH_SALE)


def test_an_id_past_the_largest_row_id_is_not_even_looked_up(cashier, django_assert_num_queries):
    # PostgreSQL would compare it as numeric and read the whole sales table.
    with django_assert_num_queries(0):
        assert services.get_payment_status(sale_id=2**63, user_id=cashier.pk) is None


@pytest.mark.parametrize("method", ["get", "post", "put", "delete", "options"])
def test_logged_out_is_told_to_log_in_again_whatever_the_method(client, sale, method):
    response = getattr(client, method)(reverse("mpesa:check-payment", args=[sale.pk]))

    assert response.status_code == 403
    assert response.json() == {"success": False, "error": "You are logged out. Log in again to use the till."}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_only_get_is_allowed_and_the_refusal_is_in_words(cashier, sale, method):
    # Even without a CSRF token: the refusal is the till's JSON, not Django's CSRF page.
    client = Client(enforce_csrf_checks=True)
    client.force_login(cashier)
    response = client.generic(method, reverse("mpesa:check-payment", args=[sale.pk]), b"{}",
                              content_type="application/json")

    assert (response.status_code, response["Allow"]) == (405, "GET, HEAD")
    assert response.json() == {"success": False, "error": f'Method "{method}" not allowed.'}


def test_head_answers_like_get(cashier_client, sale):
    response = cashier_client.head(reverse("mpesa:check-payment", args=[sale.pk]))

    assert response.status_code == 200 and response["Content-Type"] == "application/json"


def test_the_answer_is_compact_escaped_ascii_json_as_drf_rendered_it(cashier_client, sale):
    stk = StkRequestFactory(sale=sale, amount=116, status=StkRequest.Status.PAID, result_code="0")
    MpesaTransactionFactory(stk_request=stk, source=MpesaTransaction.Source.STK_CALLBACK,
                            match_status=MpesaTransaction.Match.REVIEW, review_reason="Kiasi kimezidi — angalia")
    response = cashier_client.get(reverse("mpesa:check-payment", args=[sale.pk]))

    assert response["Content-Type"] == "application/json"
    assert response.content == json.dumps(response.json(), separators=(",", ":")).encode()
    assert b"\\u2014" in response.content and response.json()["status"] == "review"
    assert response.json()["mpesa_amount"] == 116 and response.json()["amount_paid"] == "0.00"


def test_the_poll_itself_costs_one_query_before_and_after_a_prompt(cashier, sale, django_assert_num_queries):
    def poll_view():
        request = RequestFactory().get(reverse("mpesa:check-payment", args=[sale.pk]))
        request.user = cashier  # loaded by the auth middleware, as in a real request
        return json.loads(check_mpesa_payment(request, sale_id=sale.pk).content)

    with django_assert_num_queries(1):
        assert poll_view()["status"] == "none"
    StkRequestFactory(sale=sale, amount=116)
    with django_assert_num_queries(1):
        assert poll_view()["status"] == "waiting"


def test_the_latest_prompt_is_the_one_shown(cashier_client, sale):
    StkRequestFactory(sale=sale, amount=116, status=StkRequest.Status.FAILED, result_code="1032")
    StkRequestFactory(sale=sale, amount=100, phone="254799999123")

    status = poll(cashier_client, sale)
    assert (status["status"], status["mpesa_amount"], status["result_code"]) == ("waiting", 100, "")
    assert "2547*****123" in status["message"]


def test_a_login_that_is_not_staff_sees_no_sale(client, sale):
    client.force_login(UserFactory(username="stranger"))
    response = client.get(reverse("mpesa:check-payment", args=[sale.pk]))

    assert (response.status_code, response.json()) == (404, NO_SUCH_SALE)


@pytest.mark.parametrize("prompted", [False, True])
def test_a_whole_poll_request_costs_two_queries_the_user_and_the_status(
        cashier_client, sale, django_assert_max_num_queries, prompted):
    if prompted:
        StkRequestFactory(sale=sale, amount=116)
    poll(cashier_client, sale)  # the session is now in the cache (cached_db sessions)
    with django_assert_max_num_queries(2):
        assert poll(cashier_client, sale)["status"] == ("waiting" if prompted else "none")


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
