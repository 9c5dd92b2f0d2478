"""Closing a shift with a blind count: the count and what the drawer should have held are kept
together; nothing lands in a closed shift; a sale still waiting for payment holds the close."""

import threading
from decimal import Decimal

import pytest
from django.db import connection, connections

from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from pos.models import Sale, Shift
from pos.services import (ItemRequest, SaleError, ShiftError, cancel_sale, close_shift, create_sale, open_shift,
                          record_cash_movement, sell_for_cash, take_cash)
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def shift(shop, cashier):
    """Till 2, opened with KES 2,000 in the drawer."""
    return open_shift(till=TillFactory(shop=shop, name="Till 2"), user=cashier, opening_float="2000")


def sell(cashier, shift, product, *, quantity=1, tendered):
    sale, _ = sell_for_cash(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=quantity, sku=product.sku)],
                            tendered=Decimal(tendered))
    return sale


def a_busy_shift(cashier, shift, product):
    """KES 2,000 float; 2 sugar (232) paid with 500 (268 change); KES 1,000 change from the safe; 300
    paid for the bread: the drawer should hold 2,000 + 500 − 268 + 1,000 − 300 = 2,932."""
    sell(cashier, shift, product, quantity=2, tendered="500")
    record_cash_movement(shift_id=shift.pk, kind="pay_in", amount="1000", reason="change from the safe", user=cashier)
    record_cash_movement(shift_id=shift.pk, kind="pay_out", amount="300", reason="bread delivery", user=cashier)


def test_a_shortage_is_kept_with_the_count_and_what_was_expected(cashier, shift, product):
    a_busy_shift(cashier, shift, product)

    closed = close_shift(shift_id=shift.pk, counted_cash="2,732", user=cashier, note="  one note missing ")

    assert closed.status == Shift.Status.CLOSED and closed.closed_by == cashier and closed.closed_at
    assert (closed.expected_cash, closed.counted_cash, closed.cash_difference) == (2932, 2732, -200)
    assert closed.close_note == "one note missing"
    assert Shift.objects.get(pk=shift.pk).cash_difference == Decimal("-200.00")


def test_an_over_count_is_kept_as_over(cashier, shift, product):
    a_busy_shift(cashier, shift, product)

    closed = close_shift(shift_id=shift.pk, counted_cash="2982.50", user=cashier)

    assert (closed.expected_cash, closed.cash_difference) == (2932, Decimal("50.50"))


def test_a_closed_shift_takes_no_more_sales_nor_pay_ins_or_pay_outs(cashier, shift, product):
    close_shift(shift_id=shift.pk, counted_cash="2000", user=cashier)

    with pytest.raises(SaleError, match=r"^Open a shift on Till 2 first: enter the opening float\.$"):
        sell(cashier, shift, product, tendered="200")
    with pytest.raises(ShiftError, match=rf"^Shift #{shift.pk} is closed: it takes no more pay-ins or pay-outs\."):
        record_cash_movement(shift_id=shift.pk, kind="pay_out", amount="50", reason="airtime", user=cashier)
    assert not Sale.objects.filter(till=shift.till).exists() and not shift.cash_movements.exists()


def test_a_shift_is_closed_once(cashier, shift):
    close_shift(shift_id=shift.pk, counted_cash="2000", user=cashier)

    with pytest.raises(ShiftError, match=rf"^Shift #{shift.pk} on Till 2 was already closed at \d\d:\d\d\. "
                                         r"Open a new shift to sell\.$"):
        close_shift(shift_id=shift.pk, counted_cash="1", user=cashier)
    assert Shift.objects.get(pk=shift.pk).counted_cash == 2000


def test_a_sale_waiting_for_payment_holds_the_close_and_says_which(cashier, shift, product):
    waiting = create_sale(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=1, sku=product.sku)])

    with pytest.raises(ShiftError) as refused:
        close_shift(shift_id=shift.pk, counted_cash="2000", user=cashier)

    assert str(refused.value) == (
        f"Sale {waiting.receipt_number} (KES 116.00 to pay) is still waiting for payment on Till 2: take the "
        "payment or cancel the sale on the till, then close the shift."
    )
    assert Shift.objects.get(pk=shift.pk).status == Shift.Status.OPEN


def test_two_waiting_sales_are_both_mentioned(cashier, shift, product):
    for _ in range(2):
        create_sale(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=1, sku=product.sku)])

    with pytest.raises(ShiftError, match=r"Another sale is waiting too; finish or cancel each one\.$"):
        close_shift(shift_id=shift.pk, counted_cash="2000", user=cashier)


def test_cash_taken_on_a_sale_later_cancelled_stays_in_the_drawer(cashier, shift, product):
    sale = create_sale(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=1, sku=product.sku)])
    take_cash(sale_id=sale.pk, tendered=Decimal("50"), user=cashier)
    cancel_sale(sale_id=sale.pk, user=cashier, reason="customer left")

    closed = close_shift(shift_id=shift.pk, counted_cash="2050", user=cashier)

    # The 50 is in the drawer until a manager refunds it: it is expected, and the count balances.
    assert (closed.expected_cash, closed.cash_difference) == (2050, 0)


@pytest.mark.parametrize("typed, message", [
    ("", "Enter the cash counted in shillings, e.g. 2000 or 1500.50."),
    ("-1", "The cash counted cannot be negative."),
    ("6161100000017", 'The cash counted is far too large ("6161100000017"): check the amount. '
                      "Was a barcode scanned into the box?"),
])
def test_a_wrong_count_is_refused_in_words_and_the_shift_stays_open(cashier, shift, typed, message):
    with pytest.raises(ShiftError) as refused:
        close_shift(shift_id=shift.pk, counted_cash=typed, user=cashier)

    assert str(refused.value) == message
    assert Shift.objects.get(pk=shift.pk).status == Shift.Status.OPEN


def test_a_closing_note_over_500_characters_is_refused(cashier, shift):
    with pytest.raises(ShiftError, match=r"^Keep the closing note under 500 characters\.$"):
        close_shift(shift_id=shift.pk, counted_cash="2000", user=cashier, note="x" * 501)


def test_staff_of_another_shop_cannot_close_the_shift(shift):
    stranger = StaffFactory(shop=ShopFactory(code="MSA", name="Mombasa Duka")).user

    with pytest.raises(ShiftError, match="Only staff of this shop work shifts on its tills"):
        close_shift(shift_id=shift.pk, counted_cash="0", user=stranger)
    assert Shift.objects.get(pk=shift.pk).status == Shift.Status.OPEN


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks across threads need PostgreSQL")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("run", range(3))
def test_a_sale_racing_the_close_lands_before_the_count_or_is_refused(run):
    shop = ShopFactory(code="RACE", name="Race Duka")
    till = TillFactory(shop=shop, name="Till 1")
    cashier = StaffFactory(shop=shop, default_till=till).user
    product = ProductFactory(sku=f"RACE{run}", price=Decimal("116.00"))
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=10)
    shift = open_shift(till=till, user=cashier, opening_float="1000")
    start = threading.Barrier(2)
    outcomes = {}

    def sell_now():
        try:
            start.wait()
            sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku=product.sku)],
                          tendered=Decimal("116"))
            outcomes["sale"] = "sold"
        except SaleError as error:
            outcomes["sale"] = str(error)
        finally:
            connections.close_all()

    def close_now():
        try:
            start.wait()
            close_shift(shift_id=shift.pk, counted_cash="1116", user=cashier)
            outcomes["close"] = "closed"
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sell_now), threading.Thread(target=close_now)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    closed = Shift.objects.get(pk=shift.pk)
    assert outcomes["close"] == "closed"
    if outcomes["sale"] == "sold":
        # The sale took the shift first: it is in the shift and in what the drawer should hold.
        assert Sale.objects.get().shift_id == shift.pk
        assert (closed.expected_cash, closed.cash_difference) == (1116, 0)
    else:
        assert outcomes["sale"] == "Open a shift on Till 1 first: enter the opening float."
        assert not Sale.objects.exists() and closed.expected_cash == 1000
