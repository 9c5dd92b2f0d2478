import factory

from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from receipts.models import Printer


def stocked_product(shop, **fields):
    """A product with 100 in stock at the shop, through the stock ledger."""
    product = ProductFactory(**fields)
    receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=100)
    return product


class PrinterFactory(factory.django.DjangoModelFactory):
    """A network printer on loopback, as the fake printer listens."""

    class Meta:
        model = Printer

    till = factory.SubFactory("pos.tests.factories.TillFactory")
    name = "Till 1 printer"
    kind = Printer.Kind.NETWORK
    host = "127.0.0.1"
    paper_width = 80
    profile = "TM-T20II"
