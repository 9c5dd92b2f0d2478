"""The till's receipt endpoints: shop staff only, CSRF on posts; and the public QR check page."""

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from pos.services import ItemRequest, create_sale
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory
from receipts.models import PrintJob
from receipts.services import receipt_token


@pytest.fixture
def other_shop_client(client, db):
    shop = ShopFactory(code="OTHR")
    client.force_login(StaffFactory(shop=shop, default_till=TillFactory(shop=shop)).user)
    return client


def test_html_receipt_is_a_printable_page_of_the_same_rows(cashier_client, cash_sale):
    response = cashier_client.get(reverse("receipts:html", args=[cash_sale.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "@media print" in html and "size: 80mm auto" in html and "width: 48ch" in html
    assert "Sugar 1kg                2 x 116.00     232.00 B" in html
    assert "<svg" in html and "COPY - REPRINT" not in html


def test_html_receipt_marks_a_copy_and_lays_out_for_58mm(cashier_client, cash_sale):
    response = cashier_client.get(reverse("receipts:html", args=[cash_sale.pk]), {"copy": "1", "width": "58"})
    html = response.content.decode()
    assert "COPY - REPRINT" in html and "size: 58mm auto" in html and "width: 32ch" in html


def test_print_in_browser_page_calls_window_print(cashier_client, cash_sale):
    response = cashier_client.get(reverse("receipts:html", args=[cash_sale.pk]), {"print": "1"})
    assert "window.print()" in response.content.decode().split("</div>")[-1]


@pytest.mark.parametrize("name", ["receipts:html", "receipts:preview", "receipts:print-status"])
def test_another_shops_staff_get_404(other_shop_client, cash_sale, name):
    assert other_shop_client.get(reverse(name, args=[cash_sale.pk])).status_code == 404


@pytest.mark.parametrize("name", ["receipts:print", "receipts:reprint"])
def test_another_shops_staff_cannot_print(other_shop_client, cash_sale, name):
    assert other_shop_client.post(reverse(name, args=[cash_sale.pk])).status_code == 404
    assert not PrintJob.objects.exists()


def test_anonymous_visitor_is_sent_to_log_in_or_gets_404(client, cash_sale):
    assert client.get(reverse("receipts:html", args=[cash_sale.pk])).status_code == 302
    assert client.get(reverse("receipts:print-status", args=[cash_sale.pk])).status_code == 404
    assert client.post(reverse("receipts:reprint", args=[cash_sale.pk])).status_code == 404


def test_preview_is_a_png(cashier_client, cash_sale):
    response = cashier_client.get(reverse("receipts:preview", args=[cash_sale.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")


def test_print_status_then_retry_then_reprint(cashier_client, cash_sale):
    status = cashier_client.get(reverse("receipts:print-status", args=[cash_sale.pk])).json()
    assert status == {"status": "none", "message": "The receipt has not been sent to a printer yet."}
    printed = cashier_client.post(reverse("receipts:print", args=[cash_sale.pk])).json()
    assert printed["success"] and printed["status"] == "done" and not printed["is_copy"]
    copy = cashier_client.post(reverse("receipts:reprint", args=[cash_sale.pk])).json()
    assert copy["status"] == "done" and copy["is_copy"]
    assert PrintJob.objects.filter(sale=cash_sale).count() == 2


def test_posts_need_the_csrf_token(cashier, cash_sale):
    client = Client(enforce_csrf_checks=True)
    client.force_login(cashier)
    assert client.post(reverse("receipts:reprint", args=[cash_sale.pk])).status_code == 403
    secret = "A" * 32
    client.cookies["csrftoken"] = secret
    assert client.post(reverse("receipts:reprint", args=[cash_sale.pk]), HTTP_X_CSRFTOKEN=secret).status_code == 200


def test_reprint_of_an_unpaid_sale_is_refused_in_words(cashier_client, cashier, till, product):
    sale = create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku=product.sku)])
    response = cashier_client.post(reverse("receipts:reprint", args=[sale.pk]))
    assert response.status_code == 400
    assert response.json()["error"] == f"Sale {sale.receipt_number} is pending: only a completed sale has a receipt."


def test_qr_code_link_shows_a_genuine_receipt(client, cash_sale):
    url = reverse("receipts:verify", args=[cash_sale.receipt_number, receipt_token(cash_sale.receipt_number)])
    response = client.get(url)
    assert response.status_code == 200
    assert "Genuine receipt from Demo Duka" in response.content.decode()
    assert "961.97" in response.content.decode()


def test_qr_code_link_with_a_wrong_token_is_not_genuine(client, cash_sale):
    response = client.get(reverse("receipts:verify", args=[cash_sale.receipt_number, "forged0123456789"]))
    assert response.status_code == 404
    assert "Not a receipt we issued" in response.content.decode()


def test_till_partial_carries_the_receipt_urls_and_its_script():
    html = render_to_string("receipts/_till_receipt.html")
    for name in ("html", "preview", "print-status", "print", "reprint"):
        assert f'"{reverse(f"receipts:{name}", args=[987654321])}"' in html
    assert "receipts/till-receipt.js" in html


def test_a_login_that_is_not_shop_staff_gets_404(client, cash_sale):
    client.force_login(UserFactory(username="visitor"))
    assert client.get(reverse("receipts:html", args=[cash_sale.pk])).status_code == 404
