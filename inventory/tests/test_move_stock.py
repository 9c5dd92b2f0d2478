import pytest

from inventory.models import StockLevel, StockMovement
from inventory.services import InsufficientStock, adjust_stock, find_stock_discrepancies, receive_stock


def test_receiving_stock_raises_on_hand_and_writes_one_ledger_row(shop, product):
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=10, reason="delivery")
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 60
    assert list(StockMovement.objects.filter(product=product).values_list("quantity", flat=True)) == [10, 50]
    assert find_stock_discrepancies() == []


def test_stock_cannot_go_below_zero(shop, product):
    with pytest.raises(InsufficientStock, match="Only 50 of Sugar 1kg in stock"):
        adjust_stock(shop_id=shop.pk, product_id=product.pk, quantity=-51, reason="damaged")
    assert StockLevel.objects.get(shop=shop, product=product).on_hand == 50
    assert StockMovement.objects.filter(product=product).count() == 1
