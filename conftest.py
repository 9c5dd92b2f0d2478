"""Fixtures shared by every app's tests: a shop with a till open for selling (its cashier opened a
shift with no float), the cashier and a stocked product."""

from decimal import Decimal

import pytest
from django.core.cache import cache
from django.urls import get_resolver

from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from pos.services import open_shift
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory

# The browser journeys' fixtures: browser, page, till_page, screenshot.
pytest_plugins = ["comolor.testing.browser", "mpesa.simulator.testing"]


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # Counters kept in the cache (prompt and login limits) start from zero in every test.
    cache.clear()
    settings.RECEIPTS_DEFAULT_PRINTER = f"file://{tmp_path / 'receipts'}"
    # comolor/urls.py reads MPESA_* settings when first imported: import it before any test
    # switches MPESA_ENVIRONMENT, or the simulator stays unrouted for the rest of the run.
    get_resolver().url_patterns


@pytest.fixture
def shop(db):
    return ShopFactory(code="DEMO", name="Demo Duka")


@pytest.fixture
def till(shop):
    """Till 1, where the cashier wanjiru has opened a shift: sales need one."""
    till = TillFactory(shop=shop, name="Till 1")
    cashier = StaffFactory(user=UserFactory(username="wanjiru"), shop=shop, default_till=till).user
    open_shift(till=till, user=cashier, opening_float=Decimal("0"))
    return till


@pytest.fixture
def cashier(till):
    return till.shifts.order_by("pk")[0].opened_by


@pytest.fixture
def cashier_client(client, cashier):
    client.force_login(cashier)
    return client


@pytest.fixture
def product(shop):
    """Sugar at KES 116 (VAT 16 in it), 50 in stock in the demo shop."""
    sugar = ProductFactory(name="Sugar 1kg", sku="SUG1KG", barcode="6161100000017")
    receive_stock(shop_id=shop.pk, product_id=sugar.pk, quantity=50)
    return sugar
