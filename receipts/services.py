"""Receipt workflows: build a receipt, print it after the sale commits, retry, reprint, test a printer.

Printing is slow I/O: nothing here sends bytes inside a transaction or while holding a row lock,
and no printer failure ever touches the sale.
"""

import logging
import re
import threading
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from escpos.capabilities import CAPABILITIES

from comolor.logging import mask_phone
from inventory.models import TaxBand
from pos.models import Payment, Sale
from pos.services import shift_report

from .document import Receipt, ReceiptLine, ReceiptPayment, TaxBandTotal
from .models import Printer, PrintJob
from .printing import PrinterTarget, PrintError, parse_printer_address, send_to_printer, target_for
from .rendering import Row, columns_for, layout_shift_report, render_escpos, render_escpos_ops

logger = logging.getLogger(__name__)
NAIROBI = ZoneInfo("Africa/Nairobi")
_VERIFY_SALT = "receipts.verify"


def receipt_token(receipt_number: str) -> str:
    """A short signature of the receipt number: the QR link cannot be guessed for other receipts."""
    return signing.Signer(salt=_VERIFY_SALT).signature(receipt_number)[:16]


def verify_receipt(receipt_number: str, token: str) -> Sale | None:
    """The sale a receipt QR code names, if the code is genuine."""
    if not constant_time_compare(token, receipt_token(receipt_number)):
        return None
    return Sale.objects.select_related("shop").filter(receipt_number=receipt_number).first()


def _masked_phone(value: str) -> str:
    value = value.strip()
    if re.fullmatch(r"\+?\d{9,12}", value):
        return mask_phone(value)
    # Daraja sends some numbers masked already (2547 ***** 149); a hashed one is shown not at all.
    return value if "*" in value and len(value) <= 20 else ""


def build_receipt(sale_id: int, copy: bool = False) -> Receipt:
    """The receipt document of a sale: everything every rendering shows."""
    sale = Sale.objects.select_related("shop", "till", "cashier").get(pk=sale_id)
    lines = list(sale.lines.all())
    payments = list(sale.payments.select_related("mpesa_transaction"))
    shop = sale.shop

    # VAT per band is the sum of the lines' VAT, so the table always adds up to the lines.
    sums = defaultdict(lambda: [Decimal("0"), Decimal("0")])
    for line in lines:
        sums[line.tax_band][0] += line.line_total
        sums[line.tax_band][1] += line.vat_amount
    tax_bands = tuple(
        TaxBandTotal(band=band, label=TaxBand(band).label if band in TaxBand.values else band,
                     gross=gross, vat=vat, net=gross - vat)
        for band, (gross, vat) in sorted(sums.items())
    ) if shop.vat_registered else ()

    receipt_payments = []
    for payment in payments:
        if payment.method == Payment.Method.CASH:
            receipt_payments.append(ReceiptPayment(
                method=payment.method, amount=payment.amount, tendered=payment.tendered,
                change=payment.change_given,
            ))
        else:
            ledger = getattr(payment, "mpesa_transaction", None)
            phone = (ledger.msisdn if ledger else "") or sale.customer_phone
            receipt_payments.append(ReceiptPayment(
                method=payment.method, amount=payment.amount,
                reference=payment.reference or (ledger.receipt_number or "" if ledger else ""),
                phone=_masked_phone(phone),
            ))

    issued = sale.completed_at or sale.created_at
    return Receipt(
        sale_id=sale.pk,
        shop_name=shop.name,
        shop_address=shop.address,
        shop_phone=shop.phone,
        kra_pin=shop.kra_pin,
        till_name=sale.till.name,
        cashier_name=sale.cashier.get_short_name() or sale.cashier.get_username(),
        receipt_number=sale.receipt_number,
        issued_at=issued.astimezone(NAIROBI),
        lines=tuple(
            ReceiptLine(name=line.name, quantity=line.quantity, unit_price=line.unit_price,
                        total=line.line_total, tax_band=line.tax_band)
            for line in lines
        ),
        tax_bands=tax_bands,
        total=sale.total,
        vat_total=sum((line.vat_amount for line in lines), Decimal("0")),
        payments=tuple(receipt_payments),
        footer=shop.receipt_footer,
        verify_url=settings.RECEIPTS_VERIFY_BASE_URL.rstrip("/") + reverse(
            "receipts:verify", args=[sale.receipt_number, receipt_token(sale.receipt_number)]
        ),
        is_copy=copy,
    )


def find_till_printer(till_id: int) -> Printer | None:
    return Printer.objects.filter(till_id=till_id, is_active=True).first()


def choose_paper(till_id: int, requested: str | None = None) -> tuple[int, str]:
    """Paper width and profile to lay a receipt out for: 58 or 80 when asked, else the till printer's."""
    if requested in ("58", "80"):
        return int(requested), "default"
    target = target_for(find_till_printer(till_id))
    return target.paper_width, target.profile


def print_sale_receipt(sale_id: int) -> PrintJob | None:
    """The sale-completed hook: queue the receipt for the till's printer and send it now.

    Idempotent: a sale gets one original receipt job; further prints are reprints (copies).
    Returns None when the till prints from the browser.
    """
    existing = PrintJob.objects.filter(sale_id=sale_id, is_copy=False).first()
    if existing:
        return existing
    background = settings.RECEIPTS_PRINT_IN_BACKGROUND
    try:
        # In the background the bytes are rendered by the sender, not in the cashier's request.
        job = _queue_print_job(sale_id, copy=False, render=not background)
    except IntegrityError:
        # Another process queued the original at the same moment; it sends it.
        return PrintJob.objects.filter(sale_id=sale_id, is_copy=False).first()
    if job is None:
        return None
    if background:
        # If this process dies mid-send, the worker finds the job abandoned and sends it again.
        threading.Thread(target=_send_in_background, args=[job.pk], name=f"print-job-{job.pk}", daemon=True).start()
        return job
    return send_print_job(job.pk)


def _send_in_background(job_id: int) -> None:
    try:
        send_print_job(job_id)
    except Exception:
        logger.exception("print job %s could not be sent; the worker retries it", job_id)
    finally:
        connection.close()  # this thread's own connection


def reprint_receipt(sale_id: int) -> PrintJob | None:
    """A copy of a completed sale's receipt, marked COPY - REPRINT, sent to the till's printer now."""
    job = _queue_print_job(sale_id, copy=True)
    return send_print_job(job.pk) if job else None


def _queue_print_job(sale_id: int, *, copy: bool, render: bool = True) -> PrintJob | None:
    sale = Sale.objects.only("status", "receipt_number", "till_id").get(pk=sale_id)
    if sale.status != Sale.Status.COMPLETED:
        raise PrintError(f"Sale {sale.receipt_number} is {sale.status}: only a completed sale has a receipt.")
    printer = find_till_printer(sale.till_id)
    target = target_for(printer)
    if target.kind == Printer.Kind.BROWSER:
        return None
    data = _render_for(target, sale_id, copy=copy) if render else b""
    # A savepoint: when a second original loses the race, only this insert is rolled back.
    with transaction.atomic():
        return PrintJob.objects.create(sale_id=sale_id, printer=printer, destination=target.address,
                                       data=data, is_copy=copy)


def _render_for(target, sale_id: int, *, copy: bool) -> bytes:
    return render_escpos(build_receipt(sale_id, copy=copy), paper_width=target.paper_width,
                         profile=target.profile, cash_drawer=target.cash_drawer)


def send_print_job(job_id: int) -> PrintJob:
    """Send one queued or failed job now (the Retry print button), unless someone else already is."""
    claimed = PrintJob.objects.filter(
        pk=job_id, status__in=[PrintJob.Status.QUEUED, PrintJob.Status.FAILED]
    ).update(status=PrintJob.Status.PRINTING, attempts=F("attempts") + 1, updated_at=timezone.now())
    job = PrintJob.objects.select_related("printer", "sale").get(pk=job_id)
    return _deliver(job) if claimed else job


def retry_sale_print(sale_id: int) -> PrintJob | None:
    """Retry print: resend the sale's latest job if it failed; print the original if there is none."""
    job = PrintJob.objects.filter(sale_id=sale_id).order_by("-id").first()
    return send_print_job(job.pk) if job else print_sale_receipt(sale_id)


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=settings.RECEIPTS_RETRY_BACKOFF * 2 ** max(attempts - 1, 0))


def _deliver(job: PrintJob) -> PrintJob:
    """Send a claimed job (status printing) and record the outcome. Never inside a transaction."""
    # A printer replaced since the job was queued: the till's current one takes over.
    printer = job.printer if job.printer and job.printer.is_active else find_till_printer(job.sale.till_id)
    target = target_for(printer)
    job_name = f"{job.sale.receipt_number}-{job.pk}{'-copy' if job.is_copy else ''}"
    now = timezone.now
    if not job.data:
        job.data = _render_for(target, job.sale_id, copy=job.is_copy)
        job.save(update_fields=["data"])
    try:
        job.destination = send_to_printer(target, bytes(job.data), job_name=job_name)
    except PrintError as error:
        job.status = PrintJob.Status.FAILED
        job.last_error = str(error)
        job.next_attempt_at = now() + _backoff(job.attempts)
        logger.warning("print job %s for %s failed (try %s): %s", job.pk, job.sale.receipt_number,
                       job.attempts, error)
    else:
        job.status = PrintJob.Status.DONE
        job.last_error = ""
        job.next_attempt_at = None
        job.printed_at = now()
    job.updated_at = now()
    job.save(update_fields=["status", "last_error", "next_attempt_at", "printed_at", "destination", "updated_at"])
    return job


def retry_failed_print_jobs(limit: int = 20) -> str:
    """Worker task: resend failed jobs whose backoff is over, and jobs whose sender died mid-way."""
    now = timezone.now()
    # A live sender finishes within its timeouts; a job left printing or queued longer was abandoned.
    abandoned = now - timedelta(
        seconds=settings.RECEIPTS_CONNECT_TIMEOUT + settings.RECEIPTS_WRITE_TIMEOUT + 60
    )
    due = Q(status=PrintJob.Status.FAILED, next_attempt_at__lte=now) | Q(
        status__in=[PrintJob.Status.QUEUED, PrintJob.Status.PRINTING], updated_at__lt=abandoned
    )
    with transaction.atomic():
        # SKIP LOCKED: several workers share the queue; each job is claimed by exactly one.
        ids = list(
            PrintJob.objects.select_for_update(skip_locked=True)
            .filter(due, attempts__lt=settings.RECEIPTS_PRINT_MAX_ATTEMPTS)
            .order_by("id")
            .values_list("pk", flat=True)[:limit]
        )
        PrintJob.objects.filter(pk__in=ids).update(
            status=PrintJob.Status.PRINTING, attempts=F("attempts") + 1, updated_at=now
        )
    jobs = [_deliver(job) for job in PrintJob.objects.select_related("printer", "sale").filter(pk__in=ids)]
    if not jobs:
        return ""
    printed = sum(job.status == PrintJob.Status.DONE for job in jobs)
    return f"print retries: {printed} printed, {len(jobs) - printed} still failing"


def describe_print_status(sale_id: int) -> dict:
    """What the till shows under the receipt: a status and a sentence for the cashier."""
    job = PrintJob.objects.select_related("printer").filter(sale_id=sale_id).order_by("-id").first()
    if job is None:
        till_id = Sale.objects.values_list("till_id", flat=True).get(pk=sale_id)
        if target_for(find_till_printer(till_id)).kind == Printer.Kind.BROWSER:
            return {"status": "browser", "message": "This till prints from the browser: press Print in browser."}
        return {"status": "none", "message": "The receipt has not been sent to a printer yet."}
    name = job.printer.name if job.printer else "the default printer"
    what = "The copy" if job.is_copy else "The receipt"
    if job.status == PrintJob.Status.DONE:
        message = f"{what} was printed on {name}."
    elif job.status == PrintJob.Status.FAILED:
        tries = settings.RECEIPTS_PRINT_MAX_ATTEMPTS
        if job.attempts < tries:
            message = f"{job.last_error} Trying again by itself ({job.attempts} of {tries} tries)."
        else:
            message = f"{job.last_error} Gave up after {job.attempts} tries: press Retry print, or Print in browser."
    else:
        message = f"Sending {what.lower()} to {name}…"
    return {"status": job.status, "message": message, "job_id": job.pk, "attempts": job.attempts,
            "is_copy": job.is_copy, "printer": name}


def resolve_printer(name_or_address: str, *, paper_width: int | None = None,
                    profile: str | None = None) -> PrinterTarget:
    """A configured printer by name, or an address (tcp://…, usb://…, serial://…, file://…, lp://…)."""
    if "://" in name_or_address or name_or_address == "browser":
        if profile and profile not in CAPABILITIES["profiles"]:
            raise PrintError(f"Unknown printer profile {profile!r}. Try default, TM-T88V, TM-T20II or POS-5890.")
        return parse_printer_address(name_or_address, paper_width=paper_width or 80, profile=profile or "default")
    printers = list(Printer.objects.filter(name=name_or_address).select_related("till__shop"))
    if not printers:
        raise PrintError(f"No printer is called {name_or_address!r}. Give its name as in the admin, "
                         "or an address such as tcp://192.168.1.50:9100.")
    if len(printers) > 1:
        tills = ", ".join(str(printer.till) for printer in printers)
        raise PrintError(f"Several printers are called {name_or_address!r} (at {tills}): give an address instead.")
    return target_for(printers[0])


def print_test_page(target: PrinterTarget) -> str:
    """Print a test page: the printer's settings, a column ruler and the character fallbacks."""
    columns = columns_for(target.paper_width, target.profile)
    ruler = "".join(str(i % 10) for i in range(1, columns + 1))
    rows = [
        Row("Comolor POS", align="center", bold=True, double=True),
        Row("Printer test page", align="center", bold=True),
        Row("-" * columns),
        Row(f"Printer: {target.name or target.address}"[:columns]),
        Row(f"Address: {target.address}"[:columns]),
        Row(f"Paper {target.paper_width} mm, {columns} columns"),
        Row(f"Profile: {target.profile}"[:columns]),
        Row(ruler),
        Row("Café – “quotes” – KSh 1,234.00 ✓"),
        Row(timezone.now().astimezone(NAIROBI).strftime("%d/%m/%Y %H:%M:%S"), align="right"),
    ]
    data = render_escpos_ops(rows, profile=target.profile)
    if target.kind == Printer.Kind.BROWSER:
        raise PrintError(f"{target.label} prints from the browser: open a receipt and press Print in browser.")
    return send_to_printer(target, data, job_name=f"test-{timezone.now():%Y%m%d-%H%M%S}")


def print_shift_report(shift_id: int, *, user=None) -> str | None:
    """Print a shift's X report (open) or Z report (closed) on its till's printer now.

    Returns where it went, or None when the till prints from the browser; raises PrintError in words.
    No job is queued for a retry: the report is always there on screen and in the admin, so a failed
    print is simply printed again, here or from the browser. `user` as for shift_report: a cashier's
    X report leaves out the drawer's expected cash.
    """
    report = shift_report(shift_id=shift_id, user=user)
    target = target_for(find_till_printer(report["till_id"]))
    if target.kind == Printer.Kind.BROWSER:
        return None
    ops = layout_shift_report(report, columns_for(target.paper_width, target.profile))
    job_name = f"shift-{shift_id}-{report['kind']}-{report['generated_at']:%Y%m%d-%H%M%S}"
    return send_to_printer(target, render_escpos_ops(ops, profile=target.profile), job_name=job_name)
