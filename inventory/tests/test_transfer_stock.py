import pytest

from inventory.models import StockLevel, StockMovement
from inventory.services import InsufficientStock, StockError, find_stock_discrepancies, transfer_stock
from pos.tests.factories import ShopFactory, UserFactory

pytestmark = pytest.mark.django_db


def _on_hand(shop, product):
    return StockLevel.objects.get(shop=shop, product=product).on_hand


def test_a_transfer_moves_stock_out_of_one_shop_into_another(shop, product):
    branch, user = ShopFactory(), UserFactory()
    out, into = transfer_stock(from_shop_id=shop.pk, to_shop_id=branch.pk, product_id=product.pk,
                               quantity=12, user=user, reason="branch ran out")
    assert (out.kind, out.shop, out.quantity, out.balance_after) == ("transfer_out", shop, -12, 38)
    assert (into.kind, into.shop, into.quantity, into.balance_after) == ("transfer_in", branch, 12, 12)
    assert out.reference == into.reference == f"transfer {shop.pk}->{branch.pk}"
    assert out.created_by == into.created_by == user
    assert (_on_hand(shop, product), _on_hand(branch, product)) == (38, 12)
    assert find_stock_discrepancies() == []


def test_a_transfer_back_to_a_lower_numbered_shop_works_too(shop, product):
    branch = ShopFactory()
    transfer_stock(from_shop_id=shop.pk, to_shop_id=branch.pk, product_id=product.pk, quantity=10)
    transfer_stock(from_shop_id=branch.pk, to_shop_id=shop.pk, product_id=product.pk, quantity=4)
    assert (_on_hand(shop, product), _on_hand(branch, product)) == (44, 6)


def test_transferring_more_than_there_is_moves_nothing(shop, product):
    branch = ShopFactory()
    with pytest.raises(InsufficientStock):
        transfer_stock(from_shop_id=shop.pk, to_shop_id=branch.pk, product_id=product.pk, quantity=51)
    assert _on_hand(shop, product) == 50
    assert not StockMovement.objects.filter(shop=branch).exists()
    assert not StockLevel.objects.filter(shop=branch, on_hand__gt=0).exists()


@pytest.mark.parametrize("quantity", [0, -5])
def test_a_transfer_needs_a_positive_quantity(shop, product, quantity):
    with pytest.raises(StockError, match="more than zero"):
        transfer_stock(from_shop_id=shop.pk, to_shop_id=ShopFactory().pk, product_id=product.pk, quantity=quantity)


def test_a_transfer_to_the_same_shop_is_refused(shop, product):
    with pytest.raises(StockError, match="two different shops"):
        transfer_stock(from_shop_id=shop.pk, to_shop_id=shop.pk, product_id=product.pk, quantity=1)
    assert StockMovement.objects.count() == 1
