from decimal import Decimal

import pytest

from inventory.models import StockLevel, StockMovement
from pos.models import Sale
from pos.services import ItemRequest, SaleError, cancel_sale, create_sale, take_cash


@pytest.fixture
def sale(cashier, till, product):
    return create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=2, sku="SUG1KG")])


def test_a_pending_sale_is_cancelled_with_its_reason(sale, product):
    cancelled = cancel_sale(sale_id=sale.pk, reason="customer changed their mind")

    assert (cancelled.status, cancelled.cancel_reason) == (Sale.Status.CANCELLED, "customer changed their mind")
    assert cancelled.cancelled_at is not None and cancelled.completed_at is None
    assert StockLevel.objects.get(product=product).on_hand == 50
    assert StockMovement.objects.filter(sale=sale).count() == 0


def test_cancelling_twice_changes_nothing(sale):
    first = cancel_sale(sale_id=sale.pk, reason="first")
    second = cancel_sale(sale_id=sale.pk, reason="second")

    assert second.cancel_reason == "first" and second.cancelled_at == first.cancelled_at


def test_part_paid_money_stays_on_record(sale, cashier):
    take_cash(sale_id=sale.pk, tendered=Decimal("100"), user=cashier)

    cancelled = cancel_sale(sale_id=sale.pk)

    assert cancelled.amount_paid == Decimal("100.00") and cancelled.payments.count() == 1


def test_a_completed_sale_is_not_cancelled(sale, cashier):
    take_cash(sale_id=sale.pk, tendered=Decimal("232"), user=cashier)

    with pytest.raises(SaleError, match="is completed; make a return instead"):
        cancel_sale(sale_id=sale.pk)
    assert Sale.objects.get(pk=sale.pk).status == Sale.Status.COMPLETED
