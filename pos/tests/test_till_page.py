"""The cashier's pages: login, the till, today's sales."""

from datetime import timedelta
from decimal import Decimal

from django.contrib.staticfiles import finders
from django.urls import reverse
from django.utils import timezone

from pos.models import Sale
from pos.services import ItemRequest, create_sale, sell_for_cash
from pos.tests.factories import StaffFactory, TillFactory, UserFactory


def test_login_page_renders(client, db):
    response = client.get(reverse("login"))

    assert response.status_code == 200
    assert b'name="username"' in response.content and b'name="password"' in response.content


def test_a_cashier_logging_in_lands_on_the_till(client, cashier):
    response = client.post(reverse("login"), {"username": "wanjiru", "password": "password"}, follow=True)

    assert response.redirect_chain[-1][0] == reverse("pos:home")
    assert response.templates[0].name == "pos/till.html"


def test_a_wrong_password_is_explained(client, cashier):
    response = client.post(reverse("login"), {"username": "wanjiru", "password": "nope"})

    assert b"Wrong username or password" in response.content


def test_the_till_needs_a_login(client, db):
    response = client.get(reverse("pos:home"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_the_till_page_carries_its_config_scripts_and_partials(cashier_client, till):
    response = cashier_client.get(reverse("pos:home"))

    assert response.status_code == 200
    html = response.content.decode()
    config = response.context["till_config"]
    assert config["urls"]["createSale"] == "/cashier/create-sale"
    assert config["urls"]["sale"] == "/cashier/sales/{id}"
    assert config["urls"]["saleCash"] == "/cashier/sales/{id}/cash"
    assert config["till"] == "Till 1" and config["shop"] == "Demo Duka"
    assert 'id="till-config"' in html and 'name="csrf-token"' in html
    assert "/static/pos/till.js" in html and "/static/pos/till.css" in html
    assert 'id="till-search"' in html and "autofocus" in html
    assert "receipts/till-receipt.js" in html  # the receipts partial is included
    assert "Demo Duka" in html


def test_the_static_files_ship_with_the_app():
    assert finders.find("pos/till.js") and finders.find("pos/till.css")


def test_a_shop_with_no_open_till_says_so(client, shop):
    user = StaffFactory(shop=shop).user
    client.force_login(user)

    html = client.get(reverse("pos:home")).content.decode()

    assert "Demo Duka has no open till. Ask a manager to add one in the admin." in html
    assert 'id="till-search"' in html and "disabled" in html


def test_a_login_without_a_staff_row_gets_a_clear_403_page(client, db):
    client.force_login(UserFactory(username="visitor"))

    for name in ("pos:home", "pos:recent-sales"):
        response = client.get(reverse(name))
        assert response.status_code == 403
        assert b"This login cannot use the till" in response.content
        assert b"Ask a manager to add you under Staff" in response.content


def test_recent_sales_lists_todays_sales_of_this_cashier_only(cashier_client, cashier, till, shop, product):
    paid, _ = sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="SUG1KG")],
                            tendered=Decimal("200"))
    waiting = create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=2, sku="SUG1KG")])
    yesterday = create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="SUG1KG")])
    Sale.objects.filter(pk=yesterday.pk).update(created_at=timezone.now() - timedelta(days=1, hours=1))
    colleague = StaffFactory(shop=shop, default_till=TillFactory(shop=shop, name="Till 2")).user
    theirs = create_sale(cashier=colleague, till=till, items=[ItemRequest(quantity=1, sku="SUG1KG")])

    response = cashier_client.get(reverse("pos:recent-sales"))

    html = response.content.decode()
    assert [row["sale"] for row in response.context["rows"]] == [waiting, paid]
    assert response.context["rows"][1]["methods"] == "Cash"
    assert response.context["rows"][0]["methods"] == "—"
    assert yesterday.receipt_number not in html and theirs.receipt_number not in html
    assert reverse("receipts:html", args=[paid.pk]) in html
    assert f"{reverse('pos:home')}?sale={waiting.pk}" in html
    assert response.context["completed_count"] == 1 and response.context["completed_total"] == Decimal("116.00")

