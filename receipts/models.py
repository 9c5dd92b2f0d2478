from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from escpos.capabilities import CAPABILITIES

from pos.models import Sale


class Printer(models.Model):
    """A receipt printer at a till, and how the server reaches it."""

    class Kind(models.TextChoices):
        NETWORK = "network", "network (TCP, raw port 9100)"
        USB = "usb", "USB"
        SERIAL = "serial", "serial (or USB-serial adapter)"
        FILE = "file", "file or device file"
        LP = "lp", "CUPS / LP queue"
        BROWSER = "browser", "browser print only"

    class PaperWidth(models.IntegerChoices):
        MM58 = 58, "58 mm (32 columns)"
        MM80 = 80, "80 mm (48 columns)"

    till = models.ForeignKey("pos.Till", on_delete=models.CASCADE, related_name="printers")
    name = models.CharField(max_length=60, help_text="Shown to the cashier, e.g. “Till 1 printer”.")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.NETWORK)
    host = models.CharField(max_length=255, blank=True, help_text="Network: IP address or host name.")
    port = models.PositiveIntegerField(default=9100, help_text="Network: raw printing port.")
    usb_vendor_id = models.CharField(
        "USB vendor id", max_length=4, blank=True, help_text="USB: 4 hex digits from lsusb, e.g. 04b8."
    )
    usb_product_id = models.CharField("USB product id", max_length=4, blank=True, help_text="e.g. 0e15.")
    device = models.CharField(
        max_length=255, blank=True,
        help_text="Serial: /dev/ttyUSB0. File: a path (/dev/usb/lp0, or a folder). LP: the queue name.",
    )
    paper_width = models.PositiveSmallIntegerField(choices=PaperWidth.choices, default=PaperWidth.MM80)
    profile = models.CharField(
        max_length=40, default="default",
        help_text="python-escpos printer profile: default, TM-T88V, TM-T20II, POS-5890, NT-5890K…",
    )
    cash_drawer = models.BooleanField(default=False, help_text="Open the drawer plugged into it on cash sales.")
    is_active = models.BooleanField("active", default=True)

    class Meta:
        ordering = ["till", "name"]
        constraints = [
            models.UniqueConstraint(fields=["till", "name"], name="printer_name_unique_at_till"),
            # Each receipt goes to one place: at most one active printer per till.
            models.UniqueConstraint(fields=["till"], condition=Q(is_active=True), name="one_active_printer_per_till"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        needed = {
            self.Kind.NETWORK: ["host"],
            self.Kind.USB: ["usb_vendor_id", "usb_product_id"],
            self.Kind.SERIAL: ["device"],
            self.Kind.FILE: ["device"],
            self.Kind.LP: ["device"],
        }.get(self.kind, [])
        errors = {field: "Needed for this kind of printer." for field in needed if not getattr(self, field)}
        for field in ("usb_vendor_id", "usb_product_id"):
            value = getattr(self, field)
            if value and not all(c in "0123456789abcdefABCDEF" for c in value):
                errors[field] = "4 hex digits, as lsusb shows them (e.g. 04b8)."
        if self.profile not in CAPABILITIES["profiles"]:
            errors["profile"] = f"Unknown profile {self.profile!r}. Try default, TM-T88V, TM-T20II or POS-5890."
        if errors:
            raise ValidationError(errors)

    @property
    def address(self) -> str:
        """The printer as an address `manage.py print_test` accepts."""
        return {
            self.Kind.NETWORK: f"tcp://{self.host}:{self.port}",
            self.Kind.USB: f"usb://{self.usb_vendor_id}:{self.usb_product_id}",
            self.Kind.SERIAL: f"serial://{self.device}",
            self.Kind.FILE: f"file://{self.device}",
            self.Kind.LP: f"lp://{self.device}",
            self.Kind.BROWSER: "browser",
        }[self.kind]


class PrintJob(models.Model):
    """One receipt sent (or to be sent) to a printer, with the exact bytes, so a retry prints the same."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        PRINTING = "printing", "printing"
        DONE = "done", "printed"
        FAILED = "failed", "failed"

    sale = models.ForeignKey(Sale, on_delete=models.PROTECT, related_name="print_jobs")
    printer = models.ForeignKey(
        Printer, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs",
        help_text="Empty: the default printer (RECEIPTS_DEFAULT_PRINTER).",
    )
    destination = models.CharField(max_length=255, blank=True, help_text="Where it was last sent.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    data = models.BinaryField(blank=True, default=b"", help_text="The ESC/POS bytes; empty until rendered.")
    is_copy = models.BooleanField("copy / reprint", default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    printed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        constraints = [
            # One original receipt per sale, even if the completion hook runs twice; more are copies.
            models.UniqueConstraint(fields=["sale"], condition=Q(is_copy=False), name="one_original_receipt_job"),
        ]

    def __str__(self) -> str:
        return f"Print job #{self.pk} for {self.sale_id} ({self.status})"


class SaleReceipt(Sale):
    """The sales as the receipts back office sees them: preview, print jobs, reprint."""

    class Meta:
        proxy = True
        verbose_name = "receipt"
