"""Two managers acting on the same row at the same moment, on PostgreSQL: one payment is assigned
to one sale and recorded once; an excess is refunded once."""

from decimal import Decimal

import pytest
from django.db import connection

from comolor.testing.concurrency import at_once
from mpesa.models import MpesaTransaction
from mpesa.services import assign_mpesa_payment, refund_overpayment
from mpesa.tests.factories import MpesaTransactionFactory, make_pending_sale
from pos.models import ManagerAction, Payment, Sale, Staff
from pos.services import add_staff
from pos.tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(connection.vendor != "postgresql", reason="real row locks need PostgreSQL")]
ROUNDS = 4


@pytest.fixture
def managers(shop, till):
    pair = [UserFactory(username=name) for name in ("akinyi", "baraka")]
    for user in pair:
        add_staff(user, shop, Staff.Role.MANAGER, default_till=till)
    return pair


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_one_payment_assigned_to_two_sales_at_once_pays_one(managers, shop, cashier, till, product, round_):
    sales = [make_pending_sale(cashier=cashier, till=till, product=product) for _ in managers]
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("116"), receipt_number=f"QK0000000{round_}")

    outcomes = at_once(*[
        lambda sale=sale, user=user: assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=user,
                                                          reason="paid to till")
        for sale, user in zip(sales, managers)
    ])

    assert sorted(kind for kind, _ in outcomes) == ["ok", "refused"]
    assert Sale.objects.filter(status=Sale.Status.COMPLETED).count() == 1
    assert Payment.objects.filter(reference=tx.receipt_number).count() == 1
    assert ManagerAction.objects.filter(action="assign_payment").count() == 1


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_an_overpayment_refunded_by_two_managers_at_once_is_refunded_once(managers, shop, round_):
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("116"), match_status="review",
                                 receipt_number=f"QK1000000{round_}")

    outcomes = at_once(*[
        lambda user=user, method=method: refund_overpayment(transaction_id=tx.pk, user=user, method=method,
                                                            reason="paid twice").resolution
        for user, method in zip(managers, ["cash", "outside"])
    ])

    assert sorted(kind for kind, _ in outcomes) == ["ok", "refused"]
    refused = next(message for kind, message in outcomes if kind == "refused")
    assert "was already resolved" in refused
    assert ManagerAction.objects.filter(action="refund_overpayment").count() == 1
    assert MpesaTransaction.objects.get().match_status == "resolved"
