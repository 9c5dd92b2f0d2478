"""The simulator's own state. It lives in the database so that every dev-server thread, the
delivery thread and the worker (which talks to it over HTTP) see the same Daraja."""

from django.db import models
from django.db.models import Q


class AccessToken(models.Model):
    token = models.CharField(max_length=40, unique=True)
    consumer_key = models.CharField(max_length=100)
    expires_at = models.DateTimeField()
    revoked = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.token[:6]}… until {self.expires_at:%H:%M:%S}"


class StkPrompt(models.Model):
    """One accepted STK push: the prompt on the virtual phone and, once decided, its result."""

    class Delivery(models.TextChoices):
        NORMAL = "normal", "delivered once"
        LOST = "lost", "never delivered"
        TWICE = "twice", "delivered twice"
        EARLY = "early", "delivered before the push response"
        LATE = "late", "delivered late"

    merchant_request_id = models.CharField(max_length=64, unique=True)
    checkout_request_id = models.CharField(max_length=64, unique=True)
    business_shortcode = models.CharField(max_length=12)
    party_b = models.CharField(max_length=12)
    transaction_type = models.CharField(max_length=30)
    amount = models.PositiveIntegerField()
    phone = models.CharField(max_length=12)
    account_reference = models.CharField(max_length=40, blank=True)
    description = models.CharField(max_length=100, blank=True)
    callback_url = models.CharField(max_length=500)
    delivery = models.CharField(max_length=8, choices=Delivery.choices, default=Delivery.NORMAL)
    # What happens if nobody answers by hand; a prompt answered on the virtual phone replaces it.
    planned_result = models.CharField(max_length=20)
    decide_at = models.DateTimeField()
    waits_for_person = models.BooleanField(default=False)
    result_code = models.CharField(max_length=20, blank=True)
    result_desc = models.CharField(max_length=200, blank=True)
    receipt_number = models.CharField(max_length=10, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["receipt_number"], condition=~Q(receipt_number=""), name="daraja_sim_prompt_receipt_unique"
            ),
            # The subscriber lock: a phone has at most one prompt open at a time.
            models.UniqueConstraint(
                fields=["phone"], condition=Q(decided_at__isnull=True), name="daraja_sim_one_open_prompt_per_phone"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.checkout_request_id} KES {self.amount}"

    @property
    def is_open(self) -> bool:
        return self.decided_at is None


class C2BRegistration(models.Model):
    shortcode = models.CharField(max_length=12, unique=True)
    version = models.CharField(max_length=2)
    response_type = models.CharField(max_length=10)
    confirmation_url = models.CharField(max_length=500)
    validation_url = models.CharField(max_length=500, blank=True)
    registered_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.shortcode} ({self.version})"


class PullRegistration(models.Model):
    shortcode = models.CharField(max_length=12, unique=True)
    nominated_number = models.CharField(max_length=15)
    callback_url = models.CharField(max_length=500)
    registered_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.shortcode


class Payment(models.Model):
    """A customer payment the simulated M-Pesa has seen (STK or C2B): what Pull and
    Transaction Status report."""

    class Kind(models.TextChoices):
        STK = "stk", "STK push"
        C2B = "c2b", "C2B (paybill/till menu)"

    class Status(models.TextChoices):
        VALIDATING = "validating", "waiting for validation"
        COMPLETED = "completed", "completed"
        CANCELLED = "cancelled", "cancelled"

    receipt_number = models.CharField(max_length=10, unique=True)
    kind = models.CharField(max_length=3, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.COMPLETED)
    shortcode = models.CharField(max_length=12, help_text="The number paid: paybill or till.")
    store_number = models.CharField(max_length=12, help_text="The C2B registration owner.")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    phone = models.CharField(max_length=12)
    bill_ref_number = models.CharField(max_length=40, blank=True)
    first_name = models.CharField(max_length=40, blank=True)
    middle_name = models.CharField(max_length=40, blank=True)
    last_name = models.CharField(max_length=40, blank=True)
    originator_conversation_id = models.CharField(max_length=64, blank=True)
    third_party_trans_id = models.CharField(max_length=64, blank=True)
    prompt = models.OneToOneField(StkPrompt, null=True, blank=True, on_delete=models.SET_NULL)
    transacted_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-transacted_at", "-id"]

    def __str__(self) -> str:
        return f"{self.receipt_number} KES {self.amount}"


class Delivery(models.Model):
    """One HTTP POST the simulator owes somebody (an outbox row). Claimed with a conditional
    update so two threads or processes never send the same row."""

    class Kind(models.TextChoices):
        STK_CALLBACK = "stk", "STK callback"
        C2B_VALIDATION = "validation", "C2B validation"
        C2B_CONFIRMATION = "confirmation", "C2B confirmation"
        RESULT = "result", "result (Transaction Status)"

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    url = models.CharField(max_length=500)
    # Text, not JSONField: PostgreSQL's jsonb would reorder the keys Daraja sends in a fixed order.
    body = models.TextField()
    due_at = models.DateTimeField(db_index=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    prompt = models.ForeignKey(StkPrompt, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    error = models.CharField(max_length=300, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["due_at", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} → {self.url} ({self.state})"


class TrafficEntry(models.Model):
    """Everything the simulator received (in) and sent (out), for the traffic page."""

    class Direction(models.TextChoices):
        IN = "in", "received"
        OUT = "out", "sent"

    direction = models.CharField(max_length=3, choices=Direction.choices)
    method = models.CharField(max_length=7)
    url = models.CharField(max_length=500)
    request_headers = models.TextField(blank=True)
    request_body = models.TextField(blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    error = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.direction} {self.method} {self.url} → {self.status_code}"
