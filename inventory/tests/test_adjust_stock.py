import pytest

from inventory.models import StockLevel, StockMovement
from inventory.services import InsufficientStock, StockError, adjust_stock, find_stock_discrepancies
from pos.tests.factories import ShopFactory

pytestmark = pytest.mark.django_db


def _on_hand(shop, product):
    return StockLevel.objects.get(shop=shop, product=product).on_hand


def test_damaged_stock_is_written_off_with_its_reason(shop, product):
    movement = adjust_stock(shop_id=shop.pk, product_id=product.pk, quantity=-3, reason="bags torn")
    assert (movement.kind, movement.quantity, movement.balance_after, movement.reason) == (
        "adjust", -3, 47, "bags torn")
    assert _on_hand(shop, product) == 47


def test_found_stock_is_added_back(shop, product):
    adjust_stock(shop_id=shop.pk, product_id=product.pk, quantity=2, reason="found in the store room")
    assert _on_hand(shop, product) == 52
    assert find_stock_discrepancies() == []


def test_the_last_unit_can_be_written_off(shop, product):
    adjust_stock(shop_id=shop.pk, product_id=product.pk, quantity=-50, reason="expired")
    assert _on_hand(shop, product) == 0


@pytest.mark.parametrize("reason", ["", "   "])
def test_an_adjustment_without_a_reason_is_refused(shop, product, reason):
    with pytest.raises(StockError, match="Say why"):
        adjust_stock(shop_id=shop.pk, product_id=product.pk, quantity=-1, reason=reason)
    assert _on_hand(shop, product) == 50


def test_a_zero_adjustment_is_refused(shop, product):
    with pytest.raises(StockError, match="other than zero"):
        adjust_stock(shop_id=shop.pk, product_id=product.pk, quantity=0, reason="nothing")
    assert StockMovement.objects.count() == 1


def test_writing_off_more_than_there_is_changes_nothing(shop, product):
    with pytest.raises(InsufficientStock) as error:
        adjust_stock(shop_id=shop.pk, product_id=product.pk, quantity=-60, reason="theft")
    assert (error.value.requested, error.value.available) == (60, 50)
    assert _on_hand(shop, product) == 50
    assert StockMovement.objects.count() == 1


def test_a_product_never_stocked_in_a_shop_cannot_go_below_zero(product):
    empty = ShopFactory()
    with pytest.raises(InsufficientStock, match="Only 0 of Sugar 1kg"):
        adjust_stock(shop_id=empty.pk, product_id=product.pk, quantity=-1, reason="lost")
    assert not StockMovement.objects.filter(shop=empty).exists()
