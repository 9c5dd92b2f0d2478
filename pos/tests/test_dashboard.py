"""The sales dashboard: the day's and week's figures, and who sees which shop's."""

from datetime import date, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from inventory.tests.factories import ProductFactory, StockLevelFactory
from pos.models import Sale, Staff
from pos.reports import sales_dashboard
from pos.services import add_staff
from pos.tests.factories import PaymentFactory, SaleFactory, SaleLineFactory, ShopFactory, TillFactory, UserFactory

pytestmark = pytest.mark.django_db

WEDNESDAY = date(2026, 11, 25)  # the week runs from Monday 23 to Sunday 29 November 2026
DASHBOARD = reverse("admin:pos_sale_dashboard")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment in November 2026, Nairobi time."""
    return timezone.make_aware(datetime(2026, 11, day, hour, minute))


def sell(till, when, items, *, method="cash", status=Sale.Status.COMPLETED):
    """A sale of (product, quantity) items made at `when`, paid in full by `method` if completed."""
    total = sum(product.price * quantity for product, quantity in items)
    completed = status == Sale.Status.COMPLETED
    sale = SaleFactory(till=till, status=status, total=total, amount_paid=total if completed else 0,
                       completed_at=when if completed else None)
    Sale.objects.filter(pk=sale.pk).update(created_at=when)  # auto_now_add ignores the value given
    for product, quantity in items:
        SaleLineFactory(sale=sale, product=product, quantity=quantity, unit_price=product.price,
                        line_total=product.price * quantity)
    if completed:
        PaymentFactory(sale=sale, method=method, amount=total)
    return sale


@pytest.fixture
def chain(db):
    """Two shops' week; the figures the tests expect are worked out beside each sale."""
    nairobi = ShopFactory(code="DEMO", name="Demo Duka")
    mombasa = ShopFactory(code="MSA", name="Mombasa Duka")
    till, msa_till = TillFactory(shop=nairobi, name="Till 1"), TillFactory(shop=mombasa, name="Till 1")
    sugar = ProductFactory(name="Sugar 1kg", price=Decimal("116"), reorder_level=5)
    flour = ProductFactory(name="Flour 2kg", price=Decimal("200"), reorder_level=10)
    oil = ProductFactory(name="Oil 1L", price=Decimal("500"), reorder_level=2)
    StockLevelFactory(shop=nairobi, product=sugar, on_hand=3)  # low
    StockLevelFactory(shop=nairobi, product=flour, on_hand=50)
    StockLevelFactory(shop=mombasa, product=oil, on_hand=0)  # out
    StockLevelFactory(shop=mombasa, product=sugar, on_hand=5)  # at the level: low
    # Wednesday in Nairobi: 232 + 200 (M-Pesa) at 9, 116 at 14
    sell(till, at(25, 9, 15), [(sugar, 2)])
    sell(till, at(25, 9, 40), [(flour, 1)], method="mpesa")
    sell(till, at(25, 14, 5), [(sugar, 1)])
    sell(till, at(25, 11), [(oil, 1)], status=Sale.Status.PENDING)  # not paid: not counted
    sell(till, at(25, 12), [(oil, 1)], status=Sale.Status.CANCELLED)
    sell(till, at(23, 10), [(flour, 3)])  # Monday: 600
    sell(till, at(22, 20), [(oil, 9)])  # the Sunday before: last week
    sell(till, at(26, 10), [(oil, 9)])  # Thursday: after the day shown
    # Wednesday in Mombasa: 500 (M-Pesa) at 9; Tuesday 1,000
    sell(msa_till, at(25, 9, 30), [(oil, 1)], method="mpesa")
    sell(msa_till, at(24, 16), [(oil, 2)])
    return nairobi, mombasa


@pytest.fixture
def owner_client(client, chain):
    user = UserFactory(username="kamau")
    add_staff(user, chain[0], Staff.Role.OWNER)
    client.force_login(user)
    return client


@pytest.fixture
def manager_client(client, chain):
    user = UserFactory(username="akinyi")
    add_staff(user, chain[0], Staff.Role.MANAGER)
    client.force_login(user)
    return client


def test_the_days_and_weeks_totals_count_completed_sales_only(chain):
    figures = sales_dashboard(day=WEDNESDAY, shop_ids=None)
    assert (figures["day_total"], figures["day_count"]) == (Decimal("1048"), 4)
    assert figures["day_average"] == Decimal("262")
    assert (figures["week_total"], figures["week_count"]) == (Decimal("2648"), 6)


def test_sales_are_split_per_shop_busiest_week_first(chain):
    nairobi, mombasa = chain
    rows = sales_dashboard(day=WEDNESDAY, shop_ids=None)["per_shop"]
    assert [(row["shop"], row["day_total"], row["day_count"], row["week_total"], row["week_count"]) for row in rows] == [
        (mombasa, Decimal("500"), 1, Decimal("1500"), 2),
        (nairobi, Decimal("548"), 3, Decimal("1148"), 4),
    ]


def test_sales_per_hour_are_in_nairobi_time_with_the_weeks_daily_average(chain):
    hours = sales_dashboard(day=WEDNESDAY, shop_ids=None)["per_hour"]
    assert {hour: row["day_total"] for hour, row in hours.items() if row["day_total"]} == {
        9: Decimal("932"), 14: Decimal("116")}
    assert hours[9]["day_count"] == 3
    # Monday to Wednesday is three days: (932 at 9 on Wednesday) / 3, and Tuesday's 1,000 at 16 / 3
    assert hours[9]["week_average"] == Decimal("932") / 3
    assert hours[16]["week_average"] == Decimal("1000") / 3


def test_a_sale_just_after_midnight_belongs_to_its_own_local_day(chain):
    nairobi, _ = chain
    till = nairobi.tills.get()
    sell(till, at(25, 0, 30), [(ProductFactory(price=Decimal("50")), 1)])  # 21:30 UTC on Tuesday
    figures = sales_dashboard(day=WEDNESDAY, shop_ids=[nairobi.pk])
    assert figures["per_hour"][0]["day_total"] == Decimal("50")
    assert figures["day_total"] == Decimal("598")


def test_the_week_is_shown_day_by_day_from_monday(chain):
    days = sales_dashboard(day=WEDNESDAY, shop_ids=None)["per_weekday"]
    assert [(row["date"].day, row["total"]) for row in days] == [
        (23, Decimal("600")), (24, Decimal("1000")), (25, Decimal("1048")), (26, 0), (27, 0), (28, 0), (29, 0)]


def test_takings_are_split_by_payment_method(chain):
    methods = sales_dashboard(day=WEDNESDAY, shop_ids=None)["per_method"]
    assert methods == [
        {"method": "Cash", "day_total": Decimal("348"), "week_total": Decimal("1948")},
        {"method": "M-Pesa", "day_total": Decimal("700"), "week_total": Decimal("700")},
    ]


def test_top_products_are_the_weeks_best_sellers_by_takings(chain):
    top = sales_dashboard(day=WEDNESDAY, shop_ids=None)["top_products"]
    assert [(row["name"], row["quantity"], row["revenue"]) for row in top] == [
        ("Oil 1L", 3, Decimal("1500")), ("Flour 2kg", 4, Decimal("800")), ("Sugar 1kg", 3, Decimal("348"))]


def test_low_stock_lists_products_at_or_below_their_reorder_level_emptiest_first(chain):
    figures = sales_dashboard(day=WEDNESDAY, shop_ids=None)
    assert [(level.product.name, level.shop.code, level.on_hand) for level in figures["low_stock"]] == [
        ("Oil 1L", "MSA", 0), ("Sugar 1kg", "DEMO", 3), ("Sugar 1kg", "MSA", 5)]
    assert figures["low_stock_count"] == 3


def test_one_shops_figures_leave_the_other_shop_out(chain):
    nairobi, _ = chain
    figures = sales_dashboard(day=WEDNESDAY, shop_ids=[nairobi.pk])
    assert (figures["day_total"], figures["week_total"]) == (Decimal("548"), Decimal("1148"))
    assert [row["shop"] for row in figures["per_shop"]] == [nairobi]
    assert [row["name"] for row in figures["top_products"]] == ["Flour 2kg", "Sugar 1kg"]
    assert [level.product.name for level in figures["low_stock"]] == ["Sugar 1kg"]


def test_an_owner_sees_every_shop_and_can_pick_one(owner_client, chain):
    nairobi, mombasa = chain
    page = owner_client.get(DASHBOARD, {"date": "2026-11-25"}).content.decode()
    assert "KES 1,048" in page and "KES 2,648" in page
    assert "Demo Duka" in page and "Mombasa Duka" in page
    assert '<svg class="dash-chart"' in page and "<script" not in page.split('id="content-main"')[1]
    picked = owner_client.get(DASHBOARD, {"date": "2026-11-25", "shop": mombasa.pk}).content.decode()
    assert "KES 500" in picked and "KES 1,500" in picked and "KES 1,048" not in picked


def test_a_manager_sees_only_their_own_shop(manager_client, chain):
    page = manager_client.get(DASHBOARD, {"date": "2026-11-25"}).content.decode()
    assert "KES 548" in page and "KES 1,148" in page
    assert "Mombasa Duka" not in page and "Oil 1L" not in page


def test_another_shop_in_the_address_is_404_for_a_manager(manager_client, chain):
    _, mombasa = chain
    assert manager_client.get(DASHBOARD, {"shop": mombasa.pk}).status_code == 404
    assert manager_client.get(DASHBOARD, {"shop": "x"}).status_code == 404


def test_a_bad_date_says_so_and_shows_today(owner_client):
    page = owner_client.get(DASHBOARD, {"date": "2026-11-31"}).content.decode()
    assert "Enter the day as YYYY-MM-DD" in page and "(today)" in page


def test_a_cashier_cannot_open_the_dashboard(client, chain):
    user = UserFactory(username="wanjiru")
    add_staff(user, chain[0], Staff.Role.CASHIER)
    client.force_login(user)
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_admin_index_and_the_sales_list_link_to_the_dashboard(owner_client):
    assert DASHBOARD in owner_client.get(reverse("admin:index")).content.decode()
    assert DASHBOARD in owner_client.get(reverse("admin:pos_sale_changelist")).content.decode()


def test_the_dashboard_costs_the_same_queries_however_many_sales(owner_client, chain):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert owner_client.get(DASHBOARD, {"date": "2026-11-25"}).status_code == 200
        return len(captured)

    before = queries()
    till = chain[0].tills.get()
    product = ProductFactory(price=Decimal("10"))
    for hour in range(8, 20):
        sell(till, at(25, hour), [(product, 1)])
    assert queries() == before
