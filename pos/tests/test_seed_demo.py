from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F, Q, Sum
from django.utils import timezone

from inventory.models import Product, StockLevel, StockMovement
from inventory.services import find_stock_discrepancies
from mpesa.invariants import check_books
from mpesa.models import MpesaAccount, MpesaTransaction, StkRequest
from pos import bulk_demo
from pos.management.commands.seed_demo import DEMO_PRODUCTS, ean13
from pos.models import Payment, Sale, SaleLine, Shift, Shop, Staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def debug(settings):
    settings.DEBUG = True


def seed(*args):
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def _snapshot():
    return {model.__name__: model.objects.count()
            for model in (Shop, Product, StockLevel, StockMovement, Staff, Sale, SaleLine, Payment, MpesaAccount)}


def test_it_makes_the_demo_shop_with_a_till_and_a_sandbox_paybill(debug):
    seed()
    shop = Shop.objects.get(code="DEMO")
    assert shop.name == "Comolor Demo Duka" and "Nairobi" in shop.address and shop.kra_pin
    assert [till.name for till in shop.tills.all()] == ["Till 1"]
    account = MpesaAccount.objects.get(shop=shop)
    assert (account.kind, account.shortcode) == ("paybill", "174379")


def test_the_products_are_stocked_through_the_ledger(debug):
    seed()
    assert Product.objects.count() == len(DEMO_PRODUCTS) >= 30
    assert StockLevel.objects.filter(shop__code="DEMO", on_hand__gt=0).count() == len(DEMO_PRODUCTS)
    assert set(StockMovement.objects.values_list("kind", flat=True)) == {"receive"}
    assert find_stock_discrepancies() == []


def test_the_products_have_valid_kenyan_ean13_barcodes_and_every_tax_band(debug):
    seed()
    barcodes = list(Product.objects.values_list("barcode", flat=True))
    assert all(len(code) == 13 and code.startswith("616") and ean13(code[:12]) == code for code in barcodes)
    assert set(Product.objects.values_list("tax_band", flat=True)) == {"A", "B", "C", "E"}


def test_the_ean13_check_digit_is_the_standard_one():
    assert ean13("400638133393") == "4006381333931"  # the check digit worked example used by GS1 guides
    assert ean13("590123412345") == "5901234123457"


def test_the_demo_logins_work_with_their_roles(debug):
    seed()
    for username, role, is_staff in [("cashier", "cashier", False), ("manager", "manager", True),
                                     ("admin", "owner", True)]:
        user = authenticate(username=username, password=username)
        assert user is not None, username
        assert (user.staff.role, user.staff.shop.code, user.is_staff) == (role, "DEMO", is_staff)
        assert user.staff.default_till.name == "Till 1"
    assert authenticate(username="admin", password="admin").is_superuser


def test_running_it_twice_changes_nothing_and_says_so(debug):
    first = seed()
    before = _snapshot()
    second = seed()
    assert "Created shop DEMO" in first
    assert second.strip() == "Demo data already present; nothing changed."
    assert _snapshot() == before


def test_it_refuses_to_run_with_debug_off(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="runs only with DEBUG=True"):
        call_command("seed_demo")
    assert not Shop.objects.exists()


def test_the_benchmark_options_keep_the_books_right(debug):
    output = seed("--products", "120", "--sales", "300")
    assert Product.objects.count() == 120
    assert Sale.objects.count() == 300
    assert "sales: 300/300 (100%)" in output
    completed = Sale.objects.filter(status="completed")
    assert 280 < completed.count() < 300  # a few are left pending or cancelled
    sale = completed.prefetch_related("lines", "payments").first()
    assert sale.total == sum(line.line_total for line in sale.lines.all()) == sale.amount_paid
    assert sum(p.amount for p in sale.payments.all()) == sale.total
    assert (StockMovement.objects.filter(kind="sale").count()
            == SaleLine.objects.filter(sale__status="completed").count())
    assert len(set(Sale.objects.values_list("receipt_number", flat=True))) == 300
    assert Shop.objects.get(code="DEMO").last_receipt_seq == 300
    assert find_stock_discrepancies() == []
    assert check_books() == []


def test_the_ledger_gets_a_row_per_sale_each_with_its_raw_callback(debug):
    seed("--sales", "400")
    ledger = MpesaTransaction.objects.all()
    assert ledger.count() == 400
    assert {row.match_status for row in ledger} == {"matched", "unmatched", "review"}
    assert not ledger.filter(callback__isnull=True).exists()
    assert set(ledger.values_list("source", flat=True)) == {"stk_callback", "c2b"}
    paid_by_stk = ledger.filter(source="stk_callback").select_related("stk_request", "payment", "callback").first()
    assert paid_by_stk.stk_request.status == "paid" and paid_by_stk.payment.reference == paid_by_stk.receipt_number
    assert paid_by_stk.callback.trans_id == paid_by_stk.receipt_number
    assert b'"MpesaReceiptNumber","Value":"%s"' % paid_by_stk.receipt_number.encode() in bytes(paid_by_stk.callback.body)
    assert Payment.objects.filter(method="mpesa").count() == ledger.filter(payment__isnull=False).count()
    assert StkRequest.objects.filter(status="unknown", sale__status="pending").exists()


def test_a_chain_gets_branches_with_tills_stock_and_shifts(debug):
    output = seed("--shops", "3", "--products", "60", "--sales", "600", "--days", "30")
    assert "Created branch BR03 with 2 tills, 42 products in stock" in output
    assert list(Shop.objects.order_by("code").values_list("code", flat=True)) == ["BR02", "BR03", "DEMO"]
    assert set(Sale.objects.values_list("shop__code", flat=True)) == {"BR02", "BR03", "DEMO"}
    assert StockLevel.objects.count() == 3 * 60
    oldest = timezone.localtime(Sale.objects.order_by("created_at").first().created_at)
    assert timezone.localdate() - oldest.date() <= timedelta(days=30) and 7 <= oldest.hour < 21
    # Every sale is in its till's shift of that day; past days' shifts are closed with their count.
    assert not Sale.objects.filter(shift__isnull=True).exists()
    assert not Sale.objects.exclude(shift__till=F("till")).exists()
    closed = Shift.objects.filter(status="closed")
    assert closed.exists() and not closed.filter(expected_cash__isnull=True).exists()
    assert not Shift.objects.filter(status="open", opened_at__date__lt=timezone.localdate()).exists()
    shift = closed.exclude(close_note__contains="short").annotate(cash=Sum(
        "sales__payments__amount", filter=Q(sales__payments__method="cash"))).filter(cash__gt=0).first()
    assert shift.expected_cash == shift.opening_float + shift.cash == shift.counted_cash
    assert check_books() == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the large-load path is PostgreSQL's (COPY)")
def test_a_large_load_sets_the_indexes_aside_and_rebuilds_them(debug, monkeypatch):
    def indexes():
        with connection.cursor() as cursor:
            # Names: a rebuilt partial index may deparse its condition with other casts.
            cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
            return [name for name, in cursor.fetchall()]

    before = indexes()
    monkeypatch.setattr(bulk_demo, "LOAD_MODE_MIN", 0)
    assert "indexes rebuilt" in seed("--sales", "300")
    assert indexes() == before
    assert find_stock_discrepancies() == [] and check_books() == []


def test_the_benchmark_options_are_idempotent_too(debug):
    seed("--products", "60", "--sales", "50")
    before = _snapshot()
    assert seed("--products", "60", "--sales", "50").strip() == "Demo data already present; nothing changed."
    assert _snapshot() == before
    seed("--sales", "80")
    assert Sale.objects.count() == 80
    assert find_stock_discrepancies() == [] and check_books() == []


def test_sales_restock_a_product_before_it_runs_out(debug):
    seed("--sales", "400")  # demo products only: a few dozen, some with 4 in stock
    assert StockMovement.objects.filter(reference="DEMO-RESTOCK").exists()
    assert not StockLevel.objects.filter(on_hand__lt=0).exists()
    assert find_stock_discrepancies() == []
