"""CSV exports of sales and stock from the back office: right rows, streamed, shop-scoped."""

import csv
import io
from datetime import datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from inventory.tests.factories import ProductFactory, StockLevelFactory
from pos import reports
from pos.models import Sale, Staff
from pos.services import add_staff
from pos.tests.factories import PaymentFactory, SaleFactory, ShopFactory, TillFactory, UserFactory

pytestmark = pytest.mark.django_db

SALES_EXPORT = reverse("admin:pos_sale_export")
STOCK_EXPORT = reverse("admin:inventory_stocklevel_export")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return timezone.make_aware(datetime(2026, 11, day, hour, minute))


def sale(till, when, total, *, payments=(), status=Sale.Status.COMPLETED, receipt=None, phone="", cashier=None):
    paid = sum(amount for _, amount, _ in payments)
    made = SaleFactory(till=till, total=Decimal(total), amount_paid=paid, status=status, customer_phone=phone,
                       completed_at=when if status == Sale.Status.COMPLETED else None,
                       **({"receipt_number": receipt} if receipt else {}), **({"cashier": cashier} if cashier else {}))
    Sale.objects.filter(pk=made.pk).update(created_at=when)
    for method, amount, reference in payments:
        PaymentFactory(sale=made, method=method, amount=amount, reference=reference)
    return made


def rows(response) -> list[list[str]]:
    assert response.status_code == 200, response.content[:500]
    assert response.streaming and response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def shops(db):
    return ShopFactory(code="DEMO", name="Demo Duka"), ShopFactory(code="MSA", name="Mombasa Duka")


@pytest.fixture
def sales(shops):
    nairobi, mombasa = shops
    till, msa_till = TillFactory(shop=nairobi, name="Till 1"), TillFactory(shop=mombasa, name="Till 1")
    return {
        "before": sale(till, at(9, 23, 59), "100", payments=[("cash", Decimal("100"), "")]),
        "first": sale(till, at(10, 0, 1), "250", receipt="DEMO-0000001", phone="254708374149",
                      payments=[("cash", Decimal("50"), ""), ("mpesa", Decimal("200"), "UK12AB34CD")]),
        "pending": sale(till, at(11, 9), "75", status=Sale.Status.PENDING),
        "last": sale(till, at(12, 23, 58), "116", payments=[("mpesa", Decimal("116"), "UK99ZZ88YY")]),
        "after": sale(till, at(13, 0, 0), "300", payments=[("cash", Decimal("300"), "")]),
        "mombasa": sale(msa_till, at(11, 12), "500", payments=[("cash", Decimal("500"), "")]),
    }


def login(client, shop, role, username):
    user = UserFactory(username=username)
    add_staff(user, shop, role)
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(client, shops):
    return login(client, shops[0], Staff.Role.OWNER, "kamau")


@pytest.fixture
def manager_client(client, shops):
    return login(client, shops[0], Staff.Role.MANAGER, "akinyi")


def test_sales_from_the_first_to_the_last_day_inclusive_are_exported_oldest_first(owner_client, sales):
    table = rows(owner_client.get(SALES_EXPORT, {"date_from": "2026-11-10", "date_to": "2026-11-12"}))
    assert table[0] == reports.SALES_CSV_HEADER
    assert [row[0] for row in table[1:]] == [sales[key].receipt_number
                                             for key in ("first", "pending", "mombasa", "last")]


def test_a_sale_row_carries_its_payments_status_and_a_masked_phone(owner_client, sales):
    table = rows(owner_client.get(SALES_EXPORT, {"date_from": "2026-11-10", "date_to": "2026-11-10"}))
    assert table[1] == ["DEMO-0000001", "2026-11-10", "00:01:00", "DEMO", "Till 1", sales["first"].cashier.username,
                        "completed", "250.00", "16.00", "250.00", "50.00", "200.00", "UK12AB34CD", "2547*****149"]
    pending = rows(owner_client.get(SALES_EXPORT, {"date_from": "2026-11-11", "date_to": "2026-11-11",
                                                   "shop": sales["pending"].shop_id}))[1]
    assert pending[6:12] == ["pending", "75.00", "16.00", "0.00", "0.00", "0.00"]


def test_the_file_is_named_after_the_shop_and_the_days(owner_client, sales, shops):
    response = owner_client.get(SALES_EXPORT, {"date_from": "2026-11-10", "date_to": "2026-11-12",
                                               "shop": shops[1].pk})
    assert response["Content-Disposition"] == 'attachment; filename="sales-MSA-2026-11-10-to-2026-11-12.csv"'
    assert [row[0] for row in rows(response)[1:]] == [sales["mombasa"].receipt_number]


def test_a_manager_exports_only_their_own_shops_sales(manager_client, sales, shops):
    table = rows(manager_client.get(SALES_EXPORT, {"date_from": "2026-11-01", "date_to": "2026-11-30"}))
    assert {row[3] for row in table[1:]} == {"DEMO"} and len(table) == 6
    response = manager_client.get(SALES_EXPORT, {"date_from": "2026-11-01", "date_to": "2026-11-30",
                                                 "shop": shops[1].pk})
    assert response.status_code == 404


def test_a_range_that_ends_before_it_starts_is_refused_in_words(owner_client, sales):
    response = owner_client.get(SALES_EXPORT, {"date_from": "2026-11-12", "date_to": "2026-11-10"})
    assert response.status_code == 200 and not response.streaming
    assert "is before the first" in response.content.decode()


def test_without_dates_the_export_asks_for_them(owner_client):
    response = owner_client.get(SALES_EXPORT)
    assert not response.streaming and "Download CSV" in response.content.decode()
    assert "Enter the first day" in owner_client.get(SALES_EXPORT, {"date_to": "2026-11-10"}).content.decode()


def test_text_a_spreadsheet_would_run_as_a_formula_is_quoted(owner_client, shops):
    till = TillFactory(shop=shops[0], name="=HYPERLINK(\"http://x\")")
    sale(till, at(10, 9), "10", payments=[("cash", Decimal("10"), "")])
    table = rows(owner_client.get(SALES_EXPORT, {"date_from": "2026-11-10", "date_to": "2026-11-10"}))
    assert table[1][4] == "'=HYPERLINK(\"http://x\")"


def test_payments_are_matched_to_their_sales_across_chunks(owner_client, shops, monkeypatch):
    monkeypatch.setattr(reports, "CSV_CHUNK", 2)
    till = TillFactory(shop=shops[0], name="Till 1")
    made = [sale(till, at(10, 8 + i), str(10 * (i + 1)), payments=[("cash", Decimal(10 * (i + 1)), "")])
            for i in range(5)]
    table = rows(owner_client.get(SALES_EXPORT, {"date_from": "2026-11-10", "date_to": "2026-11-10"}))
    assert [(row[0], row[10]) for row in table[1:]] == [(s.receipt_number, f"{s.total:.2f}") for s in made]


@pytest.fixture
def stock(shops):
    nairobi, mombasa = shops
    sugar = ProductFactory(name="Sugar 1kg", sku="SUG1", barcode="6161100000017", price=Decimal("116"),
                           reorder_level=5)
    oil = ProductFactory(name="Oil 1L", sku="OIL1", barcode=None, price=Decimal("500"), reorder_level=2)
    StockLevelFactory(shop=nairobi, product=sugar, on_hand=40)
    StockLevelFactory(shop=nairobi, product=oil, on_hand=2)
    StockLevelFactory(shop=mombasa, product=sugar, on_hand=1)


def test_stock_is_exported_per_shop_with_its_value_and_low_flag(owner_client, stock):
    response = owner_client.get(STOCK_EXPORT)
    assert response["Content-Disposition"].startswith('attachment; filename="stock-all-shops-')
    table = rows(response)
    assert table[0][5:] == ["on hand", "reorder level", "low", "price (KES, VAT incl.)", "value at selling price (KES)"]
    assert table[1:] == [
        ["DEMO", "OIL1", "", "Oil 1L", "pc", "2", "2", "yes", "500.00", "1000.00"],
        ["DEMO", "SUG1", "6161100000017", "Sugar 1kg", "pc", "40", "5", "", "116.00", "4640.00"],
        ["MSA", "SUG1", "6161100000017", "Sugar 1kg", "pc", "1", "5", "yes", "116.00", "116.00"],
    ]


def test_stock_of_one_shop_only(owner_client, stock, shops):
    table = rows(owner_client.get(STOCK_EXPORT, {"shop": shops[1].pk}))
    assert [row[0] for row in table[1:]] == ["MSA"]


def test_a_manager_exports_only_their_own_shops_stock(manager_client, stock, shops):
    assert {row[0] for row in rows(manager_client.get(STOCK_EXPORT))[1:]} == {"DEMO"}
    assert manager_client.get(STOCK_EXPORT, {"shop": shops[1].pk}).status_code == 404
    assert manager_client.get(STOCK_EXPORT, {"shop": "all"}).status_code == 404


def test_the_lists_link_to_their_exports(owner_client, stock):
    assert SALES_EXPORT in owner_client.get(reverse("admin:pos_sale_changelist")).content.decode()
    assert STOCK_EXPORT in owner_client.get(reverse("admin:inventory_stocklevel_changelist")).content.decode()
