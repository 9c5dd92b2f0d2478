import pytest

from inventory.models import StockLevel, StockMovement
from inventory.services import StockError, find_stock_discrepancies, receive_stock
from inventory.tests.factories import ProductFactory
from pos.tests.factories import ShopFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_a_first_delivery_creates_the_stock_level():
    shop, product, user = ShopFactory(), ProductFactory(), UserFactory()
    movement = receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=24, user=user,
                             reference="DN-1", reason="Bidco delivery")
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 24
    assert (movement.kind, movement.quantity, movement.balance_after) == ("receive", 24, 24)
    assert (movement.reference, movement.reason, movement.created_by) == ("DN-1", "Bidco delivery", user)


def test_deliveries_add_up_and_record_the_running_balance(shop, product):
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=10)
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=5)
    balances = list(StockMovement.objects.order_by("id").values_list("quantity", "balance_after"))
    assert balances == [(50, 50), (10, 60), (5, 65)]
    assert find_stock_discrepancies() == []


def test_stock_is_per_shop(shop, product):
    other = ShopFactory()
    receive_stock(shop_id=other.pk, product_id=product.pk, quantity=3)
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 50
    assert StockLevel.objects.get(shop=other, product=product).on_hand == 3


@pytest.mark.parametrize("quantity", [0, -4])
def test_receiving_nothing_or_less_is_refused(shop, product, quantity):
    with pytest.raises(StockError, match="more than zero"):
        receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=quantity)
    assert StockMovement.objects.count() == 1
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 50
