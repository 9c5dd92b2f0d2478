"""Fixtures most M-Pesa tests share; a module that needs another sale defines its own `sale`."""

import pytest

from mpesa.tests.factories import StkRequestFactory, make_pending_sale


@pytest.fixture
def sale(cashier, till, product):
    """A pending one-item sale of KES 116."""
    return make_pending_sale(cashier=cashier, till=till, product=product)


@pytest.fixture
def stk(sale):
    """Its open STK request for the whole amount."""
    return StkRequestFactory(sale=sale, amount=116)
