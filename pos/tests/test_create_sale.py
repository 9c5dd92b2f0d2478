from decimal import Decimal

import pytest

from inventory.models import StockMovement, TaxBand
from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from pos.models import Sale, SaleLine
from pos.services import ItemRequest, SaleError, close_shift, create_sale, parse_items, sell_for_cash, start_sale
from pos.tests.factories import TillFactory
from pos.tests.utils import written_rows


def test_a_pending_sale_captures_lines_prices_and_totals(cashier, till, product):
    sale = create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=3, barcode=product.barcode)],
                       customer_phone="254708374149")

    assert (sale.status, sale.total, sale.vat_total, sale.amount_paid) == (
        Sale.Status.PENDING, Decimal("348.00"), Decimal("48.00"), Decimal("0"))
    line = sale.lines.get()
    assert (line.name, line.quantity, line.unit_price, line.tax_band, line.tax_rate, line.line_total,
            line.vat_amount) == ("Sugar 1kg", 3, Decimal("116.00"), "B", Decimal("16"), Decimal("348.00"),
                                 Decimal("48.00"))
    assert sale.customer_phone == "254708374149"
    assert StockMovement.objects.filter(sale=sale).count() == 0  # stock moves on completion only


def test_later_catalogue_edits_do_not_change_a_sale(cashier, till, product):
    sale = create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku=product.sku)])
    product.name, product.price = "Sugar 1kg (new pack)", Decimal("130.00")
    product.save()

    line = SaleLine.objects.get(sale=sale)
    assert (line.name, line.unit_price) == ("Sugar 1kg", Decimal("116.00"))


def test_repeated_items_become_one_line(cashier, till, product):
    sale = create_sale(cashier=cashier, till=till, items=[
        ItemRequest(quantity=1, barcode=product.barcode), ItemRequest(quantity=2, product_id=product.pk),
    ])

    assert list(sale.lines.values_list("quantity", flat=True)) == [3]


@pytest.mark.parametrize("items, message", [
    ([], "The cart is empty. Scan or search for an item first."),
    ([ItemRequest(quantity=1, barcode="404")], "No product with code 404. Check the code or search by name."),
    ([ItemRequest(quantity=0, sku="SUG1KG")], "Quantity for SUG1KG must be 1 or more."),
    ([ItemRequest(quantity=51, sku="SUG1KG")], "Only 50 of Sugar 1kg in stock; 51 requested. Reduce the quantity."),
])
def test_a_sale_that_cannot_be_made_writes_nothing(cashier, till, product, items, message):
    before = written_rows()
    with pytest.raises(SaleError) as error:
        create_sale(cashier=cashier, till=till, items=items)
    assert str(error.value) == message
    assert written_rows() == before


def test_a_closed_till_cannot_sell(cashier, shop, product):
    closed = TillFactory(shop=shop, name="Back till", is_active=False)
    with pytest.raises(SaleError, match="Till Back till is closed"):
        create_sale(cashier=cashier, till=closed, items=[ItemRequest(quantity=1, sku="SUG1KG")])


def test_inactive_and_unstocked_products_are_refused(cashier, till, shop):
    ProductFactory(name="Old Soap", sku="OLD", is_active=False)
    ProductFactory(name="Imported Tea", sku="TEA")
    with pytest.raises(SaleError, match=r"Old Soap is no longer sold \(inactive\)"):
        create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="OLD")])
    with pytest.raises(SaleError, match="Imported Tea is not stocked in Demo Duka"):
        create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="TEA")])


def test_parse_items_reads_each_kind_of_code():
    assert parse_items([
        {"barcode": " 6161100000017 ", "quantity": 2}, {"sku": "SUG1KG", "quantity": 1.0},
        {"product_id": 7, "quantity": 3, "name": "ignored"},
    ]) == [ItemRequest(quantity=2, barcode="6161100000017"), ItemRequest(quantity=1, sku="SUG1KG"),
           ItemRequest(quantity=3, product_id=7)]


@pytest.mark.parametrize("raw, message", [
    ([{"barcode": "1", "quantity": True}], "Quantity for 1 must be a whole number (got True)."),
    ([{"product_id": True, "quantity": 1}], "Item 1: the product id must be a whole number."),
    ([{"sku": "A", "quantity": 1}, {"sku": "  ", "quantity": 1}],
     "Item 2: the sku must be text, e.g. \"6161100000017\"."),
    ([{"product_id": 3, "quantity": "1"}], "Quantity for item 1 must be a whole number (got '1')."),
])
def test_parse_items_refuses_wrong_types_in_words(raw, message):
    with pytest.raises(SaleError) as error:
        parse_items(raw)
    assert str(error.value) == message


def test_vat_is_rounded_per_line_and_summed_per_band(cashier, till, shop):
    # 1.00 at 16% holds 0.1379… VAT: per line that is 0.14, so three lines make 0.42 (not 0.41 on 3.00).
    cheap = [ProductFactory(sku=f"SWEET{n}", price=Decimal("1.00")) for n in range(3)]
    gas = ProductFactory(sku="GAS", price=Decimal("1250.00"), tax_band=TaxBand.REDUCED)
    milk = ProductFactory(sku="MILK", price=Decimal("65.00"), tax_band=TaxBand.EXEMPT)
    flour = ProductFactory(sku="FLOUR", price=Decimal("150.00"), tax_band=TaxBand.ZERO)
    for product in [*cheap, gas, milk, flour]:
        receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=10)

    sale = create_sale(cashier=cashier, till=till, items=[
        *[ItemRequest(quantity=1, sku=p.sku) for p in cheap], ItemRequest(quantity=1, sku="GAS"),
        ItemRequest(quantity=2, sku="MILK"), ItemRequest(quantity=1, sku="FLOUR"),
    ])

    vat = {line.product.sku: line.vat_amount for line in sale.lines.select_related("product")}
    assert vat == {"SWEET0": Decimal("0.14"), "SWEET1": Decimal("0.14"), "SWEET2": Decimal("0.14"),
                   "GAS": Decimal("92.59"), "MILK": Decimal("0.00"), "FLOUR": Decimal("0.00")}
    by_band = {}
    for line in sale.lines.all():
        by_band[line.tax_band] = by_band.get(line.tax_band, Decimal("0")) + line.vat_amount
    assert by_band == {"B": Decimal("0.42"), "E": Decimal("92.59"), "A": Decimal("0.00"), "C": Decimal("0.00")}
    assert sale.vat_total == sum(by_band.values()) == Decimal("93.01")
    assert sale.total == Decimal("1533.00")


def test_a_sale_belongs_to_the_tills_open_shift(cashier, till, product):
    sale = create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku=product.sku)])

    assert sale.shift == till.shifts.get()


@pytest.mark.parametrize("sell", [
    lambda cashier, till, items: create_sale(cashier=cashier, till=till, items=items),
    lambda cashier, till, items: sell_for_cash(cashier=cashier, till=till, items=items, tendered=Decimal("200")),
    lambda cashier, till, items: start_sale(cashier=cashier, till=till, items=items, method="mpesa",
                                            customer_phone="254708374149"),
], ids=["create_sale", "sell_for_cash", "start_sale"])
def test_with_no_open_shift_a_sale_is_refused_in_words_and_writes_nothing(cashier, till, product, sell):
    close_shift(shift_id=till.shifts.get().pk, counted_cash="0", user=cashier)
    before = written_rows()

    with pytest.raises(SaleError, match=r"^Open a shift on Till 1 first: enter the opening float\.$"):
        sell(cashier, till, [ItemRequest(quantity=1, sku=product.sku)])
    assert written_rows() == before
