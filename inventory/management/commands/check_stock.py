from django.core.management.base import BaseCommand, CommandError

from inventory.models import Product, StockLevel, StockMovement
from inventory.services import find_stock_discrepancies


class Command(BaseCommand):
    help = ("Prove that every shop's on-hand quantity equals the sum of its stock ledger, product by "
            "product. Lists any difference in words and exits non-zero if there is one.")

    def handle(self, *args, **options):
        discrepancies = find_stock_discrepancies()
        if not discrepancies:
            levels = StockLevel.objects.count()
            shops = StockLevel.objects.values("shop").distinct().count()
            movements = StockMovement.objects.count()
            self.stdout.write(self.style.SUCCESS(
                f"OK: {levels:,} stock levels in {shops:,} shop(s) agree with {movements:,} ledger rows."
            ))
            return
        shop_model = StockLevel._meta.get_field("shop").related_model
        shops = shop_model.objects.in_bulk({shop_id for (shop_id, _), *_ in discrepancies})
        products = Product.objects.in_bulk({product_id for (_, product_id), *_ in discrepancies})
        for (shop_id, product_id), on_hand, ledger in discrepancies:
            shop, product = shops.get(shop_id), products.get(product_id)
            difference = on_hand - ledger
            self.stdout.write(
                f"{shop.code if shop else f'shop #{shop_id}'}: "
                f"{product.name + ' (' + product.sku + ')' if product else f'product #{product_id}'} "
                f"shows {on_hand} on hand but the ledger adds up to {ledger} "
                f"({abs(difference)} {'more' if difference > 0 else 'fewer'} than the ledger)."
            )
        raise CommandError(
            f"{len(discrepancies)} stock level(s) disagree with the ledger. On-hand changes only through "
            "inventory.services; find what changed it directly, then correct it with a stock count."
        )
