"""M-Pesa workflows: start an STK payment, store and process Safaricom's callbacks, apply ledger
rows to sales, and sweep what got stuck (DESIGN.md §3).

Lock order everywhere: callback log → STK request → sale → stock rows (by product id).
Daraja is never called inside a transaction or while a lock is held.
"""

import ipaddress
import json
import logging
import math
import secrets
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Q
from django.urls import Resolver404, resolve
from django.utils import timezone

from comolor.logging import mask_phone
from inventory.services import InsufficientStock
from pos.models import Payment, Sale
from pos.services import SaleError, record_payment

from .conf import callback_url, mpesa_config
from .daraja import DarajaBusy, DarajaError, DarajaNotReached, DarajaUnavailable, StkQueryResult, get_client
from .models import CallbackLog, MpesaAccount, MpesaTransaction, StkRequest
from .phone import InvalidPhone, normalise_phone

logger = logging.getLogger(__name__)
NAIROBI = ZoneInfo("Africa/Nairobi")
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}
# Daraja refuses the same amount to the same phone within 2 minutes (ResultCode 17).
SAME_AMOUNT_WINDOW = timedelta(minutes=2)
# A request that may still turn into money: the prompt is open, or Daraja never told us.
AWAITING = (StkRequest.Status.CREATED, StkRequest.Status.PENDING, StkRequest.Status.UNKNOWN)
RETRYABLE_LOGS = (CallbackLog.Status.RECEIVED, CallbackLog.Status.ORPHAN, CallbackLog.Status.FAILED)
MAX_CALLBACK_ATTEMPTS = 10
SWEEP_BATCH = 50

# What a cashier is told for each STK ResultCode, with the next step.
AGAIN = ("Send the prompt again (the same amount to the same phone only 2 minutes after the last one: "
         "M-Pesa's rule), split it with cash, or take cash.")
RESULT_MESSAGES = {
    "1": "The customer's M-Pesa balance is too low for this payment. Ask them to top up, or take cash.",
    "2": "The amount is below M-Pesa's minimum (KES 1). Take cash.",
    "3": "The amount is above M-Pesa's limit for one payment. Split it: part cash, part M-Pesa.",
    "4": "The customer has reached their daily M-Pesa limit. Take cash or another method.",
    "8": "The shop's M-Pesa account is at its balance limit. Take cash and tell a manager.",
    "17": "M-Pesa refuses the same amount to the same phone within 2 minutes. "
          "Wait 2 minutes or take another method.",
    "1001": "The customer's phone is busy with another M-Pesa transaction. Wait a minute and send again, "
            "or take cash.",
    "1019": "The M-Pesa prompt expired before the customer answered. " + AGAIN,
    "1025": "M-Pesa could not send the prompt. " + AGAIN,
    "1032": "The customer cancelled the M-Pesa prompt. " + AGAIN,
    "1036": "The prompt did not reach the phone (old SIM card: the customer can dial *234# to update it). "
            "Take cash.",
    "1037": "The customer's phone could not be reached (off, no signal or busy). Check the number. " + AGAIN,
    "2001": "The customer entered a wrong M-Pesa PIN. " + AGAIN,
    "2028": "M-Pesa refused the payment type for this shop (till or paybill set-up). Take cash and tell a manager.",
    "8006": "The customer's M-Pesa PIN is locked (they should call 100). Take cash.",
    "9999": "M-Pesa could not send the prompt. " + AGAIN,
}
NOT_SENT_MESSAGE = "Could not reach M-Pesa: the prompt was not sent. Try again or take cash."
REFUSED_MESSAGE_BUSY = (
    "The customer's phone is busy with another M-Pesa transaction (unable to lock subscriber). "
    "Wait a minute and send again, or take cash."
)


def result_message(result_code: str, result_desc: str = "") -> str:
    if result_code in RESULT_MESSAGES:
        return RESULT_MESSAGES[result_code]
    detail = f" ({result_desc})" if result_desc else ""
    return f"M-Pesa did not take the payment: code {result_code}{detail}. Send the prompt again, or take cash."


# --- Starting a payment -----------------------------------------------------------------------

def start_stk_payment(*, sale: Sale, phone: str, user=None, amount: int | None = None) -> dict:
    """Send an M-Pesa prompt for a pending sale's balance (or `amount` of it, for a split).

    The request row is committed before Daraja is called, so an early callback finds it; the call
    itself runs outside any transaction. Raises SaleError (in words) when no prompt went out.
    """
    try:
        msisdn = normalise_phone(phone)
    except InvalidPhone as error:
        raise SaleError(str(error)) from error
    stk = _create_stk_request(sale_id=sale.pk, phone=msisdn, amount=amount, user=user)
    return _send_stk_push(stk)


def check_stk_payment(*, shop, phone: str, amount: Decimal) -> None:
    """POS_PAYMENT_CHECKS: refuse, before the sale exists, a prompt that could not go out.

    The same rules are checked again, under the sale's lock, when the prompt is started.
    """
    try:
        msisdn = normalise_phone(phone)
    except InvalidPhone as error:
        raise SaleError(str(error)) from error
    _refuse_busy_phone(msisdn, math.ceil(amount))


def _refuse_busy_phone(phone: str, amount: int) -> None:
    """One prompt open per phone, and M-Pesa's rule: not the same amount again within 2 minutes."""
    if StkRequest.objects.filter(phone=phone, status__in=AWAITING).exists():
        raise SaleError(
            f"{mask_phone(phone)} already has an M-Pesa prompt open for another sale. "
            "Wait for it to finish, or take cash."
        )
    since = timezone.now() - SAME_AMOUNT_WINDOW
    recent = (
        StkRequest.objects.filter(phone=phone, amount=amount, created_at__gte=since)
        .exclude(status=StkRequest.Status.REFUSED).order_by("-created_at").first()
    )
    if recent is not None:
        wait = max(1, math.ceil((recent.created_at + SAME_AMOUNT_WINDOW - timezone.now()).total_seconds()))
        raise SaleError(
            f"M-Pesa refuses the same amount (KES {amount}) to the same phone within 2 minutes. "
            f"Wait {wait} s or take another method (cash, or part cash and part M-Pesa)."
        )


def _create_stk_request(*, sale_id: int, phone: str, amount, user) -> StkRequest:
    with transaction.atomic():
        # Sale row first: a double click's second request waits here, then sees the first one.
        sale = Sale.objects.select_for_update().get(pk=sale_id)
        if sale.status != Sale.Status.PENDING:
            raise SaleError(f"Sale {sale.receipt_number} is {sale.status}; there is nothing to pay.")
        due = sale.balance_due
        if due <= 0:
            raise SaleError(f"Sale {sale.receipt_number} is already paid.")
        # M-Pesa moves whole shillings: the customer pays the balance rounded up.
        most = math.ceil(due)
        amount = _whole_amount(amount, most)
        open_request = sale.stk_requests.filter(status__in=AWAITING).first()
        if open_request is not None:
            raise SaleError(_already_open_message(open_request))
        _refuse_busy_phone(phone, amount)
        try:
            with transaction.atomic():
                return StkRequest.objects.create(
                    sale=sale, shop_id=sale.shop_id, phone=phone, amount=amount,
                    account_reference=sale.receipt_number[:12], callback_token=secrets.token_urlsafe(32),
                    requested_by=user,
                )
        except IntegrityError:
            # one_open_stk_per_sale: another request slipped in (e.g. from a second till tab).
            raise SaleError("An M-Pesa prompt for this sale is already open. Wait for the customer's answer.")


def _whole_amount(amount, most: int) -> int:
    if amount in (None, ""):
        return most
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise SaleError("The M-Pesa amount must be a number of shillings, e.g. 500.") from None
    if value != value.to_integral_value() or value < 1:
        raise SaleError("M-Pesa takes whole shillings only, at least KES 1: e.g. 500, not 499.50.")
    if value > most:
        raise SaleError(f"The M-Pesa amount (KES {value:,.0f}) is more than the KES {most:,} still to pay.")
    return int(value)


def _already_open_message(stk: StkRequest) -> str:
    age = (timezone.now() - stk.created_at).total_seconds()
    if age < settings.MPESA_STK_TIMEOUT:
        return (
            f"An M-Pesa prompt for KES {stk.amount} is already open on {mask_phone(stk.phone)}. "
            "Wait for the customer's answer."
        )
    return (
        f"The M-Pesa prompt for KES {stk.amount} sent {int(age)} s ago has no final answer yet; the system "
        "is checking with M-Pesa. Ask the customer whether money left their account: if it did, wait; "
        "otherwise take cash or cancel the sale."
    )


def _send_stk_push(stk: StkRequest) -> dict:
    account = MpesaAccount.objects.filter(shop_id=stk.shop_id, is_active=True).first()
    config = mpesa_config()
    try:
        result = get_client().stk_push(
            phone=stk.phone, amount=stk.amount, account_reference=stk.account_reference,
            description="Payment", callback_url=callback_url("stk-callback", token=stk.callback_token),
            shortcode=account.shortcode if account else None,
            party_b=account.party_b if account else config.party_b,
            transaction_type=account.transaction_type if account else config.transaction_type,
        )
    except DarajaNotReached as error:
        # Nothing went out: the request ends here, freeing the phone and the sale for another try.
        StkRequest.objects.filter(pk=stk.pk, status=StkRequest.Status.CREATED).update(
            status=StkRequest.Status.REFUSED, result_desc=NOT_SENT_MESSAGE, resolved_at=timezone.now(),
        )
        logger.warning("STK push %s not sent: %s", stk.pk, error.message)
        raise SaleError(NOT_SENT_MESSAGE) from error
    except DarajaUnavailable as error:
        # The push may have gone out: never push again; the sweep resolves it by STK Query.
        StkRequest.objects.filter(pk=stk.pk, status=StkRequest.Status.CREATED).update(
            status=StkRequest.Status.UNKNOWN, result_desc=error.message[:255]
        )
        logger.warning("STK push %s: no answer from Daraja (%s)", stk.pk, error.message)
        return _started(stk, None, "M-Pesa did not answer in time; the prompt may still reach the phone. "
                                   "Wait for the result here and do not send again.")
    except DarajaError as error:
        message = REFUSED_MESSAGE_BUSY if isinstance(error, DarajaBusy) else error.message
        StkRequest.objects.filter(pk=stk.pk, status=StkRequest.Status.CREATED).update(
            status=StkRequest.Status.REFUSED, result_code=error.error_code[:20], result_desc=message[:255],
            resolved_at=timezone.now(),
        )
        raise SaleError(message) from error
    # An early callback may have filled these in already: only fill what is still empty.
    StkRequest.objects.filter(pk=stk.pk, checkout_request_id__isnull=True).update(
        checkout_request_id=result.checkout_request_id, merchant_request_id=result.merchant_request_id
    )
    StkRequest.objects.filter(pk=stk.pk, status=StkRequest.Status.CREATED).update(status=StkRequest.Status.PENDING)
    for log_id in CallbackLog.objects.filter(
        status=CallbackLog.Status.ORPHAN, checkout_request_id=result.checkout_request_id
    ).values_list("pk", flat=True):
        process_callback(log_id)
    return _started(stk, result.checkout_request_id,
                    f"Prompt sent to {mask_phone(stk.phone)} for KES {stk.amount}. "
                    "Ask the customer to enter their M-Pesa PIN.")


def _started(stk: StkRequest, checkout_request_id: str | None, message: str) -> dict:
    return {
        "mpesa_checkout_id": checkout_request_id, "stk_request_id": stk.pk, "mpesa_amount": stk.amount,
        "phone": mask_phone(stk.phone), "message": message, "timeout_after": settings.MPESA_STK_TIMEOUT,
    }


# --- Payment status for the till --------------------------------------------------------------

def get_payment_status(*, sale_id: int, user_id: int) -> dict | None:
    """The till's poll (every second): one query while a prompt exists, two before. None: no such
    sale in the user's shop."""
    stk = (StkRequest.objects.select_related("sale", "transaction")
           .filter(sale_id=sale_id, sale__shop__staff__user=user_id).order_by("-pk").first())
    sale = stk.sale if stk else Sale.objects.filter(pk=sale_id, shop__staff__user=user_id).first()
    return describe_payment_status(sale, stk) if sale else None


def describe_payment_status(sale: Sale, stk: StkRequest | None) -> dict:
    """What the till shows while it waits: status, whether money came, and a sentence to act on.

    `result_code` is always a string: the latest prompt's ResultCode as Daraja sends it ("0" paid,
    "1032" cancelled…), Daraja's error code when it refused the push ("500.001.1001"), or "" when
    there is none (no prompt, not sent, no answer yet). A completed sale is "paid" however it was
    paid, cash included, with payment_received true.
    """
    tx = getattr(stk, "transaction", None) if stk else None
    receipt = (tx.receipt_number if tx else None) or (stk.mpesa_receipt if stk else "") or ""
    info = {
        "status": "", "payment_received": bool(tx), "mpesa_receipt": receipt,
        "amount_paid": f"{sale.amount_paid:.2f}", "balance_due": f"{sale.balance_due:.2f}",
        "timeout": False, "result_code": stk.result_code if stk else "", "message": "",
        "mpesa_amount": stk.amount if stk else None, "timeout_after": settings.MPESA_STK_TIMEOUT,
    }
    code = f" M-Pesa code {receipt}." if receipt else ""
    if sale.status == Sale.Status.COMPLETED:
        if receipt or tx:
            message = f"Paid in full.{code}"
        else:
            # No M-Pesa money on the latest prompt: say how it was paid (one query, once, at the end).
            methods = set(sale.payments.values_list("method", flat=True))
            message = "Paid in cash." if methods == {Payment.Method.CASH} else "Paid in full."
        return {**info, "status": "paid", "payment_received": True, "message": message}
    if tx is not None and tx.match_status == MpesaTransaction.Match.REVIEW:
        return {**info, "status": "review", "message": (
            f"M-Pesa payment of KES {tx.amount:,.2f} received{' (' + receipt + ')' if receipt else ''} but it "
            f"needs a manager: {tx.review_reason}"
        )}
    if sale.status == Sale.Status.CANCELLED:
        return {**info, "status": "cancelled", "message": f"Sale {sale.receipt_number} was cancelled."}
    if stk is None:
        return {**info, "status": "none", "message": "No M-Pesa prompt has been sent for this sale."}
    if stk.status == StkRequest.Status.PAID:
        return {**info, "status": "partly_paid", "message": (
            f"KES {stk.amount} received by M-Pesa.{code} KES {sale.balance_due:,.2f} still to pay: "
            "take cash or send another prompt."
        )}
    if stk.status in AWAITING:
        waited = (timezone.now() - stk.created_at).total_seconds()
        if waited >= settings.MPESA_STK_TIMEOUT:
            return {**info, "status": "timeout", "timeout": True, "message": (
                f"No answer from M-Pesa after {int(waited)} s. Ask the customer whether money left their "
                "account: if it did, wait here; otherwise take cash or cancel the sale."
            )}
        return {**info, "status": "waiting", "message": (
            f"Waiting for the customer to enter their M-Pesa PIN on {mask_phone(stk.phone)} (KES {stk.amount})."
        )}
    if stk.status == StkRequest.Status.FAILED:
        return {**info, "status": "failed", "message": result_message(stk.result_code, stk.result_desc)}
    return {**info, "status": "failed", "message": stk.result_desc or "The M-Pesa prompt did not go out."}


# --- Callbacks: store raw first ---------------------------------------------------------------

def callback_source_ip(remote_addr: str, forwarded_for: str) -> str | None:
    """The address that called us, as our own proxies saw it.

    Each trusted proxy appends the address it saw to X-Forwarded-For, so the caller is that many
    entries from the right; anything further left was written by the caller and proves nothing.
    """
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    chain = hops + [remote_addr or ""]
    trusted = settings.MPESA_TRUSTED_PROXY_COUNT
    if trusted >= len(chain):
        return None
    try:
        return str(ipaddress.ip_address(chain[-1 - trusted]))
    except ValueError:
        return None


def is_allowed_callback_source(ip: str | None) -> bool:
    if ip is None:
        return False
    address = ipaddress.ip_address(ip)
    if address.is_loopback and settings.MPESA_ENVIRONMENT == "simulator":
        return True
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.MPESA_CALLBACK_ALLOWED_IPS)


def record_callback(*, kind: str, body: bytes, headers: dict, remote_addr: str, forwarded_for: str,
                    path: str, truncated: bool = False) -> CallbackLog:
    """Store an inbound request exactly as received, in its own transaction, before anyone reads it."""
    source_ip = callback_source_ip(remote_addr, forwarded_for)
    status, error = CallbackLog.Status.RECEIVED, ""
    if not is_allowed_callback_source(source_ip):
        status = CallbackLog.Status.REJECTED
        error = f"Source address {source_ip or remote_addr!r} is not in MPESA_CALLBACK_ALLOWED_IPS; not processed."
    elif truncated:
        status = CallbackLog.Status.INVALID
        error = f"Body larger than {settings.MPESA_CALLBACK_MAX_BYTES} bytes; stored truncated, not processed."
    if status != CallbackLog.Status.RECEIVED:
        logger.warning("%s callback from %s rejected: %s", kind, source_ip or remote_addr, error)
    # One INSERT in autocommit: committed on its own, whatever happens next.
    return CallbackLog.objects.create(
        kind=kind, body=body, headers=headers, source_ip=source_ip, path=path[:255], status=status, error=error,
    )


# --- Callbacks: process ------------------------------------------------------------------------

@dataclass(frozen=True)
class StkCallback:
    merchant_request_id: str
    checkout_request_id: str
    result_code: str
    result_desc: str
    amount: Decimal | None = None
    receipt_number: str = ""
    phone: str = ""
    transaction_time: datetime | None = None

    @property
    def paid(self) -> bool:
        return self.result_code == "0"


def parse_stk_callback(body: bytes) -> StkCallback:
    """Daraja's STK result (daraja.md §4.3). ValueError, in words, for anything else."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("Body is not JSON.") from None
    envelope = document.get("Body") if isinstance(document, dict) else None
    callback = envelope.get("stkCallback") if isinstance(envelope, dict) else None
    if not isinstance(callback, dict):
        raise ValueError("No Body.stkCallback object.")
    checkout_id = callback.get("CheckoutRequestID")
    code = callback.get("ResultCode")
    if not isinstance(checkout_id, str) or not checkout_id.strip() or len(checkout_id) > 64:
        raise ValueError("Missing or malformed CheckoutRequestID.")
    if isinstance(code, bool) or not isinstance(code, (int, str)) or str(code).strip() == "":
        raise ValueError("Missing or malformed ResultCode.")
    fields = {
        "merchant_request_id": str(callback.get("MerchantRequestID", ""))[:64],
        "checkout_request_id": checkout_id.strip(),
        "result_code": str(code).strip()[:20],
        "result_desc": str(callback.get("ResultDesc", ""))[:255],
    }
    if fields["result_code"] != "0":
        return StkCallback(**fields)
    items = callback.get("CallbackMetadata", {})
    items = items.get("Item") if isinstance(items, dict) else None
    if not isinstance(items, list):
        raise ValueError("Success without CallbackMetadata.Item.")
    # By Name, never by position; Balance often has no Value at all.
    values = {item.get("Name"): item.get("Value") for item in items if isinstance(item, dict)}
    amount, receipt = values.get("Amount"), values.get("MpesaReceiptNumber")
    if isinstance(amount, bool) or not isinstance(amount, (int, float, str)):
        raise ValueError("Success without an Amount.")
    try:
        amount = Decimal(str(amount))
    except InvalidOperation:
        raise ValueError(f"Amount {amount!r} is not a number.") from None
    if not amount.is_finite():
        raise ValueError(f"Amount {amount!r} is not a number.")
    if not isinstance(receipt, str) or not receipt.strip() or len(receipt) > 20:
        raise ValueError("Success without a valid MpesaReceiptNumber.")
    return StkCallback(
        **fields, amount=amount, receipt_number=receipt.strip(), phone=str(values.get("PhoneNumber") or "")[:80],
        transaction_time=_daraja_time(values.get("TransactionDate")),
    )


def _daraja_time(value) -> datetime | None:
    try:
        return datetime.strptime(str(value), "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
    except ValueError:
        return None


def process_callback(log_id: int) -> str:
    """Apply one stored callback, in its own transaction. Never raises: a failure is written on
    the log row (status failed, traceback) for the sweep to re-run once the cause is fixed."""
    try:
        confirmation = _confirm_by_query(log_id) if settings.MPESA_STK_CONFIRM_BY_QUERY else None
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # The raw row is already durable and this step is re-run from it if a crash loses
                # it, so it need not wait for its own WAL flush: the answer to Safaricom comes sooner.
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            # SKIP LOCKED: a log another process is applying right now is its business.
            log = (CallbackLog.objects.select_for_update(skip_locked=True)
                   .filter(pk=log_id, status__in=RETRYABLE_LOGS).first())
            if log is None:
                return "skipped"
            handler = _HANDLERS.get(log.kind)
            outcome = handler(log, confirmation) if handler else "ignored"
            log.attempts += 1
            if log.status != CallbackLog.Status.RECEIVED:
                log.processed_at = timezone.now()
            log.save(update_fields=["status", "error", "attempts", "processed_at", "checkout_request_id",
                                    "trans_id"])
            return outcome
    except Exception:
        logger.exception("processing callback %s failed; the sweep will retry it", log_id)
        try:
            CallbackLog.objects.filter(pk=log_id).update(
                status=CallbackLog.Status.FAILED, error=traceback.format_exc()[-4000:], attempts=F("attempts") + 1,
            )
        except DatabaseError:
            logger.exception("could not mark callback %s failed; it stays received for the sweep", log_id)
        return "failed"


def _confirm_by_query(log_id: int) -> StkQueryResult | None:
    """MPESA_STK_CONFIRM_BY_QUERY: ask Daraja about a success callback before it counts."""
    log = CallbackLog.objects.filter(pk=log_id, kind=CallbackLog.Kind.STK).only("body").first()
    try:
        callback = parse_stk_callback(bytes(log.body)) if log else None
    except ValueError:
        return None
    if callback is None or not callback.paid:
        return None
    try:
        return get_client().stk_query(checkout_request_id=callback.checkout_request_id)
    except DarajaError as error:
        logger.warning("STK query to confirm %s failed: %s", callback.checkout_request_id, error.message)
        return None


def _process_stk_callback(log: CallbackLog, confirmation: StkQueryResult | None) -> str:
    try:
        callback = parse_stk_callback(bytes(log.body))
    except ValueError as error:
        log.status, log.error = CallbackLog.Status.INVALID, str(error)
        return "invalid"
    log.checkout_request_id = callback.checkout_request_id
    log.trans_id = callback.receipt_number
    token = _request_token(log.path)
    requests = StkRequest.objects.select_for_update()
    # Locked: the same result may be delivered many times at once; the rest wait and see it applied.
    stk = (requests.filter(callback_token=token) if token
           else requests.filter(checkout_request_id=callback.checkout_request_id)).first()
    if stk is None:
        if token:
            log.status, log.error = CallbackLog.Status.REJECTED, "Unknown callback token in the URL; not processed."
            return "rejected"
        return _keep_orphan(log, callback)
    if stk.checkout_request_id and stk.checkout_request_id != callback.checkout_request_id:
        log.status = CallbackLog.Status.REJECTED
        log.error = f"CheckoutRequestID does not match request {stk.pk}'s; not processed."
        return "rejected"
    fields = []
    if not stk.checkout_request_id:
        # The callback beat the push response: the token tells us which request it is.
        stk.checkout_request_id, stk.merchant_request_id = callback.checkout_request_id, callback.merchant_request_id
        fields += ["checkout_request_id", "merchant_request_id"]
    log.status, log.error = CallbackLog.Status.PROCESSED, ""
    if not callback.paid:
        if stk.status not in AWAITING:
            return "duplicate"
        _settle(stk, StkRequest.Status.FAILED, callback.result_code, callback.result_desc, fields)
        return "failed"
    if settings.MPESA_STK_CONFIRM_BY_QUERY and (confirmation is None or confirmation.pending):
        log.status, log.error = CallbackLog.Status.RECEIVED, "Waiting for STK Query to confirm the payment."
        return "unconfirmed"
    if stk.status == StkRequest.Status.PAID:
        if callback.amount == stk.amount:
            _fill_in_receipt(stk, callback)
        return "duplicate"
    reasons = []
    if stk.status not in AWAITING:
        reasons.append(f"the request had already ended as {stk.get_status_display()!r}")
    if callback.amount != stk.amount:
        reasons.append(f"KES {callback.amount:,.2f} received but KES {stk.amount:,} was requested")
    denied = confirmation is not None and confirmation.result_code != 0
    if denied:
        reasons.append(f"STK Query says it is not paid ({confirmation.result_desc or confirmation.raw})")
    # A success Daraja denies is kept, but not tied to the prompt: the prompt's real outcome may follow.
    ledger = _enter_stk_payment(stk, callback, log, reasons, link=not denied)
    if ledger is None:
        log.error = f"Receipt {callback.receipt_number} is already in the ledger for another payment; not counted."
        return "duplicate"
    if denied:
        # Kept for review, but the prompt keeps the answer Daraja itself gives.
        if fields:
            stk.save(update_fields=fields)
        return "review"
    _settle(stk, StkRequest.Status.PAID, "0", callback.result_desc, fields, receipt=callback.receipt_number)
    return "review" if ledger.match_status == MpesaTransaction.Match.REVIEW else "paid"


def _request_token(path: str) -> str | None:
    try:
        return resolve(path).kwargs.get("token")
    except Resolver404:
        return None


def _keep_orphan(log: CallbackLog, callback: StkCallback) -> str:
    """No request with this CheckoutRequestID (yet): keep it and retry. Past the give-up time a
    payment still goes into the ledger, unmatched, so the money is never lost."""
    if timezone.now() - log.received_at < timedelta(seconds=settings.MPESA_STK_GIVE_UP_AFTER):
        log.status, log.error = CallbackLog.Status.ORPHAN, "No STK request with this CheckoutRequestID yet."
        return "orphan"
    log.status = CallbackLog.Status.PROCESSED
    if not callback.paid:
        log.error = "No STK request with this CheckoutRequestID ever appeared; a failure, so nothing to do."
        return "orphan"
    MpesaTransaction.objects.get_or_create(
        receipt_number=callback.receipt_number,
        defaults=dict(
            amount=callback.amount, msisdn=callback.phone, transaction_time=callback.transaction_time,
            callback=log, source=MpesaTransaction.Source.STK_CALLBACK,
            match_status=MpesaTransaction.Match.UNMATCHED,
            review_reason=f"STK payment for an unknown CheckoutRequestID {callback.checkout_request_id}.",
        ),
    )
    log.error = "No STK request with this CheckoutRequestID: entered in the ledger as unmatched."
    return "unmatched"


def _enter_stk_payment(stk: StkRequest, callback: StkCallback, log: CallbackLog, reasons: list[str], *,
                       link: bool = True) -> MpesaTransaction | None:
    """The ledger row for this payment; saving it matched applies it to the sale (mpesa.signals).

    None when the receipt already belongs to another request: one receipt is counted once.
    """
    match = MpesaTransaction.Match.REVIEW if reasons else MpesaTransaction.Match.MATCHED
    existing = MpesaTransaction.objects.select_for_update().filter(receipt_number=callback.receipt_number).first()
    if existing is None:
        return MpesaTransaction.objects.create(
            receipt_number=callback.receipt_number, amount=callback.amount, msisdn=callback.phone,
            transaction_time=callback.transaction_time, shop_id=stk.shop_id, sale_id=stk.sale_id,
            stk_request=stk if link else None, callback=log, source=MpesaTransaction.Source.STK_CALLBACK,
            match_status=match, review_reason="; ".join(reasons)[:255],
        )
    if not link or existing.stk_request_id is not None or existing.match_status != MpesaTransaction.Match.UNMATCHED:
        return None
    # The same money arrived first as a C2B confirmation: link that row, never count it twice.
    existing.stk_request, existing.sale_id, existing.shop_id = stk, stk.sale_id, stk.shop_id
    existing.match_status, existing.review_reason = match, "; ".join(reasons)[:255]
    existing.save(update_fields=["stk_request", "sale", "shop", "match_status", "review_reason"])
    return existing


def _fill_in_receipt(stk: StkRequest, callback: StkCallback) -> None:
    """A success first learnt from STK Query gets its receipt number when the callback turns up late."""
    tx = MpesaTransaction.objects.select_for_update().filter(stk_request=stk, receipt_number__isnull=True).first()
    if tx is None or MpesaTransaction.objects.filter(receipt_number=callback.receipt_number).exists():
        return
    tx.receipt_number = callback.receipt_number
    tx.save(update_fields=["receipt_number"])
    stk.mpesa_receipt = callback.receipt_number
    stk.save(update_fields=["mpesa_receipt"])
    if tx.payment_id:
        Payment.objects.filter(pk=tx.payment_id, reference="").update(reference=callback.receipt_number)


def _settle(stk: StkRequest, status: str, code: str, desc: str, fields: list[str], *, receipt: str = "") -> None:
    stk.status, stk.result_code, stk.result_desc = status, code, desc[:255]
    stk.mpesa_receipt, stk.resolved_at = receipt or stk.mpesa_receipt, timezone.now()
    stk.save(update_fields=fields + ["status", "result_code", "result_desc", "mpesa_receipt", "resolved_at"])


def _process_c2b_confirmation(log: CallbackLog, confirmation) -> str:
    """Enter a C2B payment in the ledger as unmatched; matching it to a sale is a later step."""
    try:
        document = json.loads(bytes(log.body))
        receipt = str(document["TransID"]).strip()
        amount = Decimal(str(document["TransAmount"]))
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, InvalidOperation):
        log.status, log.error = CallbackLog.Status.INVALID, "Not a C2B confirmation (TransID and TransAmount)."
        return "invalid"
    if not receipt or len(receipt) > 20 or not amount.is_finite() or amount <= 0:
        log.status, log.error = CallbackLog.Status.INVALID, "Malformed TransID or TransAmount."
        return "invalid"
    log.trans_id = receipt
    shortcode = str(document.get("BusinessShortCode", ""))[:10]
    account = MpesaAccount.objects.filter(Q(shortcode=shortcode) | Q(till_number=shortcode)).first()
    _, created = MpesaTransaction.objects.get_or_create(
        receipt_number=receipt,
        defaults=dict(
            transaction_type=str(document.get("TransactionType", ""))[:40], amount=amount,
            msisdn=str(document.get("MSISDN", ""))[:80], first_name=str(document.get("FirstName", ""))[:60],
            middle_name=str(document.get("MiddleName", ""))[:60], last_name=str(document.get("LastName", ""))[:60],
            bill_ref_number=str(document.get("BillRefNumber", ""))[:40], business_shortcode=shortcode,
            transaction_time=_daraja_time(document.get("TransTime")), shop_id=account.shop_id if account else None,
            callback=log, source=MpesaTransaction.Source.C2B, match_status=MpesaTransaction.Match.UNMATCHED,
        ),
    )
    log.status, log.error = CallbackLog.Status.PROCESSED, "" if created else "Receipt already in the ledger."
    return "unmatched" if created else "duplicate"


def _acknowledge_only(log: CallbackLog, confirmation) -> str:
    log.status = CallbackLog.Status.PROCESSED
    return "acknowledged"


_HANDLERS = {
    CallbackLog.Kind.STK: _process_stk_callback,
    CallbackLog.Kind.C2B_CONFIRMATION: _process_c2b_confirmation,
    CallbackLog.Kind.C2B_VALIDATION: _acknowledge_only,
    CallbackLog.Kind.C2B_TIMEOUT: _acknowledge_only,
}


# --- The ledger applied to the sale -------------------------------------------------------------

def apply_mpesa_transaction(*, transaction_id: int, sale_id: int) -> Payment | None:
    """Record a matched M-Pesa transaction as the sale's payment, completing the sale when paid.

    Idempotent: an applied or unmatched transaction is left alone. Money that cannot count
    (cancelled or already paid sale, more than is due, stock gone) goes to review, never away.
    """
    # Joins the caller's transaction (the callback's, via the signal) without a savepoint.
    with transaction.atomic(savepoint=False):
        # Sale row first, as every payment of this sale takes it; then this ledger row.
        sale = Sale.objects.select_for_update().get(pk=sale_id)
        tx = MpesaTransaction.objects.select_for_update().get(pk=transaction_id)
        if tx.payment_id or tx.match_status != MpesaTransaction.Match.MATCHED or tx.sale_id != sale.pk:
            return None
        due = sale.balance_due
        if sale.status != Sale.Status.PENDING or due <= 0:
            return _to_review(tx, f"sale {sale.receipt_number} is {sale.status} and owed nothing: an "
                                  "overpayment to refund or credit")
        if tx.amount > math.ceil(due):
            return _to_review(tx, f"KES {tx.amount:,.2f} received but only KES {due:,.2f} is due: an overpayment")
        # M-Pesa moved whole shillings (the balance rounded up): the payment settles the balance
        # exactly and the cents above it are recorded as change due, as with cash.
        applied = min(tx.amount, due)
        try:
            # record_payment's own savepoint rolls back a payment whose sale cannot complete; the
            # sale row locked above is handed over rather than locked again.
            payment = record_payment(
                sale=sale, method=Payment.Method.MPESA, amount=applied, tendered=tx.amount,
                change_given=tx.amount - applied, reference=tx.receipt_number or "",
            )
        except InsufficientStock as error:
            # The money is real and stays in the ledger; a manager restocks and completes, or refunds.
            return _to_review(tx, f"paid, but the shop ran out of stock: {error}")
        tx.payment, tx.processed = payment, True
        tx.save(update_fields=["payment", "processed"])
        return payment


def _to_review(tx: MpesaTransaction, reason: str) -> None:
    logger.warning("M-Pesa transaction %s needs review: %s", tx.pk, reason)
    tx.match_status, tx.review_reason, tx.processed = MpesaTransaction.Match.REVIEW, reason[:255], True
    tx.save(update_fields=["match_status", "review_reason", "processed"])


# --- The sweep -----------------------------------------------------------------------------------

def sweep_mpesa() -> str:
    """One round of recovery (POS_WORKER_TASKS, `manage.py mpesa_sweep`); safe in many processes."""
    rerun = rerun_callbacks()
    swept = sweep_stk_requests()
    parts = [f"{count} {what}" for what, count in {**rerun, **swept}.items() if count]
    return ", ".join(parts)


def rerun_callbacks() -> dict[str, int]:
    """Process stored callbacks that never were (crash, bug since fixed, orphan, awaiting query)."""
    settled = timezone.now() - timedelta(seconds=5)
    log_ids = list(
        CallbackLog.objects.filter(
            Q(status=CallbackLog.Status.RECEIVED, received_at__lte=settled)
            | Q(status=CallbackLog.Status.ORPHAN)
            | Q(status=CallbackLog.Status.FAILED, attempts__lt=MAX_CALLBACK_ATTEMPTS)
        ).order_by("received_at").values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    outcomes: dict[str, int] = {}
    for log_id in log_ids:
        outcome = process_callback(log_id)
        outcomes[f"callbacks {outcome}"] = outcomes.get(f"callbacks {outcome}", 0) + 1
    return outcomes


def sweep_stk_requests() -> dict[str, int]:
    """Ask Daraja about prompts with no answer yet; give up on them after the prompt lifetime."""
    now = timezone.now()
    with transaction.atomic():
        # SKIP LOCKED claims a batch no other worker has; bumping last_queried_at keeps it ours
        # after the lock is released, while Daraja is asked outside any transaction.
        claimed = list(
            StkRequest.objects.select_for_update(skip_locked=True)
            .filter(status__in=AWAITING, created_at__lte=now - timedelta(seconds=settings.MPESA_SWEEP_AFTER))
            .filter(Q(last_queried_at__isnull=True)
                    | Q(last_queried_at__lte=now - timedelta(seconds=settings.MPESA_SWEEP_REQUERY_EVERY)))
            .order_by("created_at")[:SWEEP_BATCH]
        )
        StkRequest.objects.filter(pk__in=[stk.pk for stk in claimed]).update(
            last_queried_at=now, query_count=F("query_count") + 1
        )
    outcomes: dict[str, int] = {}
    for stk in claimed:
        answer = None
        if stk.checkout_request_id:
            try:
                answer = get_client().stk_query(checkout_request_id=stk.checkout_request_id)
            except DarajaError as error:
                logger.warning("STK query for request %s failed: %s", stk.pk, error.message)
        outcome = apply_stk_query_result(stk_request_id=stk.pk, answer=answer)
        outcomes[f"prompts {outcome}"] = outcomes.get(f"prompts {outcome}", 0) + 1
    return outcomes


def apply_stk_query_result(*, stk_request_id: int, answer: StkQueryResult | None) -> str:
    with transaction.atomic():
        # The same lock the callback takes: whichever comes second sees the request settled.
        stk = StkRequest.objects.select_for_update().get(pk=stk_request_id)
        if stk.status not in AWAITING:
            return "settled"
        if answer is not None and not answer.pending:
            code = str(answer.result_code) if answer.result_code is not None else str(answer.raw.get("ResultCode", ""))
            if code != "0":
                _settle(stk, StkRequest.Status.FAILED, code, answer.result_desc, [])
                return "failed"
            # Paid, says Daraja; its receipt number comes later (late callback, C2B, Pull).
            _settle(stk, StkRequest.Status.PAID, "0", answer.result_desc, [])
            MpesaTransaction.objects.create(
                amount=stk.amount, msisdn=mask_phone(stk.phone), shop_id=stk.shop_id, sale_id=stk.sale_id,
                stk_request=stk, source=MpesaTransaction.Source.STK_QUERY,
                match_status=MpesaTransaction.Match.MATCHED,
            )
            return "paid"
        if timezone.now() - stk.created_at >= timedelta(seconds=settings.MPESA_STK_GIVE_UP_AFTER):
            _settle(stk, StkRequest.Status.EXPIRED, "", (
                f"No final answer from M-Pesa within {settings.MPESA_STK_GIVE_UP_AFTER // 60} minutes. Check the "
                "M-Pesa statement before asking the customer to pay again."
            ), [])
            return "expired"
        return "pending"
