from io import StringIO

import pytest
from django.core.management import CommandError, ManagementUtility, call_command

from inventory.models import StockLevel
from inventory.services import receive_stock
from pos.tests.factories import ShopFactory

pytestmark = pytest.mark.django_db


def check_stock():
    out = StringIO()
    call_command("check_stock", stdout=out)
    return out.getvalue()


def test_it_says_ok_with_counts_when_the_ledger_agrees(shop, product):
    receive_stock(shop_id=ShopFactory().pk, product_id=product.pk, quantity=4)
    assert check_stock().strip() == "OK: 2 stock levels in 2 shop(s) agree with 2 ledger rows."


def test_it_says_ok_for_an_empty_database(db):
    assert "OK: 0 stock levels" in check_stock()


def test_it_names_an_on_hand_changed_behind_the_ledgers_back_and_fails(shop, product):
    StockLevel.objects.filter(shop=shop, product=product).update(on_hand=47)
    out = StringIO()
    with pytest.raises(CommandError, match="1 stock level\\(s\\) disagree with the ledger"):
        call_command("check_stock", stdout=out)
    assert out.getvalue().strip() == (
        "DEMO: Sugar 1kg (SUG1KG) shows 47 on hand but the ledger adds up to 50 (3 fewer than the ledger)."
    )


def test_it_finds_ledger_rows_with_no_stock_level(shop, product):
    StockLevel.objects.filter(shop=shop, product=product).delete()
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("check_stock", stdout=out)
    assert "shows 0 on hand but the ledger adds up to 50 (50 fewer" in out.getvalue()


def test_it_exits_non_zero_from_the_command_line(shop, product):
    StockLevel.objects.filter(shop=shop, product=product).update(on_hand=51)
    with pytest.raises(SystemExit) as exit_:
        ManagementUtility(["manage.py", "check_stock"]).execute()
    assert exit_.value.code == 1
