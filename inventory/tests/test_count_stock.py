import pytest

from inventory.models import StockLevel, StockMovement
from inventory.services import StockError, count_stock, find_stock_discrepancies
from pos.tests.factories import ShopFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_a_short_count_writes_the_difference(shop, product):
    user = UserFactory()
    movement = count_stock(shop_id=shop.pk, product_id=product.pk, counted=46, user=user)
    assert (movement.kind, movement.quantity, movement.balance_after) == ("count", -4, 46)
    assert (movement.reason, movement.created_by) == ("counted 46", user)
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 46


def test_a_count_above_the_books_adds_the_difference(shop, product):
    movement = count_stock(shop_id=shop.pk, product_id=product.pk, counted=53, reason="quarterly count")
    assert (movement.quantity, movement.reason) == (3, "quarterly count")
    assert find_stock_discrepancies() == []


def test_a_count_that_agrees_writes_nothing(shop, product):
    assert count_stock(shop_id=shop.pk, product_id=product.pk, counted=50) is None
    assert StockMovement.objects.count() == 1


def test_counting_zero_empties_the_shelf(shop, product):
    count_stock(shop_id=shop.pk, product_id=product.pk, counted=0)
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 0


def test_counting_a_product_never_stocked_there_starts_its_stock(product):
    new_shop = ShopFactory()
    movement = count_stock(shop_id=new_shop.pk, product_id=product.pk, counted=7)
    assert movement.quantity == 7
    assert StockLevel.objects.get(shop=new_shop, product=product).on_hand == 7


def test_a_negative_count_is_refused(shop, product):
    with pytest.raises(StockError, match="cannot be negative"):
        count_stock(shop_id=shop.pk, product_id=product.pk, counted=-1)
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 50
