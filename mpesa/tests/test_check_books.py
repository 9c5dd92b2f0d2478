"""check_books: right books pass; each kind of broken row is named in words.

The broken rows are written the way only a bug or a hand in the database could: raw SQL and
QuerySet.update(), around the workflows. Rows the database itself forbids (a second copy of a
receipt, negative stock, a completed sale paid short) need their constraint dropped first, which
PostgreSQL undoes with the test's transaction.
"""

from contextlib import contextmanager
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F

from inventory.models import StockLevel, StockMovement
from inventory.tests.factories import ProductFactory
from mpesa.daraja import StkQueryResult
from mpesa.invariants import check_books
from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.services import apply_stk_query_result
from mpesa.tests.factories import StkRequestFactory, c2b_confirmation, make_pending_sale, stk_success
from pos.models import Payment, Sale
from pos.services import ItemRequest, cancel_sale, open_shift, sell_for_cash
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory

pytestmark = pytest.mark.django_db
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql",
                                   reason="drops a constraint inside the test's transaction (PostgreSQL DDL)")


class Books:
    """One shop's day: a cash sale, an M-Pesa sale paid by callback, one paid as found by STK
    Query, a C2B payment nobody claimed yet, a sale still pending and a cancelled one."""

    def __init__(self, client, cashier, till, product):
        self.cash_sale, self.cash = sell_for_cash(cashier=cashier, till=till, tendered=Decimal("200"),
                                                  items=[ItemRequest(quantity=1, product_id=product.pk)])
        self.mpesa_sale = make_pending_sale(cashier=cashier, till=till, product=product, quantity=2)
        self.stk = StkRequestFactory(sale=self.mpesa_sale, amount=232)
        client.post("/mpesa/stk/callback", data=stk_success(self.stk.checkout_request_id, amount=232,
                                                            receipt="NLJ0000001"), content_type="application/json")
        self.tx = MpesaTransaction.objects.get(receipt_number="NLJ0000001")
        self.queried_sale = make_pending_sale(cashier=cashier, till=till, product=product)
        self.queried_stk = StkRequestFactory(sale=self.queried_sale, amount=116)
        apply_stk_query_result(stk_request_id=self.queried_stk.pk, answer=StkQueryResult(
            self.queried_stk.checkout_request_id, False, 0, "The service request is processed successfully.", {}))
        self.queried = MpesaTransaction.objects.get(stk_request=self.queried_stk)
        client.post("/mpesa/c2b/confirmation", data=c2b_confirmation("NLJ0000009", amount="500.00"),
                    content_type="application/json")
        self.unclaimed = MpesaTransaction.objects.get(receipt_number="NLJ0000009")
        self.pending = make_pending_sale(cashier=cashier, till=till, product=product)
        self.cancelled = cancel_sale(sale_id=make_pending_sale(cashier=cashier, till=till, product=product).pk)
        self.product, self.shop = product, till.shop


@pytest.fixture
def books(client, cashier, till, product):
    books = Books(client, cashier, till, product)
    for sale in (books.cash_sale, books.mpesa_sale, books.queried_sale):
        sale.refresh_from_db()
        assert sale.status == Sale.Status.COMPLETED
    assert books.queried.receipt_number is None and books.queried.payment_id is not None
    return books


def sql(statement, *params):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@contextmanager
def dropped(model, *, named=None, unique_on=None):
    """Drop one constraint (or unique index) of `model`; the test's rollback brings it back."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        # Foreign keys are checked at commit; ALTER TABLE wants those checks done first.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        if named is None:
            found = connection.introspection.get_constraints(cursor, table)
            named = next(name for name, info in found.items()
                         if info["unique"] and not info["primary_key"] and info["columns"] == unique_on)
        cursor.execute("SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s", [table, named])
        cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{named}"' if cursor.fetchone()
                       else f'DROP INDEX "{named}"')
    yield


def one_problem_about(*words) -> str:
    problems = check_books()
    matching = [problem for problem in problems if all(word in problem for word in words)]
    assert matching, problems
    return matching[0]


def test_a_shops_day_of_cash_mpesa_query_and_c2b_payments_has_right_books(books):
    assert check_books() == []
    assert check_books(shop_id=books.shop.pk) == []


def test_a_ledger_row_from_a_callback_without_its_raw_callback_is_named(books):
    sql("UPDATE mpesa_mpesatransaction SET callback_id = NULL WHERE id = %s", books.tx.pk)
    assert one_problem_about(f"#{books.tx.pk} (NLJ0000001)", "STK callback", "points to no raw callback row")


def test_a_ledger_row_pointing_at_another_payments_callback_is_named(books):
    MpesaTransaction.objects.filter(pk=books.tx.pk).update(callback=books.unclaimed.callback)
    assert one_problem_about("NLJ0000001", f"raw callback #{books.unclaimed.callback_id}", "carries receipt NLJ0000009")


def test_a_callback_payment_without_a_receipt_number_is_named(books):
    sql("UPDATE mpesa_mpesatransaction SET receipt_number = NULL WHERE id = %s", books.unclaimed.pk)
    assert one_problem_about(f"#{books.unclaimed.pk}", "has no receipt number", "C2B confirmation")


@postgres_only
def test_one_receipt_twice_in_the_ledger_is_a_double_count(books):
    with dropped(MpesaTransaction, unique_on=["receipt_number"]):
        MpesaTransaction.objects.create(receipt_number="NLJ0000009", amount=Decimal("500"),
                                        callback=books.unclaimed.callback, source=MpesaTransaction.Source.C2B)
        assert one_problem_about("receipt NLJ0000009 is in the ledger 2 times")


def test_a_query_found_payment_whose_receipt_came_in_again_by_c2b_is_a_double_count(books, client):
    # The prompt's late callback named the receipt; the C2B copy of the same money is in the ledger.
    CallbackLog.objects.create(kind=CallbackLog.Kind.STK, body=b"{}", status=CallbackLog.Status.PROCESSED,
                               checkout_request_id=books.queried_stk.checkout_request_id, trans_id="NLJ0000077")
    assert check_books() == []  # the receipt itself is not in the ledger yet
    c2b = CallbackLog.objects.create(kind=CallbackLog.Kind.C2B_CONFIRMATION, body=b"{}", trans_id="NLJ0000077")
    MpesaTransaction.objects.create(receipt_number="NLJ0000077", amount=Decimal("116"), callback=c2b,
                                    source=MpesaTransaction.Source.C2B)
    problem = one_problem_about(f"#{books.queried.pk} (receipt not yet known)", "NLJ0000077", "counted twice")
    assert books.queried_stk.checkout_request_id in problem


def test_a_matched_payment_never_applied_to_its_sale_is_named(books):
    sql("UPDATE mpesa_mpesatransaction SET payment_id = NULL WHERE id = %s", books.tx.pk)
    assert one_problem_about(f"#{books.tx.pk}", "never applied")
    assert one_problem_about(f"payment #{books.mpesa_sale.payments.get().pk}", "has no ledger row")


def test_a_ledger_row_in_an_unknown_state_is_named(books):
    MpesaTransaction.objects.filter(pk=books.tx.pk).update(match_status="lost")
    assert one_problem_about(f"#{books.tx.pk}", "unknown state 'lost'")


def test_an_mpesa_payment_with_no_ledger_row_is_named(books):
    payment = Payment.objects.create(sale=books.pending, method=Payment.Method.MPESA, amount=Decimal("116"),
                                     reference="NLJFAKE001")
    Sale.objects.filter(pk=books.pending.pk).update(amount_paid=Decimal("116"))
    assert check_books() == [one_problem_about(f"payment #{payment.pk}", books.pending.receipt_number,
                                               "has no ledger row")]


def test_a_payment_on_another_sale_than_its_ledger_row_is_named(books):
    payment = books.mpesa_sale.payments.get()
    Payment.objects.filter(pk=payment.pk).update(sale=books.pending)
    assert one_problem_about("NLJ0000001", f"is for sale {books.mpesa_sale.receipt_number}",
                             f"went to sale {books.pending.receipt_number}")


def test_a_payment_counting_more_than_the_ledger_received_is_named(books):
    Payment.objects.filter(pk=books.tx.payment_id).update(amount=Decimal("300"))
    Sale.objects.filter(pk=books.mpesa_sale.pk).update(amount_paid=Decimal("300"))
    assert check_books() == [one_problem_about("received KES 232.00", "counts KES 300.00")]


def test_a_payment_under_another_receipt_is_named(books):
    Payment.objects.filter(pk=books.tx.payment_id).update(reference="NLJOTHER01")
    assert check_books() == [one_problem_about("NLJ0000001", "under another receipt NLJOTHER01")]


def test_a_paid_prompt_with_no_ledger_row_is_named(books):
    stk = StkRequestFactory(sale=books.pending, status=StkRequest.Status.PAID)
    assert check_books() == [f"STK request #{stk.pk} for sale {books.pending.receipt_number} is paid but has no "
                             "ledger row."]


def test_a_prompt_with_money_in_the_ledger_but_not_paid_is_named(books):
    StkRequest.objects.filter(pk=books.stk.pk).update(status=StkRequest.Status.FAILED)
    assert check_books() == [one_problem_about(f"STK request #{books.stk.pk}", "'failed', not paid")]


def test_a_sale_whose_payments_do_not_add_up_is_named(books):
    sql("DELETE FROM pos_payment WHERE id = %s", books.cash.pk)
    assert check_books() == [f"Sale {books.cash_sale.receipt_number} records KES 116.00 paid but its payments add "
                             "up to KES 0.00."]


@postgres_only
def test_a_completed_sale_paid_short_is_named(books):
    with dropped(Sale, named="completed_sale_is_paid"):
        Sale.objects.filter(pk=books.cash_sale.pk).update(total=Decimal("150"))
        assert check_books() == [f"Sale {books.cash_sale.receipt_number} is completed with KES 116.00 paid of its "
                                 "KES 150.00 total."]


def test_stock_moved_by_the_wrong_quantity_is_named(books):
    move = StockMovement.objects.get(sale=books.mpesa_sale)
    StockMovement.objects.filter(pk=move.pk).update(quantity=-3)
    assert one_problem_about(books.mpesa_sale.receipt_number, "sold 2 × Sugar 1kg", "moved 1 time(s) by -3")
    assert one_problem_about("Stock of SUG1KG in DEMO", "its ledger adds up to")


@postgres_only
def test_stock_moved_twice_for_one_sale_is_named(books):
    with dropped(StockMovement, named="sale_moves_stock_once"):
        move = StockMovement.objects.get(sale=books.cash_sale)
        move.pk = None
        move.save()
        StockLevel.objects.filter(product=books.product).update(on_hand=F("on_hand") - 1)
        assert check_books() == [f"Completed sale {books.cash_sale.receipt_number} sold 1 × Sugar 1kg but its stock "
                                 "moved 2 time(s) by -2."]


def test_stock_moved_for_a_sale_that_is_not_completed_is_named(books):
    move = StockMovement.objects.create(shop=books.shop, product=books.product, quantity=-1, balance_after=0,
                                        kind=StockMovement.Kind.SALE, sale=books.pending)
    StockLevel.objects.filter(product=books.product).update(on_hand=books.product.stock_levels.get().on_hand - 1)
    assert check_books() == [f"Stock movement #{move.pk} (-1 SUG1KG) is a sale movement for sale "
                             f"{books.pending.receipt_number}, which is pending."]


def test_stock_moved_for_a_product_the_sale_never_sold_is_named(books):
    other = ProductFactory(sku="RICE2KG", barcode=None)
    move = StockMovement.objects.create(shop=books.shop, product=other, quantity=-1, balance_after=-1,
                                        kind=StockMovement.Kind.SALE, sale=books.cash_sale)
    assert one_problem_about(f"Stock movement #{move.pk}", "RICE2KG", books.cash_sale.receipt_number, "no such line")


def test_stock_that_differs_from_its_ledger_is_named(books):
    level = StockLevel.objects.get(product=books.product)
    StockLevel.objects.filter(pk=level.pk).update(on_hand=level.on_hand + 1)
    assert check_books() == [f"Stock of SUG1KG in DEMO is {level.on_hand + 1} on hand but its ledger adds up to "
                             f"{level.on_hand}."]


@postgres_only
def test_stock_below_zero_is_named(books):
    with dropped(StockLevel, named="stock_never_negative"):
        StockLevel.objects.filter(product=books.product).update(on_hand=-2)
        assert one_problem_about("Stock of SUG1KG in DEMO is below zero: -2.")


def test_a_completed_sale_marked_cancelled_is_named(books):
    Sale.objects.filter(pk=books.cash_sale.pk).update(status=Sale.Status.CANCELLED)
    problem = one_problem_about(f"Sale {books.cash_sale.receipt_number} is marked cancelled with completion time 2",
                                "cancellation time none")
    assert "a sale ends one way" in problem


def test_another_shops_broken_books_are_not_this_shops(books, client):
    other = ShopFactory(code="KISU")
    till = TillFactory(shop=other)
    cashier = StaffFactory(shop=other, default_till=till).user
    open_shift(till=till, user=cashier, opening_float=Decimal("0"))
    sale, cash = _cash_sale_in(other, till, cashier)
    sql("DELETE FROM pos_payment WHERE id = %s", cash.pk)
    assert check_books(shop_id=books.shop.pk) == []
    assert check_books(shop_id=other.pk) == [f"Sale {sale.receipt_number} records KES 116.00 paid but its payments "
                                             "add up to KES 0.00."]


def _cash_sale_in(shop, till, cashier):
    from inventory.services import receive_stock

    product = ProductFactory(barcode=None)
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=5)
    return sell_for_cash(cashier=cashier, till=till, tendered=Decimal("116"),
                         items=[ItemRequest(quantity=1, product_id=product.pk)])


def test_the_command_says_ok_when_the_books_are_right(books):
    out = StringIO()
    call_command("check_books", "--shop", "demo", stdout=out)
    assert out.getvalue().strip() == "OK: the books of shop DEMO are right."


def test_the_command_lists_each_problem_and_fails(books):
    sql("DELETE FROM pos_payment WHERE id = %s", books.cash.pk)
    out = StringIO()
    with pytest.raises(CommandError, match=r"1 problem\(s\) in the books of all shops"):
        call_command("check_books", stdout=out)
    assert f"- Sale {books.cash_sale.receipt_number} records KES 116.00 paid" in out.getvalue()


def test_the_command_refuses_an_unknown_shop_in_words(db):
    with pytest.raises(CommandError, match="No shop has the code 'NOPE'"):
        call_command("check_books", "--shop", "NOPE")
