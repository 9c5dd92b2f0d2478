"""A manager marks money no sale needed as refunded (in cash, or outside): the ledger row stays as
received, its resolution says who, when and how."""

from decimal import Decimal

import pytest

from mpesa.models import MpesaTransaction
from mpesa.services import amount_mismatches, assign_mpesa_payment, refund_overpayment, unmatched_payments
from mpesa.tests.factories import MpesaTransactionFactory, make_pending_sale
from pos.models import ManagerAction
from pos.services import SaleError
from pos.tests.backoffice import manager, other_manager, other_shop  # noqa: F401


@pytest.fixture
def overpaid(cashier, till, product, shop, manager):
    """Sale of KES 116 paid with a KES 150 till payment a manager assigned: KES 34 to refund."""
    sale = make_pending_sale(cashier=cashier, till=till, product=product)
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("150"), receipt_number="QK12AB34CD")
    assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=manager, reason="paid to till")
    tx.refresh_from_db()
    return tx


def test_the_excess_is_marked_refunded_and_leaves_the_queue(overpaid, manager):
    assert list(amount_mismatches()) == [overpaid]

    tx = refund_overpayment(transaction_id=overpaid.pk, user=manager, method="cash", reason="gave KES 34 back")

    assert (tx.resolved_by, tx.match_status, tx.amount, tx.excess_amount) == (
        manager, "matched", Decimal("150.00"), Decimal("34.00"))
    assert tx.resolution == "KES 34.00 refunded in cash: gave KES 34 back" and tx.resolved_at is not None
    assert not amount_mismatches().exists()
    action = ManagerAction.objects.latest("id")
    assert (action.action, action.target, action.outcome) == ("refund_overpayment", "M-Pesa QK12AB34CD",
                                                              tx.resolution)


def test_a_double_payment_held_for_review_is_refunded_in_full_outside(shop, manager):
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("116"), match_status="review",
                                 review_reason="sale DEMO-0000001 is completed and owed nothing")

    refund_overpayment(transaction_id=tx.pk, user=manager, method="outside", reason="reversed by Safaricom")

    tx.refresh_from_db()
    assert tx.match_status == MpesaTransaction.Match.RESOLVED and tx.payment_id is None
    assert tx.resolution.startswith("KES 116.00 refunded outside this system")
    assert not amount_mismatches().exists()


def test_a_payment_that_paid_no_sale_is_refunded_in_full(shop, manager):
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("500"))

    refund_overpayment(transaction_id=tx.pk, user=manager, method="cash", reason="wrong shop, customer came back")

    assert not unmatched_payments().exists()
    assert MpesaTransaction.objects.get().resolution.startswith("KES 500.00 refunded in cash")


def test_a_payment_that_paid_its_sale_exactly_is_refused(cashier, till, product, shop, manager):
    sale = make_pending_sale(cashier=cashier, till=till, product=product)
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("116"), receipt_number="QK12AB34CD")
    assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=manager, reason="paid to till")

    with pytest.raises(SaleError, match="paid its sale exactly: there is nothing to refund"):
        refund_overpayment(transaction_id=tx.pk, user=manager, method="cash", reason="?")


def test_refunding_twice_is_refused_with_the_first_refund(overpaid, manager):
    refund_overpayment(transaction_id=overpaid.pk, user=manager, method="cash", reason="gave it back")

    with pytest.raises(SaleError, match=r"already resolved on .*KES 34.00 refunded in cash"):
        refund_overpayment(transaction_id=overpaid.pk, user=manager, method="outside", reason="again")

    assert ManagerAction.objects.filter(action="refund_overpayment").count() == 1


def test_the_method_and_the_reason_are_required(overpaid, manager):
    with pytest.raises(SaleError, match="Say how the money went back"):
        refund_overpayment(transaction_id=overpaid.pk, user=manager, method="card", reason="x")
    with pytest.raises(SaleError, match="Say why"):
        refund_overpayment(transaction_id=overpaid.pk, user=manager, method="cash", reason="")

    overpaid.refresh_from_db()
    assert overpaid.resolved_at is None


def test_a_manager_of_another_shop_is_refused(overpaid, other_manager):
    with pytest.raises(SaleError, match="another shop"):
        refund_overpayment(transaction_id=overpaid.pk, user=other_manager, method="cash", reason="not mine")
