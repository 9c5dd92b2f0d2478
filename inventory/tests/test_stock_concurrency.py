"""Real concurrent transactions on PostgreSQL: row locks and the conditional update keep stock exact."""

import pytest
from django.db import connection

from comolor.testing.concurrency import run_at_once
from inventory.models import StockLevel, StockMovement
from inventory.services import InsufficientStock, find_stock_discrepancies, receive_stock, sell_stock, transfer_stock
from inventory.tests.factories import ProductFactory
from pos.tests.factories import SaleFactory, ShopFactory, TillFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL"),
]


def test_twenty_tills_selling_the_last_five_units_sell_exactly_five():
    till = TillFactory()
    shop, product = till.shop, ProductFactory(name="Kimbo 1kg")
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=5)
    sales = [SaleFactory(till=till) for _ in range(20)]

    outcomes = run_at_once([
        (lambda sale=sale: sell_stock(shop_id=shop.pk, sale_id=sale.pk, lines=[(product.pk, 1)]))
        for sale in sales
    ])

    sold = [o for o in outcomes if isinstance(o, list)]
    refused = [o for o in outcomes if isinstance(o, InsufficientStock)]
    assert (len(sold), len(refused)) == (5, 15), outcomes
    assert all("Only 0 of Kimbo 1kg in stock" in str(error) for error in refused)
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 0
    balances = sorted(StockMovement.objects.filter(kind="sale").values_list("balance_after", flat=True))
    assert balances == [0, 1, 2, 3, 4]
    assert find_stock_discrepancies() == []


def test_opposite_transfers_at_once_do_not_deadlock_and_conserve_stock():
    nairobi, mombasa, product = ShopFactory(), ShopFactory(), ProductFactory()
    receive_stock(shop_id=nairobi.pk, product_id=product.pk, quantity=100)
    receive_stock(shop_id=mombasa.pk, product_id=product.pk, quantity=100)

    def transfer(source, target):
        return lambda: transfer_stock(from_shop_id=source.pk, to_shop_id=target.pk, product_id=product.pk,
                                      quantity=3)

    outcomes = run_at_once([transfer(nairobi, mombasa) if i % 2 else transfer(mombasa, nairobi)
                            for i in range(20)])

    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    levels = dict(StockLevel.objects.values_list("shop_id", "on_hand"))
    assert levels == {nairobi.pk: 100, mombasa.pk: 100}
    assert StockMovement.objects.filter(kind__startswith="transfer").count() == 40
    assert find_stock_discrepancies() == []


def test_a_delivery_and_sales_at_once_lose_no_update():
    till = TillFactory()
    shop, product = till.shop, ProductFactory()
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=50)
    sales = [SaleFactory(till=till) for _ in range(10)]
    calls = [(lambda sale=sale: sell_stock(shop_id=shop.pk, sale_id=sale.pk, lines=[(product.pk, 2)]))
             for sale in sales]
    calls += [lambda: receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=7) for _ in range(10)]

    outcomes = run_at_once(calls)

    assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 50 - 20 + 70
    assert find_stock_discrepancies() == []
