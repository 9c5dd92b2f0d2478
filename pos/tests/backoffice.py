"""Fixtures of the back-office tests: a second shop, its manager and an owner of the chain.

Import the ones a module uses: `from pos.tests.backoffice import manager, other_shop  # noqa: F401`.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from pos.models import Sale, Staff
from pos.services import add_staff, open_shift
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory


@pytest.fixture
def other_shop(db):
    return ShopFactory(code="MSA", name="Mombasa Duka")


@pytest.fixture
def other_till(other_shop):
    """The other shop's Till 1, with a shift open (sales need one)."""
    till = TillFactory(shop=other_shop, name="Till 1")
    cashier = StaffFactory(user=UserFactory(username="otieno"), shop=other_shop, default_till=till).user
    open_shift(till=till, user=cashier, opening_float=Decimal("0"))
    return till


@pytest.fixture
def manager(shop, till):
    user = UserFactory(username="akinyi")
    add_staff(user, shop, Staff.Role.MANAGER, default_till=till)
    return user


@pytest.fixture
def other_manager(other_shop):
    user = UserFactory(username="baraka")
    add_staff(user, other_shop, Staff.Role.MANAGER)
    return user


@pytest.fixture
def owner(shop):
    user = UserFactory(username="kamau")
    add_staff(user, shop, Staff.Role.OWNER)
    return user


@pytest.fixture
def manager_client(client, manager):
    client.force_login(manager)
    return client


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def age(sale: Sale, minutes: int) -> Sale:
    """Make a sale look started `minutes` ago."""
    Sale.objects.filter(pk=sale.pk).update(created_at=timezone.now() - timedelta(minutes=minutes))
    sale.refresh_from_db()
    return sale
