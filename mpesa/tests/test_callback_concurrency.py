"""Races on PostgreSQL with real commits: one thread per delivery, each with its own connection."""

import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from inventory.models import StockLevel, StockMovement
from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.tests.factories import StkRequestFactory, make_pending_sale, stk_success
from pos.models import Payment, Sale
from pos.services import cancel_sale

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL"),
]
COMPLETED_HOOK_CALLS = []


def record_completed_hook(sale_id):
    COMPLETED_HOOK_CALLS.append(sale_id)


def run_at_once(count, work):
    barrier, results, errors = threading.Barrier(count), [None] * count, []

    def worker(index):
        try:
            barrier.wait()
            results[index] = work(index)
        except Exception as error:  # collected and asserted below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_same_callback_delivered_20_times_at_once_completes_the_sale_and_moves_stock_once(
        cashier, till, product, settings):
    settings.POS_SALE_COMPLETED_HOOKS = [f"{__name__}.record_completed_hook"]
    COMPLETED_HOOK_CALLS.clear()
    sale = make_pending_sale(cashier=cashier, till=till, product=product, quantity=2)  # KES 232
    stk = StkRequestFactory(sale=sale, amount=232)
    body = stk_success(stk.checkout_request_id, amount=232.00, receipt="NLJRACE001")

    answers = run_at_once(20, lambda i: Client().post(
        "/mpesa/stk/callback", data=body, content_type="application/json").json())

    assert answers == [{"ResultCode": 0, "ResultDesc": "Accepted"}] * 20
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and sale.amount_paid == Decimal("232.00")
    assert Payment.objects.filter(sale=sale).count() == 1 and MpesaTransaction.objects.count() == 1
    assert StockMovement.objects.filter(sale=sale).count() == 1
    assert StockLevel.objects.get(shop=sale.shop, product=product).on_hand == 48
    assert CallbackLog.objects.count() == 20
    assert set(CallbackLog.objects.values_list("status", flat=True)) == {CallbackLog.Status.PROCESSED}
    assert COMPLETED_HOOK_CALLS == [sale.pk]


def test_paid_sales_racing_for_the_last_units_never_oversell_or_lose_money(cashier, till):
    product = ProductFactory(price=Decimal("50.00"))
    receive_stock(shop_id=till.shop_id, product_id=product.pk, quantity=10)
    requests = [StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product), amount=50)
                for _ in range(10)]
    StockLevel.objects.filter(product=product).update(on_hand=5)

    run_at_once(10, lambda i: Client().post(
        "/mpesa/stk/callback", data=stk_success(requests[i].checkout_request_id, amount=50, receipt=f"NLJLAST{i:03d}"),
        content_type="application/json"))

    assert StockLevel.objects.get(product=product).on_hand == 0
    assert Sale.objects.filter(status=Sale.Status.COMPLETED).count() == 5
    assert MpesaTransaction.objects.count() == 10
    assert MpesaTransaction.objects.filter(match_status=MpesaTransaction.Match.REVIEW).count() == 5
    assert StkRequest.objects.filter(status=StkRequest.Status.PAID).count() == 10


def test_callback_racing_a_cancel_either_completes_or_becomes_an_overpayment(cashier, till, product):
    for _ in range(5):
        sale = make_pending_sale(cashier=cashier, till=till, product=product)
        stk = StkRequestFactory(sale=sale, amount=116)
        body = stk_success(stk.checkout_request_id, amount=116, receipt=f"NLJC{sale.pk:06d}")

        def work(index):
            if index == 0:
                Client().post("/mpesa/stk/callback", data=body, content_type="application/json")
            else:
                try:
                    cancel_sale(sale_id=sale.pk, reason="race")
                except Exception as error:  # "completed; make a return instead"
                    return str(error)

        run_at_once(2, work)
        sale.refresh_from_db()
        tx = MpesaTransaction.objects.get(stk_request=stk)
        if sale.status == Sale.Status.COMPLETED:
            assert tx.payment is not None and tx.match_status == MpesaTransaction.Match.MATCHED
        else:
            assert sale.status == Sale.Status.CANCELLED and tx.payment is None
            assert tx.match_status == MpesaTransaction.Match.REVIEW and "overpayment" in tx.review_reason
            assert not StockMovement.objects.filter(sale=sale).exists()
