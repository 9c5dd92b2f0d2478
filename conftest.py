"""Fixtures shared by every app's tests: a shop with a till, its cashier and a stocked product."""

import pytest
from django.urls import get_resolver

from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory

# The browser journeys' fixtures: browser, page, till_page, screenshot.
pytest_plugins = ["comolor.testing.browser", "mpesa.simulator.testing"]


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.RECEIPTS_DEFAULT_PRINTER = f"file://{tmp_path / 'receipts'}"
    # comolor/urls.py reads MPESA_* settings when first imported: import it before any test
    # switches MPESA_ENVIRONMENT, or the simulator stays unrouted for the rest of the run.
    get_resolver().url_patterns


@pytest.fixture
def shop(db):
    return ShopFactory(code="DEMO", name="Demo Duka")


@pytest.fixture
def till(shop):
    return TillFactory(shop=shop, name="Till 1")


@pytest.fixture
def cashier(shop, till):
    return StaffFactory(user=UserFactory(username="wanjiru"), shop=shop, default_till=till).user


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
