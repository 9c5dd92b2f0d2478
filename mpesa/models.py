"""M-Pesa records: the shop's Daraja account, outbound calls, STK requests, raw callbacks and
the one ledger of M-Pesa transactions. Callbacks, calls and transactions are append-only facts."""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q


class MpesaAccount(models.Model):
    """How one shop is paid: a paybill, or a till (Buy Goods) under a store number."""

    class Kind(models.TextChoices):
        PAYBILL = "paybill", "paybill"
        TILL = "till", "till (Buy Goods)"

    class ValidationPolicy(models.TextChoices):
        ACCEPT_ALL = "accept_all", "accept every payment, reconcile later"
        STRICT = "strict", "reject unknown account numbers and wrong amounts"

    shop = models.OneToOneField("pos.Shop", on_delete=models.CASCADE, related_name="mpesa_account")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PAYBILL)
    shortcode = models.CharField(
        max_length=10, help_text="Paybill number, or for a till the store (head office) number."
    )
    till_number = models.CharField(max_length=10, blank=True, help_text="Buy Goods till number (PartyB).")
    validation_policy = models.CharField(
        max_length=12, choices=ValidationPolicy.choices, default=ValidationPolicy.ACCEPT_ALL
    )
    is_active = models.BooleanField("active", default=True)
    # When Pull Transactions last ran for this account: the worker's rate limit and next window.
    last_pulled_at = models.DateTimeField(null=True, blank=True, editable=False)

    def __str__(self) -> str:
        number = self.till_number if self.kind == self.Kind.TILL else self.shortcode
        return f"{self.shop.code} {self.get_kind_display()} {number}"

    @property
    def party_b(self) -> str:
        return self.till_number if self.kind == self.Kind.TILL else self.shortcode

    @property
    def transaction_type(self) -> str:
        return "CustomerBuyGoodsOnline" if self.kind == self.Kind.TILL else "CustomerPayBillOnline"


class DarajaCall(models.Model):
    """One outbound call to Daraja, redacted: no secret, password or full phone number."""

    endpoint = models.CharField(max_length=120)
    method = models.CharField(max_length=6, default="POST")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    request_id = models.CharField(max_length=80, blank=True)
    outcome = models.CharField(max_length=200, blank=True)
    request_body = models.JSONField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} → {self.status_code}"


class StkRequest(models.Model):
    """One STK push, committed before Daraja is called so that an early callback finds it."""

    class Status(models.TextChoices):
        CREATED = "created", "created (not yet sent)"
        PENDING = "pending", "waiting for the customer"
        PAID = "paid", "paid"
        FAILED = "failed", "failed"
        REFUSED = "refused", "refused by Daraja"
        UNKNOWN = "unknown", "outcome unknown"
        EXPIRED = "expired", "gave up"

    OPEN = (Status.CREATED, Status.PENDING)

    sale = models.ForeignKey("pos.Sale", on_delete=models.PROTECT, related_name="stk_requests")
    shop = models.ForeignKey("pos.Shop", on_delete=models.PROTECT, related_name="+")
    phone = models.CharField(max_length=12, help_text="2547XXXXXXXX")
    amount = models.PositiveIntegerField(help_text="Whole shillings.")
    account_reference = models.CharField(max_length=12)
    merchant_request_id = models.CharField(max_length=64, blank=True)
    checkout_request_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    # Unguessable segment of this request's CallBackURL.
    callback_token = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CREATED)
    result_code = models.CharField(max_length=20, blank=True)
    result_desc = models.CharField(max_length=255, blank=True)
    mpesa_receipt = models.CharField("M-Pesa receipt", max_length=20, blank=True)
    query_count = models.PositiveSmallIntegerField(default=0)
    last_queried_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "STK request"
        verbose_name_plural = "STK requests"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"]), models.Index(fields=["phone", "created_at"])]
        constraints = [
            # At most one open prompt per sale: a double click sends one push.
            models.UniqueConstraint(
                fields=["sale"], condition=Q(status__in=["created", "pending"]), name="one_open_stk_per_sale"
            ),
        ]

    def __str__(self) -> str:
        return f"STK {self.checkout_request_id or self.pk} KES {self.amount} ({self.status})"


class CallbackLog(models.Model):
    """Every inbound request from Safaricom, stored raw before anything else reads it."""

    class Kind(models.TextChoices):
        STK = "stk", "STK result"
        C2B_VALIDATION = "c2b_validation", "C2B validation"
        C2B_CONFIRMATION = "c2b_confirmation", "C2B confirmation"
        C2B_TIMEOUT = "c2b_timeout", "C2B timeout"
        TRANSACTION_STATUS = "transaction_status", "transaction status result"
        PULL = "pull", "pull transactions"

    class Status(models.TextChoices):
        RECEIVED = "received", "received, not yet processed"
        PROCESSED = "processed", "processed"
        ORPHAN = "orphan", "no matching request yet"
        FAILED = "failed", "processing failed"
        REJECTED = "rejected", "rejected (not from Safaricom)"
        INVALID = "invalid", "unreadable body"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    body = models.BinaryField(help_text="Exactly the bytes received.")
    headers = models.JSONField(default=dict)
    source_ip = models.GenericIPAddressField("source IP", null=True, blank=True)
    path = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    checkout_request_id = models.CharField(max_length=64, blank=True, db_index=True)
    trans_id = models.CharField(max_length=20, blank=True, db_index=True)

    class Meta:
        verbose_name = "raw callback"
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["status", "received_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"


class MpesaTransaction(models.Model):
    """The ledger: one row per real M-Pesa payment, unique by its M-Pesa receipt (TransID)."""

    class Source(models.TextChoices):
        STK_CALLBACK = "stk_callback", "STK callback"
        STK_QUERY = "stk_query", "STK query"
        C2B = "c2b", "C2B confirmation"
        PULL = "pull", "Pull Transactions"
        TRANSACTION_STATUS = "transaction_status", "Transaction Status"

    class Match(models.TextChoices):
        MATCHED = "matched", "paid a sale"
        UNMATCHED = "unmatched", "no sale yet"
        REVIEW = "review", "needs review"
        RESOLVED = "resolved", "resolved by a manager"

    # Null only while a success known from STK Query waits for its receipt number.
    receipt_number = models.CharField(max_length=20, unique=True, null=True, blank=True)
    transaction_type = models.CharField(max_length=40, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    msisdn = models.CharField(max_length=80, blank=True, help_text="As received: full, masked or hashed.")
    first_name = models.CharField(max_length=60, blank=True)
    middle_name = models.CharField(max_length=60, blank=True)
    last_name = models.CharField(max_length=60, blank=True)
    bill_ref_number = models.CharField(max_length=40, blank=True)
    business_shortcode = models.CharField(max_length=10, blank=True)
    transaction_time = models.DateTimeField(null=True, blank=True)
    shop = models.ForeignKey("pos.Shop", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    sale = models.ForeignKey(
        "pos.Sale", null=True, blank=True, on_delete=models.PROTECT, related_name="mpesa_transactions"
    )
    stk_request = models.OneToOneField(
        StkRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="transaction"
    )
    payment = models.OneToOneField(
        "pos.Payment", null=True, blank=True, on_delete=models.PROTECT, related_name="mpesa_transaction"
    )
    callback = models.ForeignKey(CallbackLog, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    source = models.CharField(max_length=20, choices=Source.choices)
    match_status = models.CharField(max_length=10, choices=Match.choices, default=Match.UNMATCHED)
    review_reason = models.CharField(max_length=255, blank=True)
    processed = models.BooleanField(default=False)
    # Money above what the sale needed (a paybill overpayment, a manager's assignment): to refund.
    excess_amount = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    # Who tied this payment to a sale by hand (a cashier's claim by code, a manager's assignment).
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    # A manager's closing word on a payment that needed review (refund made, assigned, written off).
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "M-Pesa transaction"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["match_status", "created_at"]),
            models.Index(fields=["shop", "created_at"]),
            models.Index(fields=["bill_ref_number"]),
            # The reconciliation queues of one shop (unmatched, review), and the excess still to refund.
            models.Index(fields=["shop", "match_status", "created_at"], name="mpesa_tx_shop_queue"),
            models.Index(fields=["shop", "created_at"], name="mpesa_tx_excess_to_refund",
                         condition=Q(excess_amount__gt=0, resolved_at__isnull=True)),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(excess_amount__gte=0), name="mpesa_excess_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.receipt_number or '(receipt pending)'} KES {self.amount}"


class PaymentClaim(models.Model):
    """A cashier's "the customer paid to our till" by M-Pesa code. Only Safaricom's own
    confirmation in the ledger pays the sale; until it arrives the claim waits, then expires."""

    class Status(models.TextChoices):
        WAITING = "waiting", "waiting for M-Pesa's confirmation"
        PAID = "paid", "paid the sale"
        REFUSED = "refused", "refused"
        EXPIRED = "expired", "no confirmation came"

    LIVE = (Status.WAITING, Status.PAID)

    sale = models.ForeignKey("pos.Sale", on_delete=models.PROTECT, related_name="mpesa_claims")
    shop = models.ForeignKey("pos.Shop", on_delete=models.PROTECT, related_name="+")
    code = models.CharField("M-Pesa code", max_length=20)
    claimed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.WAITING)
    message = models.TextField(blank=True)
    transaction = models.ForeignKey(
        MpesaTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="claims"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "M-Pesa claim"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"])]
        constraints = [
            # One code, one sale: two tills claiming the same SMS at once cannot both win.
            models.UniqueConstraint(
                fields=["code"], condition=Q(status__in=["waiting", "paid"]), name="one_live_claim_per_code"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} for sale {self.sale_id} ({self.status})"
