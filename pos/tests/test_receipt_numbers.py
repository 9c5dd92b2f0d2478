import threading
from decimal import Decimal

import pytest
from django.db import connection, connections

from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from pos.models import Sale, Shop
from pos.services import ItemRequest, SaleError, create_sale, next_receipt_number, open_shift, sell_for_cash
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory


def test_receipt_numbers_are_sequential_per_shop(cashier, till, shop, product):
    other = ShopFactory(code="WEST")
    assert [next_receipt_number(shop.pk) for _ in range(3)] == ["DEMO-0000001", "DEMO-0000002", "DEMO-0000003"]
    assert next_receipt_number(other.pk) == "WEST-0000001"


def test_a_short_shop_code_keeps_the_number_at_twelve_characters(db):
    shop = ShopFactory(code="K1")
    assert next_receipt_number(shop.pk) == "K1-000000001"


def test_a_refused_sale_uses_no_number(cashier, till, shop, product):
    with pytest.raises(SaleError):
        sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="SUG1KG")],
                      tendered=Decimal("10"))
    sale, _ = sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="SUG1KG")],
                            tendered=Decimal("116"))

    assert sale.receipt_number == "DEMO-0000001"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks across threads need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_concurrent_sales_get_unique_gap_free_numbers():
    shop = ShopFactory(code="RACE", name="Race Shop")
    till = TillFactory(shop=shop)
    cashiers = [StaffFactory(shop=shop, default_till=till).user for _ in range(8)]
    open_shift(till=till, user=cashiers[0], opening_float=Decimal("0"))
    product = ProductFactory(sku="RACE1")
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=1000)
    start = threading.Barrier(len(cashiers))
    numbers, errors = [], []

    def sell(cashier):
        try:
            start.wait()
            for _ in range(5):
                sale = create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="RACE1")])
                numbers.append(sale.receipt_number)
        except Exception as error:  # reported below; a thread's exception is otherwise lost
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sell, args=(cashier,)) for cashier in cashiers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(numbers) == [f"RACE-{n:07d}" for n in range(1, 41)]
    assert Sale.objects.filter(shop=shop).count() == 40
    assert Shop.objects.get(pk=shop.pk).last_receipt_seq == 40
