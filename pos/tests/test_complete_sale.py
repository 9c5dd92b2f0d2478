import threading
from decimal import Decimal

import pytest
from django.db import connection, connections

from inventory.models import StockLevel, StockMovement
from inventory.services import InsufficientStock, adjust_stock, find_stock_discrepancies, receive_stock
from inventory.tests.factories import ProductFactory
from pos.models import Payment, Sale
from pos.services import (ItemRequest, SaleError, cancel_sale, complete_sale, create_sale, open_shift,
                          sell_for_cash)
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory

HOOK_CALLS = []


def record_hook(sale_id):
    HOOK_CALLS.append(sale_id)


def failing_hook(sale_id):
    raise RuntimeError("printer on fire")


@pytest.fixture
def paid_sale(cashier, till, product):
    sale = create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=2, sku="SUG1KG")])
    Payment.objects.create(sale=sale, method="cash", amount=sale.total)
    Sale.objects.filter(pk=sale.pk).update(amount_paid=sale.total)
    return sale


def test_completing_a_paid_sale_moves_its_stock_once(paid_sale, product):
    assert complete_sale(sale_id=paid_sale.pk) is True
    assert complete_sale(sale_id=paid_sale.pk) is False

    paid_sale.refresh_from_db()
    assert paid_sale.status == Sale.Status.COMPLETED and paid_sale.completed_at is not None
    movement = StockMovement.objects.get(sale=paid_sale)
    assert (movement.quantity, movement.balance_after, movement.reference) == (-2, 48, paid_sale.receipt_number)
    assert StockLevel.objects.get(product=product).on_hand == 48
    assert find_stock_discrepancies() == []


def test_an_unpaid_sale_cannot_be_completed(cashier, till, product):
    sale = create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="SUG1KG")])
    with pytest.raises(SaleError, match="still has KES 116.00 to pay"):
        complete_sale(sale_id=sale.pk)
    assert StockMovement.objects.filter(sale=sale).count() == 0


def test_a_cancelled_sale_cannot_be_completed(paid_sale):
    cancel_sale(sale_id=paid_sale.pk)
    with pytest.raises(SaleError, match="was cancelled; it cannot be completed"):
        complete_sale(sale_id=paid_sale.pk)


def test_completion_is_refused_whole_when_stock_ran_out(paid_sale, shop, product):
    adjust_stock(shop_id=shop.pk, product_id=product.pk, quantity=-49, reason="damaged")

    with pytest.raises(InsufficientStock):
        complete_sale(sale_id=paid_sale.pk)

    paid_sale.refresh_from_db()
    assert paid_sale.status == Sale.Status.PENDING
    assert StockLevel.objects.get(product=product).on_hand == 1


def test_hooks_run_after_commit_and_a_failing_one_stops_no_other(
        paid_sale, settings, django_capture_on_commit_callbacks):
    HOOK_CALLS.clear()
    settings.POS_SALE_COMPLETED_HOOKS = [f"{__name__}.failing_hook", f"{__name__}.record_hook"]

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        complete_sale(sale_id=paid_sale.pk)
    assert HOOK_CALLS == []  # nothing printed before the sale is committed
    for callback in callbacks:
        callback()
    assert HOOK_CALLS == [paid_sale.pk]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks across threads need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_two_tills_selling_the_last_item_at_once_sell_it_once():
    shop = ShopFactory(code="LAST")
    tills = [TillFactory(shop=shop, name=f"Till {n}") for n in (1, 2)]
    cashiers = [StaffFactory(shop=shop, default_till=till).user for till in tills]
    for till, cashier in zip(tills, cashiers):
        open_shift(till=till, user=cashier, opening_float=Decimal("0"))
    product = ProductFactory(sku="LAST1", name="Last loaf")
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=1)
    start = threading.Barrier(2)
    outcomes = []

    def sell(cashier, till):
        try:
            start.wait()
            sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="LAST1")],
                          tendered=Decimal("200"))
            outcomes.append("sold")
        except (SaleError, InsufficientStock) as error:
            outcomes.append(str(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sell, args=pair) for pair in zip(cashiers, tills)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes)[-1] == "sold"
    assert sorted(outcomes)[0].startswith("Only 0 of Last loaf in stock")
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 0
    assert Sale.objects.filter(shop=shop, status=Sale.Status.COMPLETED).count() == 1
    assert Sale.objects.filter(shop=shop).count() == 1  # the refused sale rolled back whole
    assert find_stock_discrepancies() == []
