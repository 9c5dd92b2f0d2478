"""Change lists that stay fast on million-row tables (inventory.admin.BigListAdmin and friends):
search by code on indexes, a bounded or estimated count, a date hierarchy without a full scan."""

from io import StringIO

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from inventory.admin import EstimatedCountPaginator
from inventory.models import StockMovement
from mpesa.models import MpesaTransaction
from pos.models import Sale

pytestmark = pytest.mark.django_db

SALES = reverse("admin:pos_sale_changelist")


@pytest.fixture
def chain(settings):
    settings.DEBUG = True  # seed_demo refuses to run without it
    call_command("seed_demo", "--shops", "2", "--products", "50", "--sales", "150", "--days", "40", stdout=StringIO())


@pytest.fixture
def owner(client, chain):
    client.force_login(User.objects.get(username="admin"))
    return client


def listed(client, url, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200
    return response.content.decode()


def test_a_receipt_number_is_found_exactly_even_typed_in_small_letters(owner):
    sale, other = Sale.objects.order_by("pk")[:2]
    page = listed(owner, SALES, q=sale.receipt_number.lower())
    assert sale.receipt_number in page and other.receipt_number not in page


def test_a_sale_is_found_by_the_mpesa_code_that_paid_it(owner):
    tx = MpesaTransaction.objects.filter(match_status="matched").select_related("sale").first()
    page = listed(owner, SALES, q=tx.receipt_number)
    assert tx.sale.receipt_number in page and "1 sale" in page


def test_a_ledger_row_is_found_by_its_sales_receipt_number(owner):
    tx = MpesaTransaction.objects.filter(match_status="matched").select_related("sale").first()
    page = listed(owner, reverse("admin:mpesa_mpesatransaction_changelist"), q=tx.sale.receipt_number)
    assert tx.receipt_number in page


def test_stock_movements_are_found_by_barcode(owner):
    movement = StockMovement.objects.filter(kind="sale").select_related("product").first()
    page = listed(owner, reverse("admin:inventory_stockmovement_changelist"), q=movement.product.barcode)
    expected = StockMovement.objects.filter(product=movement.product).count()
    assert f"{expected} stock movement" in page


def test_a_search_by_code_joins_no_other_table_into_the_lists_query(owner):
    tx = MpesaTransaction.objects.filter(match_status="matched").first()
    with CaptureQueriesContext(connection) as queries:
        listed(owner, reverse("admin:mpesa_mpesatransaction_changelist"), q=tx.receipt_number)
    page_query = next(q["sql"] for q in queries.captured_queries
                      if q["sql"].startswith('SELECT "mpesa_mpesatransaction"."id"') and "LIMIT" in q["sql"])
    assert "UPPER" not in page_query and "LIKE" not in page_query and "JOIN \"mpesa_stkrequest\"" not in page_query


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the estimate is PostgreSQL's planner's")
def test_past_the_bound_the_count_is_the_planners_estimate_and_says_about(owner, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "EXACT_UP_TO", 20)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE pos_sale")
    page = listed(owner, SALES)
    assert "about " in page
    # A page the estimate promises beyond the rows there are is shown empty, not refused.
    assert owner.get(SALES, {"p": 99}).status_code == 200


def test_below_the_bound_the_count_is_exact(owner):
    page = listed(owner, SALES)
    assert "150 sales" in page and "about " not in page


def test_the_date_hierarchy_reads_no_row_but_the_first_and_last(owner):
    with CaptureQueriesContext(connection) as queries:
        page = listed(owner, reverse("admin:inventory_stockmovement_changelist"))
    assert not any("DISTINCT" in q["sql"] for q in queries.captured_queries)
    first = timezone.localtime(StockMovement.objects.order_by("created_at").first().created_at)
    last = timezone.localtime(StockMovement.objects.order_by("-created_at").first().created_at)
    year_or_month = "created_at__month" if first.year == last.year else "created_at__year"
    assert year_or_month in page


def test_the_date_hierarchy_offers_the_days_of_a_month(owner):
    sale = Sale.objects.order_by("-created_at").first()
    local = timezone.localtime(sale.created_at)
    page = listed(owner, SALES, created_at__year=local.year, created_at__month=local.month)
    assert f"created_at__day={local.day}" in page


def test_a_month_without_rows_lists_none(owner):
    page = listed(owner, SALES, created_at__year=2001, created_at__month=1)
    assert "0 sales" in page


def test_the_shop_filter_lists_shops_from_the_shop_table_for_an_owner_only(client, chain):
    client.force_login(User.objects.get(username="admin"))
    with CaptureQueriesContext(connection) as queries:
        page = listed(client, SALES)
    assert "Comolor Branch 2" in page
    assert not any("DISTINCT" in q["sql"] and "pos_sale" in q["sql"] for q in queries.captured_queries)
    client.force_login(User.objects.get(username="manager"))
    assert "Comolor Branch 2" not in listed(client, SALES)


def test_every_row_checkbox_is_djangos_markup(owner):
    sale = Sale.objects.order_by("-created_at", "-id").first()
    model_admin = admin.site._registry[Sale]
    assert model_admin.action_checkbox(sale) == admin.ModelAdmin.action_checkbox(model_admin, sale)


def test_a_made_up_receipt_finds_nothing(owner):
    assert "0 sales" in listed(owner, SALES, q="NOPE-0000000")
