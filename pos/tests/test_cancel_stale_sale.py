"""A manager cancels a sale abandoned at a till: only once it is stale, only with nothing paid on it."""

from decimal import Decimal

import pytest

from inventory.models import StockLevel
from pos.models import ManagerAction, Sale
from pos.services import ItemRequest, SaleError, cancel_stale_sale, create_sale, take_cash
from pos.tests.backoffice import age, manager, other_manager, other_shop, owner  # noqa: F401


@pytest.fixture
def sale(cashier, till, product):
    return create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=2, sku="SUG1KG")])


def test_a_stale_sale_is_cancelled_and_the_action_recorded(sale, manager, product):
    age(sale, 45)

    cancelled = cancel_stale_sale(sale_id=sale.pk, user=manager, reason="customer left without paying")

    assert cancelled.status == Sale.Status.CANCELLED
    assert cancelled.cancel_reason == "Cancelled by a manager: customer left without paying"
    action = ManagerAction.objects.get()
    assert (action.user, action.shop_id, action.action, action.target, action.reason) == (
        manager, sale.shop_id, "cancel_sale", f"sale {sale.receipt_number}", "customer left without paying")
    assert "nothing had been paid" in action.outcome
    assert StockLevel.objects.get(product=product).on_hand == 50


def test_a_reason_is_required(sale, manager):
    age(sale, 45)

    with pytest.raises(SaleError, match="Say why"):
        cancel_stale_sale(sale_id=sale.pk, user=manager, reason="   ")

    sale.refresh_from_db()
    assert sale.status == Sale.Status.PENDING and not ManagerAction.objects.exists()


def test_a_sale_still_at_the_till_is_refused_with_the_wait(sale, manager, settings):
    age(sale, 5)

    with pytest.raises(SaleError, match=r"started 5 min ago.*after 30 min, or at the till now"):
        cancel_stale_sale(sale_id=sale.pk, user=manager, reason="tidy up")

    assert Sale.objects.get().status == Sale.Status.PENDING


def test_a_sale_with_money_on_it_is_refused(sale, manager, cashier):
    take_cash(sale_id=sale.pk, tendered=Decimal("100"), user=cashier)
    age(sale, 45)

    with pytest.raises(SaleError, match=r"KES 100.00 is already paid.*KES 132.00 still due"):
        cancel_stale_sale(sale_id=sale.pk, user=manager, reason="customer left")

    assert Sale.objects.get().status == Sale.Status.PENDING


def test_a_completed_sale_is_refused(sale, manager, cashier):
    take_cash(sale_id=sale.pk, tendered=Decimal("232"), user=cashier)
    age(sale, 45)

    with pytest.raises(SaleError, match="is completed; only a pending sale"):
        cancel_stale_sale(sale_id=sale.pk, user=manager, reason="mistake")


def test_a_manager_of_another_shop_is_refused(sale, other_manager):
    age(sale, 45)

    with pytest.raises(SaleError, match="another shop"):
        cancel_stale_sale(sale_id=sale.pk, user=other_manager, reason="not mine")

    assert Sale.objects.get().status == Sale.Status.PENDING


def test_a_cashier_is_refused(sale, cashier):
    age(sale, 45)

    with pytest.raises(SaleError, match="Only a manager or an owner"):
        cancel_stale_sale(sale_id=sale.pk, user=cashier, reason="mine")


def test_an_owner_cancels_in_any_shop(sale, owner, other_shop):
    sale.shop, sale.till.shop = other_shop, other_shop
    Sale.objects.filter(pk=sale.pk).update(shop=other_shop)
    age(sale, 45)

    assert cancel_stale_sale(sale_id=sale.pk, user=owner, reason="closing the shop").status == "cancelled"
