"""How many database round trips one STK success costs, from the raw row to the moved stock.

The callback path is the hottest write path (bench/bench_callbacks.py); each round trip is paid
per payment. Counted on a real transaction (not the test's wrapping one), as in production.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inventory.models import StockMovement
from mpesa.models import StkRequest
from mpesa.tests.factories import StkRequestFactory, make_pending_sale, stk_success
from pos.models import Payment, Sale

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_success_callback_completes_its_sale_in_few_round_trips(client, cashier, till, product, settings):
    # Printing is its own work after the commit, as in the bench: this counts the payment.
    settings.POS_SALE_COMPLETED_HOOKS = []
    sale = make_pending_sale(cashier=cashier, till=till, product=product)
    stk = StkRequestFactory(sale=sale, amount=116)

    with CaptureQueriesContext(connection) as queries:
        response = client.post("/mpesa/stk/callback", data=stk_success(stk.checkout_request_id, amount=116),
                               content_type="application/json")

    assert response.status_code == 200
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and Payment.objects.filter(sale=sale).count() == 1
    assert StockMovement.objects.filter(sale=sale).count() == 1
    assert StkRequest.objects.get().status == StkRequest.Status.PAID
    # 31 on PostgreSQL before the sale row was locked once and the needless savepoints went.
    assert len(queries) <= 21, "\n".join(query["sql"][:120] for query in queries)
