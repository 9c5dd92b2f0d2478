import random
import time
from datetime import timedelta
from decimal import Decimal

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from inventory.models import Product, StockLevel, StockMovement, TaxBand
from inventory.services import receive_stock
from pos.bulk_demo import PastSales, ShopPlan, shop_weight
from pos.models import Sale, Shop, Staff, Till
from pos.services import add_staff

B, E, C, A = TaxBand.STANDARD, TaxBand.REDUCED, TaxBand.ZERO, TaxBand.EXEMPT
# (name, SKU, unit, price KES VAT-inclusive, tax band, opening stock)
DEMO_PRODUCTS = [
    ("Mumias Sugar 1kg", "SUG-MUM-1KG", "1 kg", "175", B, 120),
    ("Kabras Sugar 2kg", "SUG-KAB-2KG", "2 kg", "340", B, 60),
    ("Jogoo Maize Flour 2kg", "UNG-JOG-2KG", "2 kg", "150", C, 150),
    ("Pembe Maize Flour 2kg", "UNG-PEM-2KG", "2 kg", "145", C, 150),
    ("Soko Maize Meal 2kg", "UNG-SOK-2KG", "2 kg", "135", C, 100),
    ("Exe Home Baking Flour 2kg", "FLR-EXE-2KG", "2 kg", "190", C, 80),
    ("Brookside Fresh Milk 500ml", "MLK-BRK-500", "500 ml", "65", A, 200),
    ("KCC Gold Crown Milk 500ml", "MLK-KCC-500", "500 ml", "60", A, 200),
    ("Tuzo Long Life Milk 500ml", "MLK-TUZ-500", "500 ml", "70", A, 96),
    ("Supaloaf White Bread 400g", "BRD-SUP-400", "400 g", "65", C, 60),
    ("Festive Brown Bread 600g", "BRD-FES-600", "600 g", "90", C, 40),
    ("Fresh Fri Cooking Oil 1L", "OIL-FRF-1L", "1 litre", "380", B, 48),
    ("Golden Fry Cooking Oil 2L", "OIL-GLD-2L", "2 litre", "690", B, 24),
    ("Kimbo Cooking Fat 1kg", "FAT-KIM-1KG", "1 kg", "420", B, 36),
    ("Pishori Rice 2kg", "RCE-PSH-2KG", "2 kg", "460", A, 50),
    ("Daawat Basmati Rice 1kg", "RCE-DAW-1KG", "1 kg", "290", A, 40),
    ("Geisha Bathing Soap 225g", "SOP-GEI-225", "225 g", "95", B, 72),
    ("Menengai Bar Soap 800g", "SOP-MEN-800", "800 g", "210", B, 48),
    ("Omo Washing Powder 1kg", "DET-OMO-1KG", "1 kg", "330", B, 36),
    ("Sunlight Dishwashing Liquid 750ml", "DET-SUN-750", "750 ml", "240", B, 30),
    ("Jik Bleach 750ml", "DET-JIK-750", "750 ml", "160", B, 30),
    ("Colgate Toothpaste 100ml", "TPS-COL-100", "100 ml", "180", B, 48),
    ("Always Sanitary Pads 8s", "SAN-ALW-8", "pack", "120", C, 40),
    ("Rosy Toilet Tissue 10 pack", "TIS-RSY-10", "pack", "450", B, 20),
    ("Ketepa Pride Tea Leaves 250g", "TEA-KTP-250", "250 g", "150", B, 60),
    ("Nescafé Classic Coffee 50g", "COF-NES-50", "50 g", "290", B, 24),
    ("Coca-Cola 500ml", "SDA-COK-500", "500 ml", "70", B, 120),
    ("Delmonte Mango Juice 1L", "JCE-DEL-1L", "1 litre", "260", B, 24),
    ("Dasani Water 1L", "WTR-DAS-1L", "1 litre", "60", B, 96),
    ("Eggs, tray of 30", "EGG-TRAY-30", "tray", "450", A, 20),
    ("Tomatoes 1kg", "VEG-TOM-1KG", "1 kg", "120", A, 30),
    ("Onions 1kg", "VEG-ONI-1KG", "1 kg", "140", A, 30),
    ("Sukuma Wiki bunch", "VEG-SUK-BN", "bunch", "30", A, 40),
    ("Ripe Bananas 1kg", "FRU-BAN-1KG", "1 kg", "100", A, 25),
    ("Royco Mchuzi Mix 200g", "SPC-ROY-200", "200 g", "110", B, 48),
    ("Kensalt Table Salt 1kg", "SLT-KEN-1KG", "1 kg", "45", B, 60),
    ("Blue Band Margarine 500g", "MRG-BLB-500", "500 g", "230", B, 36),
    ("Indomie Noodles 70g", "NDL-IND-70", "70 g", "35", B, 120),
    ("K-Gas Cooking Gas 6kg refill", "GAS-KGS-6KG", "6 kg", "1250", E, 10),
    ("Paraffin 1 litre", "FUL-PAR-1L", "1 litre", "170", E, 40),
    ("Safari Matches 10 pack", "MTC-SAF-10", "pack", "50", B, 50),
    ("Eveready AA Batteries 2 pack", "BAT-EVR-AA2", "pack", "120", B, 4),
]
LOGINS = [("cashier", Staff.Role.CASHIER), ("manager", Staff.Role.MANAGER), ("admin", Staff.Role.OWNER)]
GENERATED_SKU = "GEN-"
GENERATED_OPENING_STOCK = 1000
BATCH = 2000


def ean13(first12: str) -> str:
    """An EAN-13 code from its first 12 digits: weights 1,3,1,3… and the check digit that rounds to 10."""
    total = sum(int(digit) * (3 if i % 2 else 1) for i, digit in enumerate(first12))
    return f"{first12}{(10 - total % 10) % 10}"


class Command(BaseCommand):
    help = (
        "Make the demo shop DEMO with a till, its M-Pesa paybill (sandbox 174379), a few dozen products "
        "with stock and the logins cashier/cashier, manager/manager and admin/admin. Safe to run again. "
        "--shops/--products/--sales grow it into the benchmark data set (a chain with a past of sales and "
        "M-Pesa payments, see pos/bulk_demo.py). Refuses to run with DEBUG off."
    )

    def add_arguments(self, parser):
        parser.add_argument("--products", type=int, default=0, metavar="N",
                            help="grow the catalogue to at least N products (generated ones, 1000 in stock each)")
        parser.add_argument("--shops", type=int, default=0, metavar="N",
                            help="grow the chain to N shops (branches BR02 … with two tills and all products)")
        parser.add_argument("--sales", type=int, default=0, metavar="N",
                            help="make past sales until the chain has at least N, with as many M-Pesa ledger rows")
        parser.add_argument("--days", type=int, default=365, metavar="N",
                            help="spread new past sales over the last N days (default 365)")
        parser.add_argument("--seed", type=int, default=2026, help="random seed for generated sales")

    def handle(self, *args, products, shops, sales, days, seed, **options):
        self.started = {}
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo creates logins with known passwords (cashier/cashier, admin/admin), so it runs "
                "only with DEBUG=True. Never run it against a live shop's database."
            )
        if min(products, shops, sales) < 0 or days < 1:
            raise CommandError("--products, --shops and --sales take a number of 0 or more, --days 1 or more.")
        changes = self.seed_demo_shop()
        if shops:
            changes += self.grow_chain(shops)
        if products:
            changes += self.grow_catalogue(products)
        if sales:
            changes += self.make_past_sales(sales, days, random.Random(seed))
        if changes:
            self.stdout.write("\n".join(changes))
            self.stdout.write(self.style.SUCCESS("Demo data ready: log in as cashier/cashier, "
                                                 "manager/manager or admin/admin."))
        else:
            self.stdout.write("Demo data already present; nothing changed.")

    @transaction.atomic
    def seed_demo_shop(self) -> list[str]:
        changes = []
        shop, created = Shop.objects.get_or_create(code="DEMO", defaults={
            "name": "Comolor Demo Duka",
            "address": "Shop 4, Tom Mboya Street, Nairobi",
            "phone": "0700 123 456",
            "kra_pin": "P051234567Q",
        })
        if created:
            changes.append(f"Created shop {shop.code} ({shop.name}).")
        till, created = Till.objects.get_or_create(shop=shop, name="Till 1")
        if created:
            changes.append(f"Created till {till}.")
        # Through the app registry: pos code must not import mpesa (imports run mpesa → pos).
        account_model = apps.get_model("mpesa", "MpesaAccount")
        account, created = account_model.objects.get_or_create(shop=shop, defaults={
            "kind": account_model.Kind.PAYBILL, "shortcode": "174379",
        })
        if created:
            changes.append(f"Created M-Pesa account {account} (Safaricom sandbox paybill).")

        stocked = set(StockLevel.objects.filter(shop=shop).values_list("product__sku", flat=True))
        for i, (name, sku, unit, price, band, opening) in enumerate(DEMO_PRODUCTS, start=1):
            product, created = Product.objects.get_or_create(sku=sku, defaults={
                "name": name, "unit": unit, "price": Decimal(price), "tax_band": band,
                "barcode": ean13(f"6161101{i:05d}"), "reorder_level": 5,
            })
            if created:
                changes.append(f"Created product {product.name} ({product.barcode}).")
            if sku not in stocked:
                receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=opening,
                              reference="DEMO-OPENING", reason="opening stock")
                changes.append(f"Received {opening} × {product.name}.")

        User = get_user_model()
        for username, role in LOGINS:
            user = User.objects.filter(username=username).first()
            if user is None:
                superuser = username == "admin"
                user = User(username=username, is_superuser=superuser, is_staff=superuser)
                user.set_password(username)
                user.save()
                changes.append(f"Created login {username}/{username} ({role}).")
            staff = Staff.objects.filter(user=user).first()
            if staff is None or (staff.shop_id, staff.role, staff.default_till_id) != (shop.pk, role, till.pk):
                add_staff(user, shop, role, default_till=till)
                changes.append(f"Made {username} {role} of {shop.code}.")
        return changes

    def grow_catalogue(self, target: int) -> list[str]:
        existing = Product.objects.count()
        missing = target - existing
        if missing <= 0:
            return []
        first = Product.objects.filter(sku__startswith=GENERATED_SKU).count() + 1
        bands = [B, B, B, C, A, E]
        shops = list(Shop.objects.order_by("pk"))
        self.progress("products", 0, missing)
        for start in range(first, first + missing, BATCH):
            numbers = range(start, min(start + BATCH, first + missing))
            with transaction.atomic():
                made = Product.objects.bulk_create([
                    Product(sku=f"{GENERATED_SKU}{n:06d}", barcode=ean13(f"6162{n:08d}"),
                            name=f"Generated item {n:06d}", price=Decimal(20 + n % 1980),
                            tax_band=bands[n % len(bands)], reorder_level=10)
                    for n in numbers
                ])
                for shop in shops:
                    self.stock_products(shop, [product.pk for product in made])
            self.progress("products", numbers[-1] - first + 1, missing)
        return [f"Created {missing:,} generated products with {GENERATED_OPENING_STOCK} each in stock "
                f"in every shop."]

    def grow_chain(self, target: int) -> list[str]:
        """Branches BR02, BR03 … up to `target` shops, each with two tills, a Buy Goods till number,
        a cashier login without a password and every product in stock."""
        changes = []
        account_model = apps.get_model("mpesa", "MpesaAccount")
        products = list(Product.objects.values_list("pk", flat=True))
        for number in range(Shop.objects.count() + 1, target + 1):
            with transaction.atomic():
                shop = Shop.objects.create(code=f"BR{number:02d}", name=f"Comolor Branch {number}",
                                           address=f"Branch {number}, Kenya", kra_pin="P051234567Q")
                tills = [Till.objects.create(shop=shop, name=name) for name in ("Till 1", "Till 2")]
                account_model.objects.create(shop=shop, kind=account_model.Kind.TILL, shortcode="174379",
                                             till_number=f"5{number:05d}")
                User = get_user_model()
                user = User(username=f"cashier.{shop.code.lower()}")
                user.set_unusable_password()
                user.save()
                add_staff(user, shop, Staff.Role.CASHIER, default_till=tills[0])
                self.stock_products(shop, products)
            changes.append(f"Created branch {shop.code} with 2 tills, {len(products):,} products in stock "
                           f"and the login {user.username} (no password).")
        return changes

    def stock_products(self, shop: Shop, product_ids: list[int]) -> None:
        """Opening stock of GENERATED_OPENING_STOCK each, through the ledger."""
        for start in range(0, len(product_ids), BATCH):
            chunk = product_ids[start:start + BATCH]
            StockLevel.objects.bulk_create(
                [StockLevel(shop=shop, product_id=pk, on_hand=GENERATED_OPENING_STOCK) for pk in chunk]
            )
            StockMovement.objects.bulk_create([
                StockMovement(shop=shop, product_id=pk, quantity=GENERATED_OPENING_STOCK,
                              balance_after=GENERATED_OPENING_STOCK, kind=StockMovement.Kind.RECEIVE,
                              reference="DEMO-OPENING", reason="opening stock")
                for pk in chunk
            ])

    def make_past_sales(self, target: int, days: int, rng: random.Random) -> list[str]:
        missing = target - Sale.objects.count()
        if missing <= 0:
            return []
        plans = []
        for position, shop in enumerate(Shop.objects.order_by("pk").prefetch_related("tills")):
            cashier = (Staff.objects.filter(shop=shop, role=Staff.Role.CASHIER).order_by("pk")
                       .values_list("user_id", flat=True).first())
            account = apps.get_model("mpesa", "MpesaAccount").objects.filter(shop=shop).first()
            tills = [till.pk for till in shop.tills.all() if till.is_active]
            if cashier is None or not tills or account is None:
                continue  # a shop set up by hand without a cashier, till or M-Pesa account sells nothing here
            plans.append(ShopPlan(id=shop.pk, code=shop.code, till_ids=tills, cashier_id=cashier,
                                  shortcode=account.party_b, weight=shop_weight(position),
                                  paybill=account.kind == account.Kind.PAYBILL))
        # Products stocked in every selling shop (a product added by hand may be stocked in none).
        stocked = (StockLevel.objects.filter(shop_id__in=[plan.id for plan in plans]).values("product_id")
                   .annotate(shops=Count("shop_id")).filter(shops=len(plans)).values("product_id"))
        catalogue = [(pk, name, price, band, TaxBand(band).rate) for pk, name, price, band in
                     Product.objects.filter(is_active=True, pk__in=stocked).order_by("pk")
                     .values_list("pk", "name", "price", "tax_band")]
        if not plans or not catalogue:
            raise CommandError("No shop has a cashier, an active till, an M-Pesa account and stocked products "
                               "to sell: run seed_demo without --sales first.")
        end = timezone.now()
        started = time.monotonic()
        made = PastSales(plans=plans, catalogue=catalogue, total=missing, start=end - timedelta(days=days), end=end,
                         rng=rng, progress=self.progress).run()
        shops = ", ".join(plan.code for plan in plans)
        return [
            f"Created {made['sales']:,} past sales in {shops} over the last {days} days "
            f"({made['lines']:,} lines, {made['payments']:,} payments, {made['shifts']:,} shifts, "
            f"{made['stk_requests']:,} STK requests, {made['movements']:,} stock movements) "
            f"in {time.monotonic() - started:,.0f} s.",
            f"Created {made['ledger']:,} M-Pesa ledger rows ({made['ledger_matched']:,} matched, "
            f"{made['ledger_unmatched']:,} unmatched, {made['ledger_review']:,} to review) and "
            f"{made['callbacks']:,} raw callbacks.",
        ]

    def progress(self, what: str, done: int, total: int) -> None:
        """One line that redraws itself: a bar, the count, the rate and the time left."""
        started = self.started.setdefault(what, time.monotonic())
        width = 30
        filled = width * done // total
        line = f"\r  [{'#' * filled}{'.' * (width - filled)}] {what}: {done:,}/{total:,} ({done * 100 // total}%)"
        if done:
            elapsed = time.monotonic() - started
            rate = done / elapsed if elapsed else 0
            left = (total - done) / rate if rate else 0
            line += f" {rate:,.{0 if rate >= 10 else 1}f}/s, {int(left) // 60}:{int(left) % 60:02d} left"
        self.stdout.write(line.ljust(100), ending="\n" if done >= total else "")
        self.stdout.flush()
