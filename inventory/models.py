from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q


class TaxBand(models.TextChoices):
    """KRA eTIMS tax types; prices include VAT."""

    STANDARD = "B", "B · VAT 16%"
    REDUCED = "E", "E · VAT 8%"
    ZERO = "C", "C · zero-rated 0%"
    EXEMPT = "A", "A · exempt"

    @property
    def rate(self) -> Decimal:
        return {"B": Decimal("16"), "E": Decimal("8"), "C": Decimal("0"), "A": Decimal("0")}[self.value]


class Product(models.Model):
    """A catalogue item, the same across the chain; stock is per shop."""

    sku = models.CharField("SKU", max_length=40, unique=True)
    barcode = models.CharField(
        max_length=40, unique=True, null=True, blank=True, help_text="EAN-13 or any code the scanner reads."
    )
    name = models.CharField(max_length=120)
    unit = models.CharField(max_length=20, default="pc", help_text="pc, kg, 500 g, litre…")
    price = models.DecimalField("price (KES, VAT incl.)", max_digits=12, decimal_places=2)
    tax_band = models.CharField(max_length=1, choices=TaxBand.choices, default=TaxBand.STANDARD)
    is_active = models.BooleanField("active", default=True)
    reorder_level = models.PositiveIntegerField(default=0, help_text="Low-stock warning at or below this.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["name"])]
        constraints = [models.CheckConstraint(condition=Q(price__gte=0), name="product_price_not_negative")]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"

    @property
    def tax_rate(self) -> Decimal:
        return TaxBand(self.tax_band).rate


class StockLevel(models.Model):
    """On-hand quantity of one product in one shop: a cache of the ledger, moved only with it."""

    shop = models.ForeignKey("pos.Shop", on_delete=models.PROTECT, related_name="stock_levels")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="stock_levels")
    on_hand = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "product"], name="one_stock_level_per_shop_product"),
            models.CheckConstraint(condition=Q(on_hand__gte=0), name="stock_never_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.product} @ {self.shop}: {self.on_hand}"


class StockMovement(models.Model):
    """One append-only fact of the stock ledger. Corrections are new rows."""

    class Kind(models.TextChoices):
        SALE = "sale", "sale"
        RETURN = "return", "return"
        RECEIVE = "receive", "receive"
        ADJUST = "adjust", "adjustment"
        TRANSFER_OUT = "transfer_out", "transfer out"
        TRANSFER_IN = "transfer_in", "transfer in"
        COUNT = "count", "stock count"

    shop = models.ForeignKey("pos.Shop", on_delete=models.PROTECT, related_name="stock_movements")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="stock_movements")
    quantity = models.IntegerField(help_text="Signed: positive in, negative out.")
    balance_after = models.IntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    sale = models.ForeignKey(
        "pos.Sale", null=True, blank=True, on_delete=models.PROTECT, related_name="stock_movements"
    )
    reference = models.CharField(max_length=80, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["shop", "product", "created_at"]),
            # The back office finds movements by their paperwork: a receipt number or a delivery note.
            models.Index(fields=["reference"], name="movement_reference"),
        ]
        constraints = [
            # A completed sale moves each product's stock exactly once.
            models.UniqueConstraint(
                fields=["sale", "product"], condition=Q(kind="sale"), name="sale_moves_stock_once"
            ),
            models.CheckConstraint(condition=~Q(quantity=0), name="movement_not_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.quantity:+d} {self.product.sku} @ {self.shop}"
