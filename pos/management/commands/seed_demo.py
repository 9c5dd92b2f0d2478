import random
from decimal import ROUND_CEILING, Decimal

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from inventory.models import Product, StockLevel, StockMovement, TaxBand
from inventory.services import receive_stock
from pos.models import Payment, Sale, SaleLine, Shop, Staff, Till
from pos.services import CENT, add_staff, vat_in

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
        "--products/--sales grow it into the benchmark data set. Refuses to run with DEBUG off."
    )

    def add_arguments(self, parser):
        parser.add_argument("--products", type=int, default=0, metavar="N",
                            help="grow the catalogue to at least N products (generated ones, 1000 in stock each)")
        parser.add_argument("--sales", type=int, default=0, metavar="N",
                            help="make past completed cash sales until the demo shop has at least N")
        parser.add_argument("--seed", type=int, default=2026, help="random seed for generated sales")

    def handle(self, *args, products, sales, seed, **options):
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo creates logins with known passwords (cashier/cashier, admin/admin), so it runs "
                "only with DEBUG=True. Never run it against a live shop's database."
            )
        if products < 0 or sales < 0:
            raise CommandError("--products and --sales take a number of 0 or more.")
        changes = self.seed_demo_shop()
        shop = Shop.objects.get(code="DEMO")
        if products:
            changes += self.grow_catalogue(shop, products)
        if sales:
            changes += self.make_past_sales(shop, sales, random.Random(seed))
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

    def grow_catalogue(self, shop: Shop, target: int) -> list[str]:
        existing = Product.objects.count()
        missing = target - existing
        if missing <= 0:
            return []
        first = Product.objects.filter(sku__startswith=GENERATED_SKU).count() + 1
        bands = [B, B, B, C, A, E]
        for start in range(first, first + missing, BATCH):
            numbers = range(start, min(start + BATCH, first + missing))
            with transaction.atomic():
                made = Product.objects.bulk_create([
                    Product(sku=f"{GENERATED_SKU}{n:06d}", barcode=ean13(f"6162{n:08d}"),
                            name=f"Generated item {n:06d}", price=Decimal(20 + n % 1980),
                            tax_band=bands[n % len(bands)], reorder_level=10)
                    for n in numbers
                ])
                StockLevel.objects.bulk_create(
                    [StockLevel(shop=shop, product=p, on_hand=GENERATED_OPENING_STOCK) for p in made]
                )
                StockMovement.objects.bulk_create([
                    StockMovement(shop=shop, product=p, quantity=GENERATED_OPENING_STOCK,
                                  balance_after=GENERATED_OPENING_STOCK, kind=StockMovement.Kind.RECEIVE,
                                  reference="DEMO-OPENING", reason="opening stock")
                    for p in made
                ])
            self.progress("products", numbers[-1] - first + 1, missing)
        return [f"Created {missing:,} generated products with {GENERATED_OPENING_STOCK} each in stock."]

    def make_past_sales(self, shop: Shop, target: int, rng: random.Random) -> list[str]:
        missing = target - Sale.objects.filter(shop=shop, status=Sale.Status.COMPLETED).count()
        if missing <= 0:
            return []
        staff = Staff.objects.select_related("user", "default_till").get(user__username="cashier")
        catalogue = list(Product.objects.filter(is_active=True, stock_levels__shop=shop)
                         .values_list("pk", "name", "price", "tax_band"))
        made = 0
        while made < missing:
            count = min(BATCH, missing - made)
            self.make_sales_batch(shop, staff, catalogue, count, rng)
            made += count
            self.progress("sales", made, missing)
        return [f"Created {missing:,} past completed cash sales."]

    @transaction.atomic
    def make_sales_batch(self, shop, staff, catalogue, count, rng):
        """One batch of completed cash sales with their lines, payments and stock ledger rows.

        The batch commits whole, so on-hand equals the ledger sum after every batch. A product
        about to run out is restocked first, as a shop would.
        """
        now = timezone.now()
        # Reserve a block of receipt numbers under the shop row lock, as next_receipt_number does.
        shop = Shop.objects.select_for_update().get(pk=shop.pk)
        first_seq = shop.last_receipt_seq + 1
        shop.last_receipt_seq += count
        shop.save(update_fields=["last_receipt_seq"])
        baskets = [rng.sample(catalogue, rng.randint(1, 6)) for _ in range(count)]
        quantities = [[rng.randint(1, 3) for _ in basket] for basket in baskets]
        touched = {pk for basket in baskets for pk, *_ in basket}
        levels = {level.product_id: level for level in
                  StockLevel.objects.select_for_update().filter(shop=shop, product_id__in=touched)}

        sales, lines, payments = [], [], []
        for i, (basket, qtys) in enumerate(zip(baskets, quantities)):
            sale_lines = []
            for (pk, name, price, band), qty in zip(basket, qtys):
                gross = (price * qty).quantize(CENT)
                rate = TaxBand(band).rate
                sale_lines.append(SaleLine(product_id=pk, name=name, quantity=qty, unit_price=price,
                                           tax_band=band, tax_rate=rate, line_total=gross,
                                           vat_amount=vat_in(gross, rate)))
            total = sum(line.line_total for line in sale_lines)
            sales.append(Sale(receipt_number=f"{shop.code}-{first_seq + i:0{11 - len(shop.code)}d}",
                              shop=shop, till=staff.default_till, cashier=staff.user,
                              status=Sale.Status.COMPLETED, total=total,
                              vat_total=sum(line.vat_amount for line in sale_lines),
                              amount_paid=total, completed_at=now))
            lines.append(sale_lines)
        Sale.objects.bulk_create(sales)  # sets the ids on PostgreSQL and SQLite 3.35+

        movements = []
        for sale, sale_lines in zip(sales, lines):
            tendered = (sale.total / 50).to_integral_value(rounding=ROUND_CEILING) * 50
            payments.append(Payment(sale=sale, method=Payment.Method.CASH, amount=sale.total,
                                    tendered=tendered, change_given=tendered - sale.total,
                                    received_by=staff.user))
            for line in sale_lines:
                line.sale = sale
                level = levels[line.product_id]
                if level.on_hand < line.quantity:
                    level.on_hand += GENERATED_OPENING_STOCK
                    movements.append(StockMovement(shop=shop, product_id=line.product_id,
                                                   quantity=GENERATED_OPENING_STOCK,
                                                   balance_after=level.on_hand,
                                                   kind=StockMovement.Kind.RECEIVE,
                                                   reference="DEMO-RESTOCK", reason="restock"))
                level.on_hand -= line.quantity
                movements.append(StockMovement(shop=shop, product_id=line.product_id, quantity=-line.quantity,
                                               balance_after=level.on_hand, kind=StockMovement.Kind.SALE,
                                               sale=sale, reference=sale.receipt_number,
                                               created_by=staff.user))
        SaleLine.objects.bulk_create([line for sale_lines in lines for line in sale_lines], batch_size=5000)
        Payment.objects.bulk_create(payments, batch_size=5000)
        StockMovement.objects.bulk_create(movements, batch_size=5000)
        StockLevel.objects.bulk_update(list(levels.values()), ["on_hand"], batch_size=5000)

    def progress(self, what: str, done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        self.stdout.write(f"\r  {what}: {done:,}/{total:,} ({done * 100 // total}%)", ending=end)
        self.stdout.flush()
