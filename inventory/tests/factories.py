from decimal import Decimal

import factory

from inventory.models import Product, StockLevel, TaxBand


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    sku = factory.Sequence(lambda n: f"SKU{n:05d}")
    # Apart from the hand-picked 61611… barcodes of fixtures and journeys, so a long run never collides.
    barcode = factory.Sequence(lambda n: f"{6169900000000 + n}")
    name = factory.Sequence(lambda n: f"Product {n}")
    price = Decimal("116.00")
    tax_band = TaxBand.STANDARD


class StockLevelFactory(factory.django.DjangoModelFactory):
    """On-hand rows made directly; tests of the ledger use receive_stock instead."""

    class Meta:
        model = StockLevel

    shop = factory.SubFactory("pos.tests.factories.ShopFactory")
    product = factory.SubFactory(ProductFactory)
    on_hand = 0
