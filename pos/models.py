from decimal import Decimal

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q


class Shop(models.Model):
    code = models.CharField(
        max_length=4,
        unique=True,
        validators=[RegexValidator(r"^[A-Z0-9]{2,4}$", "2–4 capital letters or digits.")],
        help_text="Starts every receipt number: DEMO-0000123 (the M-Pesa account reference, ≤ 12 characters).",
    )
    name = models.CharField(max_length=120)
    address = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=20, blank=True)
    kra_pin = models.CharField("KRA PIN", max_length=11, blank=True)
    vat_registered = models.BooleanField("VAT registered", default=True)
    receipt_footer = models.CharField(max_length=200, blank=True, default="Thank you for shopping with us!")
    # The last receipt number handed out; moved under a row lock so numbers are gap-free.
    last_receipt_seq = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Till(models.Model):
    shop = models.ForeignKey(Shop, on_delete=models.PROTECT, related_name="tills")
    name = models.CharField(max_length=60)
    is_active = models.BooleanField("active", default=True)

    class Meta:
        ordering = ["shop", "name"]
        constraints = [models.UniqueConstraint(fields=["shop", "name"], name="till_name_unique_in_shop")]

    def __str__(self) -> str:
        return f"{self.shop.code} · {self.name}"


class Staff(models.Model):
    """Links a login to a shop and a role; the role also names the user's Django group."""

    class Role(models.TextChoices):
        CASHIER = "cashier", "cashier"
        MANAGER = "manager", "manager"
        OWNER = "owner", "owner"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff")
    shop = models.ForeignKey(Shop, on_delete=models.PROTECT, related_name="staff")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.CASHIER)
    default_till = models.ForeignKey(Till, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        verbose_name_plural = "staff"

    def __str__(self) -> str:
        return f"{self.user.get_username()} ({self.role}, {self.shop.code})"


class Sale(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        COMPLETED = "completed", "completed"
        CANCELLED = "cancelled", "cancelled"

    receipt_number = models.CharField(max_length=12, unique=True)
    shop = models.ForeignKey(Shop, on_delete=models.PROTECT, related_name="sales")
    till = models.ForeignKey(Till, on_delete=models.PROTECT, related_name="sales")
    cashier = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="sales")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    total = models.DecimalField("total (KES, VAT incl.)", max_digits=12, decimal_places=2)
    vat_total = models.DecimalField("VAT", max_digits=12, decimal_places=2)
    amount_paid = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    customer_phone = models.CharField(max_length=12, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=200, blank=True)
    # The till's open shift when the sale was made (null only for sales from before shifts existed).
    shift = models.ForeignKey("Shift", null=True, blank=True, on_delete=models.PROTECT, related_name="sales")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["shop", "status", "created_at"]),
            models.Index(fields=["cashier", "created_at"]),
            # The sales list newest first and the dashboard's day and week, chain-wide and per shop,
            # read as index ranges (ordering is -created_at, -id).
            models.Index(fields=["created_at", "id"], name="sale_created"),
            models.Index(fields=["shop", "created_at", "id"], name="sale_shop_created"),
            # Sales left pending (the "pending too long" queue), across the chain or per shop.
            models.Index(fields=["shop", "created_at"], name="sale_pending", condition=Q(status="pending")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="completed") | Q(amount_paid__gte=models.F("total")),
                name="completed_sale_is_paid",
            ),
            models.CheckConstraint(
                condition=~(Q(completed_at__isnull=False) & Q(cancelled_at__isnull=False)),
                name="sale_not_both_completed_and_cancelled",
            ),
        ]

    def __str__(self) -> str:
        return self.receipt_number

    @property
    def balance_due(self) -> Decimal:
        return max(self.total - self.amount_paid, Decimal("0"))


class SaleLine(models.Model):
    """A line as sold: price and tax band are captured, so later catalogue edits change nothing."""

    sale = models.ForeignKey(Sale, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey("inventory.Product", on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=120)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    tax_band = models.CharField(max_length=1)
    tax_rate = models.DecimalField(max_digits=5, decimal_places=2)
    line_total = models.DecimalField(max_digits=12, decimal_places=2)
    vat_amount = models.DecimalField("VAT amount", max_digits=12, decimal_places=2)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["sale", "product"], name="one_line_per_product"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="line_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.name}"


class Payment(models.Model):
    """Money applied to a sale. Append-only: a refund or correction is a new row."""

    class Method(models.TextChoices):
        CASH = "cash", "Cash"
        MPESA = "mpesa", "M-Pesa"

    sale = models.ForeignKey(Sale, on_delete=models.PROTECT, related_name="payments")
    method = models.CharField(max_length=10, choices=Method.choices)
    amount = models.DecimalField(max_digits=12, decimal_places=2, help_text="What this payment settles.")
    tendered = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    change_given = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    reference = models.CharField(max_length=20, blank=True, help_text="The M-Pesa receipt code.")
    received_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            # One M-Pesa receipt pays one sale at most, whatever path it came by.
            models.UniqueConstraint(
                fields=["reference"], condition=Q(method="mpesa") & ~Q(reference=""), name="mpesa_code_pays_once"
            ),
        ]

    def __str__(self) -> str:
        # Lists of payments select_related("sale"): the receipt number costs no query per row.
        return f"{self.get_method_display()} KES {self.amount} · {self.sale.receipt_number}"


class ManagerAction(models.Model):
    """What a manager did to fix the books, who did it and why. Append-only: the audit trail."""

    class Action(models.TextChoices):
        ASSIGN_PAYMENT = "assign_payment", "assigned an M-Pesa payment to a sale"
        REFUND_OVERPAYMENT = "refund_overpayment", "marked an overpayment refunded"
        QUERY_STK = "query_stk", "asked M-Pesa for a prompt's outcome"
        REPROCESS_CALLBACK = "reprocess_callback", "re-processed a callback"
        CANCEL_SALE = "cancel_sale", "cancelled a stale sale"
        CLOSE_SHIFT = "close_shift", "closed a shift"

    shop = models.ForeignKey(Shop, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=30, choices=Action.choices)
    target = models.CharField(max_length=120, help_text='What was acted on: "sale DEMO-0000123", "M-Pesa QK12AB34CD".')
    reason = models.TextField(help_text="Why, in the manager's words.")
    outcome = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["shop", "created_at"])]

    def __str__(self) -> str:
        return f"{self.user} {self.get_action_display()}: {self.target}"


class Shift(models.Model):
    """A cashier's session on a till: opened with a float, closed with a blind cash count."""

    class Status(models.TextChoices):
        OPEN = "open", "open"
        CLOSED = "closed", "closed"

    shop = models.ForeignKey(Shop, on_delete=models.PROTECT, related_name="shifts")
    till = models.ForeignKey(Till, on_delete=models.PROTECT, related_name="shifts")
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    opened_at = models.DateTimeField(auto_now_add=True)
    opening_float = models.DecimalField("opening float (KES)", max_digits=12, decimal_places=2)
    status = models.CharField(max_length=6, choices=Status.choices, default=Status.OPEN)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    counted_cash = models.DecimalField("cash counted (KES)", max_digits=12, decimal_places=2, null=True, blank=True)
    # What the drawer should have held when it was counted: kept with the count, so the change list
    # shows every shift's difference without adding up its sales again.
    expected_cash = models.DecimalField(
        "cash expected (KES)", max_digits=12, decimal_places=2, null=True, blank=True
    )
    close_note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        indexes = [models.Index(fields=["shop", "opened_at"])]
        constraints = [
            models.UniqueConstraint(fields=["till"], condition=Q(status="open"), name="one_open_shift_per_till"),
            models.CheckConstraint(condition=Q(opening_float__gte=0), name="shift_float_not_negative"),
            models.CheckConstraint(
                condition=Q(status="open", closed_at__isnull=True, counted_cash__isnull=True)
                | Q(status="closed", closed_at__isnull=False, counted_cash__gte=0, expected_cash__isnull=False),
                name="closed_shift_has_its_count",
            ),
        ]

    def __str__(self) -> str:
        return f"Shift #{self.pk} · {self.till.name}"

    @property
    def cash_difference(self) -> Decimal | None:
        """Counted minus expected: negative is a shortage, positive an over-count."""
        if self.counted_cash is None or self.expected_cash is None:
            return None
        return self.counted_cash - self.expected_cash


class CashMovement(models.Model):
    """Cash put into or taken out of the drawer during a shift, other than by a sale. Append-only."""

    class Kind(models.TextChoices):
        PAY_IN = "pay_in", "pay-in"
        PAY_OUT = "pay_out", "pay-out"

    shift = models.ForeignKey(Shift, on_delete=models.PROTECT, related_name="cash_movements")
    kind = models.CharField(max_length=7, choices=Kind.choices)
    amount = models.DecimalField("amount (KES)", max_digits=12, decimal_places=2)
    reason = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="cash_movement_amount_positive"),
            models.CheckConstraint(condition=~Q(reason=""), name="cash_movement_has_a_reason"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} KES {self.amount}"
