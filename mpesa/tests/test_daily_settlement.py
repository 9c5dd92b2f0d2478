"""The daily settlement: one shop's day, sales by payment method against the M-Pesa ledger, the
differences and the rows behind each, in a fixed number of queries; the page and its CSV."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mpesa.models import MpesaTransaction
from mpesa.services import assign_mpesa_payment, daily_settlement
from mpesa.tests.factories import MpesaTransactionFactory, make_pending_sale
from pos.models import Sale
from pos.services import ItemRequest, close_shift, sell_for_cash
from pos.tests.backoffice import manager, manager_client, other_shop, other_till, owner  # noqa: F401

URL = reverse("admin:mpesa_mpesatransaction_settlement")
YESTERDAY = timedelta(days=1)


def cash_sale(till, cashier, product):
    return sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, product_id=product.pk)],
                         tendered=Decimal("200"))[0]


def paid_by_mpesa(sale, amount, code, **fields):
    """A ledger row that paid `sale` (saved matched: the signal applies it, as a callback does)."""
    return MpesaTransactionFactory(shop=sale.shop, sale=sale, amount=Decimal(amount), receipt_number=code,
                                   match_status="matched", source="stk_callback", **fields)


def back_a_day(model, obj):
    model.objects.filter(pk=obj.pk).update(created_at=obj.created_at - YESTERDAY)


@pytest.fixture
def day(shop, till, cashier, product, manager):
    """Cash 116; M-Pesa 232 by prompt; 150 assigned to a 116 sale (34 to refund); 500 unmatched; 100 found by
    Pull; yesterday's sale paid today (116); today's sale paid by yesterday's ledger row (116); one pending."""
    cash_sale(till, cashier, product)
    paid_by_mpesa(make_pending_sale(cashier=cashier, till=till, product=product, quantity=2), "232", "QK00000001")
    over = make_pending_sale(cashier=cashier, till=till, product=product)
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("150"), receipt_number="QK00000002")
    assign_mpesa_payment(transaction_id=tx.pk, sale_id=over.pk, user=manager, reason="paid to till")
    MpesaTransactionFactory(shop=shop, amount=Decimal("500"), receipt_number="QK00000003")
    MpesaTransactionFactory(shop=shop, amount=Decimal("100"), receipt_number="QK00000004", source="pull")
    old = make_pending_sale(cashier=cashier, till=till, product=product)
    back_a_day(Sale, old)
    paid_by_mpesa(old, "116", "QK00000005")
    early = paid_by_mpesa(make_pending_sale(cashier=cashier, till=till, product=product), "116", "QK00000006")
    back_a_day(MpesaTransaction, early)
    make_pending_sale(cashier=cashier, till=till, product=product)
    return timezone.localdate()


def test_the_days_figures_and_every_difference_explained(shop, day):
    s = daily_settlement(shop_id=shop.pk, day=day)

    assert {status: (row["count"], row["total"]) for status, row in s["sales"].items()} == {
        "completed": (4, Decimal("580.00")), "pending": (1, Decimal("116.00"))}
    methods = {row["method"]: (row["count"], row["applied"], row["received"]) for row in s["payments"]}
    assert methods == {"cash": (1, Decimal("116.00"), Decimal("200.00")),
                       "mpesa": (3, Decimal("464.00"), Decimal("498.00"))}
    assert (s["ledger"]["count"], s["ledger"]["total"]) == (5, Decimal("1098.00"))
    assert (s["ledger"]["pull_count"], s["ledger"]["pull"]) == (1, Decimal("100.00"))
    assert s["mpesa_on_sales"] == Decimal("498.00")
    assert s["difference"] == Decimal("600.00")  # 500 + 100 + 116 (yesterday's sale) − 116 (yesterday's row)
    assert s["unexplained"] == 0
    assert {tx.receipt_number for tx in s["not_on_days_sales"]} == {"QK00000003", "QK00000004", "QK00000005"}
    assert s["not_on_days_sales_total"] == Decimal("716.00")
    assert [p.reference for p in s["entered_elsewhere"]] == ["QK00000006"]
    assert s["entered_elsewhere_total"] == Decimal("116.00")
    assert s["excess_to_refund"] == Decimal("34.00") and [tx.receipt_number for tx in s["excess_rows"]] == [
        "QK00000002"]
    assert [sale.status for sale in s["open_sales"]] == ["pending"]


def test_the_settlement_takes_the_same_number_of_queries_however_busy_the_day(shop, day, till, cashier, product):
    with CaptureQueriesContext(connection) as quiet:
        daily_settlement(shop_id=shop.pk, day=day)
    for n in range(5):
        cash_sale(till, cashier, product)
        MpesaTransactionFactory(shop=shop, amount=Decimal("10"), receipt_number=f"QK1000000{n}")
    with CaptureQueriesContext(connection) as busy:
        daily_settlement(shop_id=shop.pk, day=day)

    assert len(busy) == len(quiet) <= 10


def test_another_day_and_another_shop_are_left_out(shop, other_shop, other_till, day):
    make_pending_sale(cashier=other_till.shifts.get().opened_by, till=other_till)
    MpesaTransactionFactory(shop=other_shop, amount=Decimal("999"), receipt_number="QK99999999")

    assert daily_settlement(shop_id=shop.pk, day=day)["ledger"]["total"] == Decimal("1098.00")
    empty = daily_settlement(shop_id=shop.pk, day=day - YESTERDAY * 3)
    assert (empty["sales"], empty["payments"], empty["difference"]) == ({}, [], 0)


def test_a_closed_shifts_cash_difference_is_listed(shop, till, cashier, product):
    cash_sale(till, cashier, product)
    shift = till.shifts.get()
    close_shift(shift_id=shift.pk, counted_cash=Decimal("100"), user=cashier)

    drawers = daily_settlement(shop_id=shop.pk, day=timezone.localdate())["drawers"]

    assert [(d.pk, d.expected_cash, d.counted_cash, d.cash_difference) for d in drawers] == [
        (shift.pk, Decimal("116.00"), Decimal("100.00"), Decimal("-16.00"))]


def test_the_page_shows_the_figures_and_lists(manager_client, shop, day):
    page = manager_client.get(URL, {"shop": shop.pk, "date": day.isoformat()})

    assert page.status_code == 200
    text = page.content.decode()
    assert 'id="settlement-difference">600.00<' in text and 'id="settlement-unexplained">0.00<' in text
    assert "QK00000003" in text and "QK00000006" in text and "Download CSV" in text


def test_the_page_opens_on_the_managers_shop_today(manager_client, shop, day):
    page = manager_client.get(URL)

    assert page.context["s"]["shop"] == shop and page.context["s"]["day"] == day


def test_the_csv_has_the_figures_and_the_rows_behind_them(manager_client, shop, day):
    response = manager_client.get(URL, {"shop": shop.pk, "date": day.isoformat(), "format": "csv"})

    assert response["Content-Type"].startswith("text/csv")
    assert f'settlement-DEMO-{day:%Y-%m-%d}.csv' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert ["difference", "ledger minus the day's sales", "", "600.00", ""] in rows
    assert ["mpesa", "pull total", "1", "100.00", ""] in rows
    assert any(row[:2] == ["received, not on the day's sales", "QK00000003"] for row in rows)
    assert any(row[:2] == ["excess to refund", "QK00000002"] for row in rows)


def test_a_manager_asking_for_another_shop_gets_404(manager_client, other_shop):
    assert manager_client.get(URL, {"shop": other_shop.pk}).status_code == 404
    assert manager_client.get(URL, {"shop": other_shop.pk, "format": "csv"}).status_code == 404


def test_an_owner_picks_any_shop(client, owner, other_shop):
    client.force_login(owner)

    page = client.get(URL, {"shop": other_shop.pk})

    assert page.status_code == 200 and page.context["s"]["shop"] == other_shop


def test_a_bad_date_is_said_in_words(manager_client, shop):
    page = manager_client.get(URL, {"shop": shop.pk, "date": "yesterday"})

    assert page.status_code == 200 and page.context["s"] is None
    assert "Enter a valid date" in page.content.decode()
