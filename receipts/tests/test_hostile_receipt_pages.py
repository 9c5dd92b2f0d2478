"""Hostile input on the receipt pages: any query string on the till's receipt views and any path on
the public QR check page gets a page or a 404, never a 500 (reliability.md T23, S1)."""

from urllib.parse import quote

import pytest
from django.urls import reverse
from hypothesis import example, given
from hypothesis import strategies as st

from comolor.testing.hostile import HOSTILE, NASTY_TEXT
from receipts.services import receipt_token

pytestmark = pytest.mark.django_db
VALUES = NASTY_TEXT | st.sampled_from(["58", "80", "1", "0", "-80", "80.0", "٨٠", "80 ", "999999999999999999999"])


def raw_query(**params) -> str:
    """As a browser sends it: percent-encoded bytes, a lone surrogate as the invalid UTF-8 it becomes."""
    return "&".join(f"{key}={quote(value.encode('utf-8', 'surrogatepass'), safe='')}" for key, value in params.items())


@HOSTILE
@given(name=st.sampled_from(["receipts:html", "receipts:preview", "receipts:print-status"]), width=VALUES,
       copy=VALUES, autoprint=VALUES)
@example(name="receipts:preview", width="58", copy="1", autoprint="")
def test_any_query_string_on_a_receipt_view_gets_the_receipt(cashier_client, cash_sale, name, width, copy, autoprint):
    response = cashier_client.get(reverse(name, args=[cash_sale.pk]),
                                  QUERY_STRING=raw_query(width=width, copy=copy, print=autoprint))

    assert response.status_code == 200


@HOSTILE
@given(receipt_number=st.text(min_size=1, max_size=40) | NASTY_TEXT.filter(bool),
       token=st.text(min_size=1) | NASTY_TEXT.filter(bool))
@example(receipt_number="DEMO-0000001\x00", token="x")
def test_a_forged_qr_link_is_a_404_page(client, cash_sale, receipt_number, token):
    path = reverse("receipts:verify", args=["R", "T"]).replace("/R/T/", "/{}/{}/".format(
        quote(receipt_number.encode("utf-8", "surrogatepass"), safe=""),
        quote(token.encode("utf-8", "surrogatepass"), safe="")))
    response = client.get(path)

    genuine = receipt_number == cash_sale.receipt_number and token == receipt_token(receipt_number)
    assert response.status_code == (200 if genuine else 404)
