"""The receipt document built from a sale: what every rendering shows."""

from decimal import Decimal

from django.db import transaction
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from inventory.models import TaxBand
from mpesa.models import MpesaTransaction
from pos.services import ItemRequest, sell_for_cash
from receipts.document import ReceiptPayment
from receipts.rendering import Row, layout_receipt, money
from receipts.services import build_receipt, verify_receipt
from receipts.tests.factories import stocked_product


def test_cash_receipt_has_the_shop_sale_and_payment(cash_sale):
    receipt = build_receipt(cash_sale.pk)
    assert (receipt.shop_name, receipt.shop_address, receipt.kra_pin) == ("Demo Duka", "Moi Avenue, Nairobi",
                                                                          "P051234567X")
    assert (receipt.till_name, receipt.cashier_name, receipt.receipt_number) == ("Till 1", "Wanjiru", "DEMO-0000001")
    assert receipt.issued_at.isoformat() == "2026-11-28T14:05:09+03:00"
    assert [(line.name, line.quantity, line.unit_price, line.total) for line in receipt.lines][0] == (
        "Sugar 1kg", 2, Decimal("116.00"), Decimal("232.00"))
    assert receipt.total == Decimal("961.97")
    assert receipt.payments == (ReceiptPayment(method="cash", amount=Decimal("961.97"), tendered=Decimal("1000.00"),
                                               change=Decimal("38.03")),)
    assert receipt.footer == "Thank you for shopping with us!" and not receipt.is_copy
    assert build_receipt(cash_sale.pk, copy=True).is_copy


def test_vat_per_band_is_the_sum_of_the_lines(cash_sale):
    receipt = build_receipt(cash_sale.pk)
    lines = list(cash_sale.lines.all())
    assert [band.band for band in receipt.tax_bands] == ["A", "B", "E"]
    for band in receipt.tax_bands:
        in_band = [line for line in lines if line.tax_band == band.band]
        assert band.gross == sum(line.line_total for line in in_band)
        assert band.vat == sum(line.vat_amount for line in in_band)
        assert band.net == band.gross - band.vat
    assert sum(band.vat for band in receipt.tax_bands) == receipt.vat_total == cash_sale.vat_total == Decimal("88.70")
    printed = [row.text for row in layout_receipt(receipt, 48) if isinstance(row, Row)]
    assert "B 16%               482.00      66.48     415.52" in printed
    assert "Total               961.97      88.70     873.27" in printed


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.decimals("0.01", "9999.99", places=2), st.integers(1, 12),
                          st.sampled_from(TaxBand.values)), min_size=1, max_size=6))
def test_vat_table_adds_up_to_the_lines_for_any_prices(shop, cashier, till, items):
    with transaction.atomic():
        requests = []
        for index, (price, quantity, band) in enumerate(items):
            product = stocked_product(shop, name=f"Item {index}", sku=f"H{index}", price=price, tax_band=band)
            requests.append(ItemRequest(quantity=quantity, sku=product.sku))
        sale, _ = sell_for_cash(cashier=cashier, till=till, items=requests, tendered=Decimal("10000000"))
        receipt = build_receipt(sale.pk)
        assert sum(band.vat for band in receipt.tax_bands) == sum(line.vat_amount for line in sale.lines.all())
        assert sum(band.gross for band in receipt.tax_bands) == receipt.total
        assert all(band.net + band.vat == band.gross for band in receipt.tax_bands)
        transaction.set_rollback(True)  # each example starts from the same shop


def test_mpesa_payment_shows_code_amount_and_masked_phone_from_the_ledger(mpesa_sale):
    [payment] = build_receipt(mpesa_sale.pk).payments
    assert payment == ReceiptPayment(method="mpesa", amount=Decimal("476.00"), reference="TKR3ABC123",
                                     phone="2547*****678")


def test_mpesa_phone_falls_back_to_the_sales_customer_phone(mpesa_sale):
    MpesaTransaction.objects.update(msisdn="")
    assert build_receipt(mpesa_sale.pk).payments[0].phone == "2547*****149"


def test_hashed_msisdn_is_not_printed(mpesa_sale):
    mpesa_sale.customer_phone = ""
    mpesa_sale.save(update_fields=["customer_phone"])
    MpesaTransaction.objects.update(msisdn="6f1ed002ab5595859014ebf0951522d9" * 2)
    assert build_receipt(mpesa_sale.pk).payments[0].phone == ""


def test_shop_not_registered_for_vat_prints_no_vat_table(cash_sale):
    cash_sale.shop.vat_registered = False
    cash_sale.shop.save(update_fields=["vat_registered"])
    assert build_receipt(cash_sale.pk).tax_bands == ()


def test_qr_code_points_at_the_verification_page_of_this_receipt(cash_sale):
    url = build_receipt(cash_sale.pk).verify_url
    assert url.startswith("https://pos.example.co.ke/receipts/verify/DEMO-0000001/")
    token = url.rstrip("/").rsplit("/", 1)[1]
    assert verify_receipt("DEMO-0000001", token) == cash_sale
    assert verify_receipt("DEMO-0000002", token) is None


def test_money_has_thousands_separators():
    assert money(Decimal("1234567.5")) == "1,234,567.50"
