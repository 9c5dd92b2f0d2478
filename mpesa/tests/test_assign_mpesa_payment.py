"""A manager assigns an unmatched M-Pesa payment to the sale it was for, by the till's claim rules."""

from decimal import Decimal

import pytest

from inventory.models import StockLevel
from mpesa.models import MpesaTransaction
from mpesa.services import assign_mpesa_payment
from mpesa.tests.factories import MpesaTransactionFactory, make_pending_sale
from pos.models import ManagerAction, Sale
from pos.services import SaleError
from pos.tests.backoffice import manager, other_manager, other_shop, owner  # noqa: F401

REASON = "customer paid to the till, the cashier forgot to claim it"


@pytest.fixture
def sale(cashier, till, product):
    return make_pending_sale(cashier=cashier, till=till, product=product, quantity=2)  # KES 232


def unmatched(shop, amount, code="QK12AB34CD"):
    return MpesaTransactionFactory(shop=shop, amount=Decimal(amount), receipt_number=code)


def test_a_payment_of_the_balance_pays_the_sale_and_the_action_is_recorded(sale, shop, manager, product):
    tx = unmatched(shop, "232")

    result = assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=manager, reason=REASON)

    assert result["status"] == "paid" and "QK12AB34CD" in result["message"]
    sale.refresh_from_db()
    tx.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and sale.payments.get().reference == "QK12AB34CD"
    assert (tx.match_status, tx.sale, tx.claimed_by, tx.excess_amount) == ("matched", sale, manager, 0)
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 48
    action = ManagerAction.objects.get()
    assert (action.user, action.shop, action.action, action.reason) == (manager, shop, "assign_payment", REASON)
    assert action.target == f"M-Pesa QK12AB34CD → sale {sale.receipt_number}"
    assert action.outcome == result["message"]


def test_less_than_the_balance_leaves_the_sale_partly_paid(sale, shop, manager):
    tx = unmatched(shop, "100")

    result = assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=manager, reason=REASON)

    sale.refresh_from_db()
    assert result["status"] == "partly_paid" and "KES 132.00 still to pay" in result["message"]
    assert (sale.status, sale.amount_paid) == (Sale.Status.PENDING, Decimal("100.00"))


def test_more_than_the_balance_pays_the_sale_and_keeps_the_excess_for_a_refund(sale, shop, manager):
    tx = unmatched(shop, "300")

    assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=manager, reason=REASON)

    sale.refresh_from_db()
    tx.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED
    assert tx.excess_amount == Decimal("68.00") and tx.resolved_at is None


def test_a_reason_is_required(sale, shop, manager):
    tx = unmatched(shop, "232")

    with pytest.raises(SaleError, match="Say why"):
        assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=manager, reason="")

    tx.refresh_from_db()
    assert tx.match_status == "unmatched" and not ManagerAction.objects.exists()


def test_a_payment_already_on_a_sale_is_refused_with_that_sale(sale, shop, manager, cashier, till, product):
    tx = unmatched(shop, "232")
    assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=manager, reason=REASON)
    second = make_pending_sale(cashier=cashier, till=till, product=product, quantity=2)

    with pytest.raises(SaleError, match=f"already used for sale {sale.receipt_number}"):
        assign_mpesa_payment(transaction_id=tx.pk, sale_id=second.pk, user=manager, reason=REASON)

    assert ManagerAction.objects.count() == 1


def test_a_payment_to_another_shop_is_refused(sale, other_shop, owner):
    tx = unmatched(other_shop, "232")

    with pytest.raises(SaleError, match="another shop's till or paybill"):
        assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=owner, reason=REASON)


def test_a_manager_cannot_assign_to_another_shops_sale_or_from_its_payments(sale, shop, other_manager, other_shop):
    with pytest.raises(SaleError, match="another shop"):
        assign_mpesa_payment(transaction_id=unmatched(other_shop, "232").pk, sale_id=sale.pk,
                             user=other_manager, reason=REASON)
    with pytest.raises(SaleError, match="another shop"):
        assign_mpesa_payment(transaction_id=unmatched(shop, "232", "QK12AB34CE").pk, sale_id=sale.pk,
                             user=other_manager, reason=REASON)


def test_a_payment_to_an_unknown_account_is_placed_by_an_owner_only(sale, manager, owner):
    tx = unmatched(None, "232")

    with pytest.raises(SaleError, match="only an owner"):
        assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=manager, reason=REASON)
    result = assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=owner, reason=REASON)

    tx.refresh_from_db()
    assert result["status"] == "paid" and tx.shop_id == sale.shop_id


def test_a_completed_sale_is_refused(sale, shop, manager):
    assign_mpesa_payment(transaction_id=unmatched(shop, "232").pk, sale_id=sale.pk, user=manager, reason=REASON)

    with pytest.raises(SaleError, match="is completed; there is nothing to pay"):
        assign_mpesa_payment(transaction_id=unmatched(shop, "232", "QK12AB34CE").pk, sale_id=sale.pk,
                             user=manager, reason=REASON)


def test_a_payment_known_only_from_stk_query_waits_for_its_receipt_number(sale, shop, manager):
    tx = MpesaTransactionFactory(shop=shop, receipt_number=None, amount=Decimal("232"))

    with pytest.raises(SaleError, match="no M-Pesa receipt number yet"):
        assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=manager, reason=REASON)


def test_a_refunded_payment_cannot_pay_a_sale(sale, shop, manager):
    tx = unmatched(shop, "232")
    MpesaTransaction.objects.filter(pk=tx.pk).update(match_status="resolved", resolution="refunded in cash")

    with pytest.raises(SaleError, match="closed by a manager"):
        assign_mpesa_payment(transaction_id=tx.pk, sale_id=sale.pk, user=manager, reason=REASON)
