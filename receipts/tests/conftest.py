"""Sales with fixed times, numbers and names, so receipts render to the same bytes on every run."""

import datetime
from decimal import Decimal

import pytest

from inventory.models import TaxBand
from mpesa.models import MpesaTransaction
from pos.models import Payment, Sale
from pos.services import ItemRequest, create_sale, record_payment, sell_for_cash
from receipts.tests.factories import stocked_product

SOLD_AT = datetime.datetime(2026, 11, 28, 11, 5, 9, tzinfo=datetime.UTC)  # 14:05:09 in Nairobi


@pytest.fixture(autouse=True)
def _receipt_settings(settings, tmp_path):
    settings.SECRET_KEY = "receipts-tests-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
    settings.RECEIPTS_VERIFY_BASE_URL = "https://pos.example.co.ke"
    settings.RECEIPTS_DEFAULT_PRINTER = f"file://{tmp_path / 'receipts'}"
    settings.RECEIPTS_DEFAULT_PAPER_WIDTH = 80
    settings.RECEIPTS_DEFAULT_PROFILE = "default"
    settings.RECEIPTS_CONNECT_TIMEOUT = 1.0
    settings.RECEIPTS_WRITE_TIMEOUT = 1.0


@pytest.fixture
def goods(shop):
    """Three tax bands, a name the printer cannot spell as written, and one too long for a line."""
    return [
        stocked_product(shop, name="Sugar 1kg", sku="SUG1KG", price=Decimal("116.00")),
        stocked_product(shop, name="Crème brûlée – “deluxe” 🍮", sku="CREME", price=Decimal("250.00")),
        stocked_product(shop, name="Maize flour 2kg (unga wa dona, exempt)", sku="UNGA2", price=Decimal("180.00"),
                 tax_band=TaxBand.EXEMPT),
        stocked_product(shop, name="Cooking gas refill", sku="GAS", price=Decimal("99.99"), tax_band=TaxBand.REDUCED),
    ]


def _freeze(sale: Sale) -> Sale:
    Sale.objects.filter(pk=sale.pk).update(created_at=SOLD_AT, completed_at=SOLD_AT)
    sale.refresh_from_db()
    return sale


@pytest.fixture
def cash_sale(cashier, till, goods):
    cashier.first_name = "Wanjiru"
    cashier.save(update_fields=["first_name"])
    items = [ItemRequest(quantity=2, sku="SUG1KG"), ItemRequest(quantity=1, sku="CREME"),
             ItemRequest(quantity=1, sku="UNGA2"), ItemRequest(quantity=3, sku="GAS")]
    sale, _ = sell_for_cash(cashier=cashier, till=till, items=items, tendered=Decimal("1000"))
    return _freeze(sale)


@pytest.fixture
def mpesa_sale(cashier, till, goods):
    cashier.first_name = "Wanjiru"
    cashier.save(update_fields=["first_name"])
    items = [ItemRequest(quantity=1, sku="SUG1KG"), ItemRequest(quantity=2, sku="UNGA2")]
    sale = create_sale(cashier=cashier, till=till, items=items, customer_phone="254708374149")
    payment = record_payment(sale_id=sale.pk, method=Payment.Method.MPESA, amount=sale.total,
                             reference="TKR3ABC123", user=cashier)
    MpesaTransaction.objects.create(
        receipt_number="TKR3ABC123", amount=sale.total, msisdn="254712345678", sale=sale, payment=payment,
        shop=sale.shop, source=MpesaTransaction.Source.STK_CALLBACK, match_status=MpesaTransaction.Match.MATCHED,
    )
    return _freeze(sale)
