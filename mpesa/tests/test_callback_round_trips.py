"""How many database round trips one STK success costs, from the raw row to the moved stock.

The callback path is the hottest write path (bench/bench_callbacks.py); each round trip is paid
per payment. Counted on a real transaction (not the test's wrapping one), as in production, through
the WSGI handler: what Safaricom waits for (its answer), then what follows once the answer is sent.
Django adds one more per request, not counted here: the connection's health check (CONN_HEALTH_CHECKS).
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inventory.models import StockMovement
from mpesa.models import StkRequest
from mpesa.tests.factories import StkRequestFactory, make_pending_sale, stk_success
from mpesa.tests.test_callback_answer_first import answer
from pos.models import Payment, Sale

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_success_callback_is_answered_after_one_statement_and_completes_its_sale_in_few_more(
        cashier, till, product, settings):
    # Printing is its own work after the commit, as in the bench: this counts the payment.
    settings.POS_SALE_COMPLETED_HOOKS = []
    sale = make_pending_sale(cashier=cashier, till=till, product=product)
    stk = StkRequestFactory(sale=sale, amount=116)

    with CaptureQueriesContext(connection) as answering:
        status, _, response = answer(stk_success(stk.checkout_request_id, amount=116))
    with CaptureQueriesContext(connection) as applying:
        response.close()

    assert status == "200 OK"
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and Payment.objects.filter(sale=sale).count() == 1
    assert StockMovement.objects.filter(sale=sale).count() == 1
    assert StkRequest.objects.get().status == StkRequest.Status.PAID
    # Safaricom waits for the raw row's INSERT only.
    assert [query["sql"].replace('"', "")[:30] for query in answering] == ["INSERT INTO mpesa_callbacklog "]
    # With the INSERT: 31 on PostgreSQL before the sale row was locked once and the needless
    # savepoints went, 21 before the ledger row just created was no longer read back and locked again,
    # 19 before stock was checked ahead of any write (no savepoint for a payment that may be refused).
    assert len(applying) <= 17, "\n".join(query["sql"][:120] for query in applying)
