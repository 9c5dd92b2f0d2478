from decimal import Decimal

import pytest

from inventory.models import StockMovement
from pos.models import Payment, Sale
from pos.services import ItemRequest, SaleError, cancel_sale, create_sale, sell_for_cash, take_cash
from pos.tests.utils import written_rows


@pytest.fixture
def sale(cashier, till, product):
    return create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=2, sku="SUG1KG")])  # KES 232


def test_exact_cash_completes_the_sale(sale, cashier):
    payment = take_cash(sale_id=sale.pk, tendered=Decimal("232.00"), user=cashier)

    sale.refresh_from_db()
    assert (payment.amount, payment.tendered, payment.change_given, payment.received_by) == (
        Decimal("232.00"), Decimal("232.00"), Decimal("0"), cashier)
    assert sale.status == Sale.Status.COMPLETED and sale.amount_paid == Decimal("232.00")
    assert StockMovement.objects.filter(sale=sale).count() == 1


def test_more_cash_than_due_records_the_change(sale, cashier):
    payment = take_cash(sale_id=sale.pk, tendered=Decimal("1000"), user=cashier)

    assert (payment.amount, payment.change_given) == (Decimal("232.00"), Decimal("768.00"))


def test_part_cash_leaves_the_sale_pending_until_the_rest_comes(sale, cashier):
    take_cash(sale_id=sale.pk, tendered=Decimal("200"), user=cashier)
    sale.refresh_from_db()
    assert (sale.status, sale.balance_due) == (Sale.Status.PENDING, Decimal("32.00"))
    assert StockMovement.objects.filter(sale=sale).count() == 0

    last = take_cash(sale_id=sale.pk, tendered=Decimal("50"), user=cashier)
    sale.refresh_from_db()
    assert (last.amount, last.change_given, sale.status) == (Decimal("32.00"), Decimal("18.00"), Sale.Status.COMPLETED)
    assert sum(Payment.objects.filter(sale=sale).values_list("amount", flat=True)) == sale.total


@pytest.mark.parametrize("tendered", [Decimal("0"), Decimal("-5"), None])
def test_no_cash_is_refused(sale, tendered):
    before = written_rows()
    with pytest.raises(SaleError, match="Enter the cash the customer handed over."):
        take_cash(sale_id=sale.pk, tendered=tendered)
    assert written_rows() == before


def test_a_paid_sale_takes_no_more_cash(sale, cashier):
    take_cash(sale_id=sale.pk, tendered=Decimal("232"), user=cashier)
    before = written_rows()
    with pytest.raises(SaleError, match="is already paid"):
        take_cash(sale_id=sale.pk, tendered=Decimal("10"))
    assert written_rows() == before


def test_a_cancelled_sale_takes_no_cash(sale):
    cancel_sale(sale_id=sale.pk)
    before = written_rows()
    with pytest.raises(SaleError, match="is cancelled; it takes no more payments"):
        take_cash(sale_id=sale.pk, tendered=Decimal("232"))
    assert written_rows() == before


def test_sell_for_cash_is_all_or_nothing(cashier, till, product):
    before = written_rows()
    with pytest.raises(SaleError, match=r"Cash tendered \(KES 100.00\) is less than the total \(KES 116.00\)"):
        sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="SUG1KG")],
                      tendered=Decimal("100.00"))
    assert written_rows() == before

    sale, payment = sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="SUG1KG")],
                                  tendered=Decimal("120"))
    assert (sale.status, payment.change_given) == (Sale.Status.COMPLETED, Decimal("4.00"))
