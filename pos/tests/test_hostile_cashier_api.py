"""Hostile input on every JSON endpoint the till calls (reliability.md S1, S4): any body, any
content type, any id gets an answer in words (400), a refusal (403) or a 404, never a 500; a
refusal writes nothing; another shop's sale is a 404 whatever is sent; no CSRF token, no write."""

import json
from decimal import Decimal
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import example, given
from hypothesis import strategies as st

from comolor.testing.hostile import (
    CONTENT_TYPES, HEADER_TEXT, HOSTILE, JSON_VALUES, NASTY_TEXT, RAW_BODIES, encoded, mutated, rolled_back,
)
from inventory.models import StockMovement
from inventory.services import receive_stock
from mpesa.invariants import check_books
from mpesa.models import StkRequest
from pos.models import Payment, Sale
from pos.services import ItemRequest, create_sale, open_shift
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory
from pos.tests.utils import written_rows

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _daraja_unreachable(settings):
    """M-Pesa prompts fail to go out (a closed port in this suite's range): no network in these tests."""
    settings.MPESA_BASE_URL = "http://127.0.0.1:8479/daraja-sim"


@pytest.fixture
def sale(cashier, till, product):
    return create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=1, barcode=product.barcode)])


@pytest.fixture
def other_sale(product):
    """A pending sale of another shop, Westlands, with its own cashier and open till."""
    shop = ShopFactory(code="WEST", name="Westlands")
    till = TillFactory(shop=shop, name="West 1")
    user = StaffFactory(user=UserFactory(username="otieno"), shop=shop, default_till=till).user
    open_shift(till=till, user=user, opening_float=Decimal("0"))
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=5)
    return create_sale(cashier=user, till=till, items=[ItemRequest(quantity=1, product_id=product.pk)])


def valid_bodies(product) -> dict:
    """A body each POST endpoint accepts, as the till sends it: the start of every mutation."""
    return {
        "pos:create-sale": {"items": [{"barcode": product.barcode, "quantity": 1}], "payment_method": "cash",
                            "amount_tendered": "200", "customer_phone": "0712 345 678"},
        "pos:sale-cash": {"amount_tendered": "116"},
        "pos:sale-cancel": {"reason": "customer left"},
        "mpesa:start-stk": {"phone": "0708374149", "amount": "116"},
        "mpesa:claim-payment": {"code": "QK12AB34CD"},
    }


POSTS = ["pos:create-sale", "pos:sale-cash", "pos:sale-cancel", "mpesa:start-stk", "mpesa:claim-payment"]
GETS = ["pos:sale", "mpesa:check-payment"]  # of one sale
POSTS_ON_A_SALE = [name for name in POSTS if name != "pos:create-sale"]


def url(name: str, sale_id: int | None = None) -> str:
    return reverse(name) if name == "pos:create-sale" else reverse(name, args=[sale_id])


def everything() -> dict:
    return {**written_rows(), "prompts": StkRequest.objects.count(),
            "statuses": list(Sale.objects.order_by("pk").values_list("status", "amount_paid"))}


def assert_worded(response, *statuses):
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    body = response.json()
    assert body["success"] is False
    assert isinstance(body["error"], str) and len(body["error"]) >= 15 and " " in body["error"], body
    assert "Traceback" not in body["error"] and "object at 0x" not in body["error"]
    return body["error"]


def send(client, name, sale_id, body: bytes, content_type="application/json", **extra):
    return client.generic("POST", url(name, sale_id), body, content_type=content_type, **extra)


# --- Any body ---------------------------------------------------------------------------------------

@HOSTILE
@given(data=st.data(), name=st.sampled_from(POSTS), content_type=CONTENT_TYPES)
def test_any_body_gets_an_answer_in_words_and_a_refusal_writes_nothing(
        cashier_client, sale, product, data, name, content_type):
    how = data.draw(st.sampled_from(["mutated", "mutated", "raw", "value"]))
    if how == "mutated":
        body = data.draw(encoded(data.draw(mutated(valid_bodies(product)[name]))))
    elif how == "raw":
        body = data.draw(RAW_BODIES)
    else:
        body = json.dumps(data.draw(JSON_VALUES), allow_nan=True).encode("utf-8", "surrogatepass")
    assert_answered_in_words(cashier_client, sale, name, body, content_type)


@pytest.mark.parametrize("name", POSTS)
def test_a_body_nested_past_the_recursion_limit_is_refused_in_words(cashier_client, sale, name):
    assert_answered_in_words(cashier_client, sale, name, b'{"items":' + b"[" * 50_000 + b"]" * 50_000 + b"}")


@pytest.mark.parametrize("name", POSTS)
def test_a_body_over_the_upload_limit_is_refused_in_words(cashier_client, sale, settings, name):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = json.dumps({"reason": "x" * (5 * 1024 * 1024), "items": [], "code": "y" * 10**5}).encode()
    assert_answered_in_words(cashier_client, sale, name, body)


def assert_answered_in_words(cashier_client, sale, name, body, content_type="application/json"):
    with rolled_back():
        before = everything()
        response = send(cashier_client, name, sale.pk, body, content_type)

        if response.status_code in (200, 201, 202):
            assert response.json()["success"] is True
        else:
            assert_worded(response, 400)
            after = everything()
            if name == "mpesa:start-stk":
                # A prompt is recorded before Daraja is called; here it could not go out.
                assert StkRequest.objects.exclude(status=StkRequest.Status.REFUSED).count() == 0
                after["prompts"] = before["prompts"]
            if name == "pos:create-sale" and "sale" in response.json():
                # An M-Pesa sale is kept pending when its prompt could not go out: cash, retry or cancel.
                kept = Sale.objects.get(pk=response.json()["sale_id"])
                assert kept.status == Sale.Status.PENDING and not kept.payments.exists()
            else:
                assert after == before
        assert check_books() == []


@pytest.mark.parametrize("text", ["\x00", "A\x00B", "\ud800", "\udfff tail"])
@pytest.mark.parametrize("name", POSTS)
def test_text_postgresql_cannot_store_is_refused_or_kept_out_in_every_field(
        cashier_client, sale, product, name, text):
    """JSON can carry NUL and lone surrogates (\\u0000, \\ud800); PostgreSQL text refuses both."""
    valid = valid_bodies(product)[name]
    fields = [key for key, value in valid.items() if isinstance(value, str)]
    if name == "pos:create-sale":
        valid["items"][0]["barcode"] = text
        assert_answered_in_words(cashier_client, sale, name, json.dumps(valid).encode())
        valid["items"][0]["barcode"] = product.barcode
    for field in fields:
        assert_answered_in_words(cashier_client, sale, name, json.dumps({**valid, field: text}).encode())


@HOSTILE
@given(name=st.sampled_from(GETS), sale_id=st.integers(1, 10**40))
def test_any_sale_id_is_shown_or_a_404(cashier_client, sale, name, sale_id):
    response = cashier_client.get(url(name, sale_id))

    if sale_id == sale.pk:
        assert response.status_code == 200
    else:
        assert response.status_code == 404


@HOSTILE
@given(query=NASTY_TEXT | st.text(max_size=300))
@example(query="\x00")
@example(query="%" * 500)
def test_any_search_gets_a_list_never_a_server_error(cashier_client, product, query):
    # As a browser sends it: percent-encoded bytes (a lone surrogate as the invalid UTF-8 it encodes to).
    raw = quote(query.encode("utf-8", "surrogatepass"), safe="")
    response = cashier_client.get(reverse("pos:products"), QUERY_STRING=f"q={raw}")

    assert response.status_code == 200
    assert isinstance(response.json(), list)


# --- Another shop's sale -----------------------------------------------------------------------------

@HOSTILE
@given(data=st.data(), name=st.sampled_from(POSTS_ON_A_SALE + GETS))
def test_another_shops_sale_is_a_404_whatever_is_sent(cashier_client, other_sale, product, data, name):
    """S1: the id is checked against the cashier's shop before the body is read."""
    before = everything()
    if name in GETS:
        response = cashier_client.get(url(name, other_sale.pk))
    else:
        body = data.draw(encoded(data.draw(mutated(valid_bodies(product)[name]))) | RAW_BODIES)
        response = send(cashier_client, name, other_sale.pk, body)

    assert response.status_code == 404
    if name not in ("mpesa:check-payment",):
        assert response.json() == {"success": False, "error": "No such sale in this shop."}
    assert everything() == before
    assert Sale.objects.get(pk=other_sale.pk).status == Sale.Status.PENDING


# --- No CSRF token, no login ---------------------------------------------------------------------------

@HOSTILE
@given(name=st.sampled_from(POSTS), header=st.none() | HEADER_TEXT, cookie=st.none() | HEADER_TEXT)
def test_a_post_without_the_right_csrf_token_is_refused_in_words_and_writes_nothing(
        cashier, sale, product, name, header, cookie):
    """S4: the session alone is not enough; a forged header or cookie pair is no better."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(cashier)
    if cookie is not None:
        client.cookies["csrftoken"] = cookie
    extra = {} if header is None else {"HTTP_X_CSRFTOKEN": header}
    if header is not None and header == cookie and len(header) in (32, 64) and header.isalnum() and header.isascii():
        return  # a matching well-formed pair is a valid token, as Django's double-submit cookie defines it
    before = everything()
    response = send(client, name, sale.pk, json.dumps(valid_bodies(product)[name]).encode(), **extra)

    error = assert_worded(response, 403)
    assert "Reload the page" in error
    assert everything() == before


# Every cashier endpoint, POST or GET, with its path for `sale`.
EVERY = POSTS + GETS + ["pos:products", "mpesa:unclaimed-payments", "mpesa:claim-status"]


def path_of(name: str, sale) -> str:
    if name in ("pos:create-sale", "pos:products", "mpesa:unclaimed-payments"):
        return reverse(name)
    return reverse(name, args=[sale.pk, 1] if name == "mpesa:claim-status" else [sale.pk])


def call(client, name, sale, product):
    if name in POSTS:
        return client.post(path_of(name, sale), json.dumps(valid_bodies(product)[name]),
                           content_type="application/json")
    return client.get(path_of(name, sale))


@pytest.mark.parametrize("name", EVERY)
def test_a_logged_out_till_is_told_to_log_in_again(client, sale, product, name):
    response = call(client, name, sale, product)

    assert assert_worded(response, 403) == "You are logged out. Log in again to use the till."


@pytest.mark.parametrize("name", [name for name in EVERY if name != "mpesa:check-payment"])
def test_a_login_that_is_not_shop_staff_is_refused_in_words(client, sale, product, name):
    client.force_login(UserFactory(username="stranger"))
    before = everything()
    response = call(client, name, sale, product)

    assert "not set up as staff of a shop" in assert_worded(response, 403)
    assert everything() == before


def test_the_poll_of_a_login_that_is_not_shop_staff_is_a_404(client, sale):
    client.force_login(UserFactory(username="stranger"))

    assert client.get(url("mpesa:check-payment", sale.pk)).status_code == 404


# --- The M-Pesa claim endpoints -------------------------------------------------------------------------

@HOSTILE
@given(claim_id=st.integers(1, 10**40), own_sale=st.booleans())
def test_any_claim_id_is_a_404_unless_it_is_this_sales_claim(cashier_client, sale, other_sale, claim_id, own_sale):
    response = cashier_client.get(reverse("mpesa:claim-status", args=[(sale if own_sale else other_sale).pk,
                                                                      claim_id]))

    assert response.status_code == 404


@HOSTILE
@given(params=st.dictionaries(st.sampled_from(["minutes", "shop", "shop_id", "since", "q", "page"]),
                              NASTY_TEXT, max_size=3))
def test_the_unclaimed_list_ignores_any_query_string(cashier_client, sale, params):
    """S3: the shop comes from the login, never from the request."""
    query = "&".join(f"{key}={quote(text.encode('utf-8', 'surrogatepass'), safe='')}" for key, text in params.items())
    response = cashier_client.get(reverse("mpesa:unclaimed-payments"), QUERY_STRING=query)

    assert response.status_code == 200
    assert response.json()["success"] is True and isinstance(response.json()["payments"], list)
