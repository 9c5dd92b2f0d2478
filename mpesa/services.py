"""M-Pesa workflows: start an STK payment, store and process Safaricom's callbacks, apply ledger
rows to sales, and sweep what got stuck (DESIGN.md §3).

Lock order everywhere: callback log → STK request → sale → stock rows (by product id).
Daraja is never called inside a transaction or while a lock is held.
"""

import functools
import hashlib
import ipaddress
import json
import logging
import math
import re
import secrets
import time
import traceback
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce
from django.urls import Resolver404, resolve
from django.utils import timezone

from comolor import sql
from comolor.logging import mask_phone
from inventory.services import InsufficientStock
from pos.models import ManagerAction, Payment, Sale, Shift, Shop
from pos.services import SaleError, check_may_manage, client_ip, record_manager_action, record_payment, required_reason

from .conf import callback_url, mpesa_config
from .daraja import DarajaBusy, DarajaError, DarajaNotReached, DarajaUnavailable, StkQueryResult, get_client
from .models import CallbackLog, MpesaAccount, MpesaTransaction, PaymentClaim, StkRequest
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
    _count_prompt(msisdn, user)
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
    if _recent_prompts("phone", msisdn) >= settings.MPESA_STK_PROMPTS_PER_PHONE:
        raise SaleError(_too_many_prompts_message(msisdn))
    _refuse_busy_phone(msisdn, math.ceil(amount))


def _count_prompt(phone: str, user) -> None:
    """Prompt spam (reliability.md T27): at most MPESA_STK_PROMPTS_PER_PHONE prompts a minute to one
    phone and MPESA_STK_PROMPTS_PER_CASHIER from one cashier, across tills and shops. Every try
    counts, refused ones too; over a limit it is refused and logged with the cashier's id. The
    counts live in the shared cache (Redis in production), one counter per clock minute; this
    minute's and the last one's are added, so a burst across a minute boundary still counts."""
    limits = [("phone", phone, settings.MPESA_STK_PROMPTS_PER_PHONE, _too_many_prompts_message(phone))]
    if user is not None:
        limits.append(("cashier", user.pk, settings.MPESA_STK_PROMPTS_PER_CASHIER,
                       "You have sent the most M-Pesa prompts allowed in one minute "
                       f"({settings.MPESA_STK_PROMPTS_PER_CASHIER}). Wait a minute, or take cash."))
    for kind, who, limit, message in limits:
        minute = int(time.time() // 60)
        key = _prompt_key(kind, who, minute)
        cache.add(key, 0, timeout=180)
        count = cache.incr(key) + (cache.get(_prompt_key(kind, who, minute - 1)) or 0)
        if count > limit:
            logger.warning("M-Pesa prompt to %s refused: %s prompts this minute, the limit per %s is %s; cashier %s",
                           mask_phone(phone), count, kind, limit, getattr(user, "pk", None))
            raise SaleError(message)


def _recent_prompts(kind: str, who) -> int:
    minute = int(time.time() // 60)
    return sum(cache.get(_prompt_key(kind, who, m)) or 0 for m in (minute, minute - 1))


def _prompt_key(kind: str, who, minute: int) -> str:
    # The phone number is hashed: cache keys are seen by whoever runs Redis.
    name = hashlib.sha256(str(who).encode()).hexdigest()[:20] if kind == "phone" else who
    return f"mpesa:prompts:{kind}:{name}:{minute}"


def _too_many_prompts_message(phone: str) -> str:
    return (f"{mask_phone(phone)} has had the most M-Pesa prompts allowed in one minute "
            f"({settings.MPESA_STK_PROMPTS_PER_PHONE}). Wait a minute, or take cash.")


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

# What describe_payment_status reads: the sale, its latest prompt and that prompt's ledger row. The
# poll runs every second for each waiting till, and through the ORM this one query cost 0.8 ms of
# Python to build and read; as plain SQL (comolor/sql.py), a fifth of that.
_STATUS_FIELDS = [
    sql.fields_of(Sale, ["id", "receipt_number", "status", "total", "amount_paid"]),
    sql.fields_of(StkRequest, ["id", "sale", "phone", "amount", "status", "result_code", "result_desc",
                               "mpesa_receipt", "created_at"]),
    sql.fields_of(MpesaTransaction, ["id", "receipt_number", "amount", "stk_request", "match_status",
                                     "review_reason"]),
]
_STATUS_SQL = (
    "SELECT " + ", ".join(f"{field.model._meta.db_table}.{field.column}"
                          for fields in _STATUS_FIELDS for field in fields)
    + " FROM pos_sale JOIN pos_staff ON pos_staff.shop_id = pos_sale.shop_id"
    " LEFT JOIN mpesa_stkrequest ON mpesa_stkrequest.sale_id = pos_sale.id"
    " LEFT JOIN mpesa_mpesatransaction ON mpesa_mpesatransaction.stk_request_id = mpesa_stkrequest.id"
    " WHERE pos_sale.id = %s AND pos_staff.user_id = %s ORDER BY mpesa_stkrequest.id DESC LIMIT 1"
)
# No row has a larger id. SQLite cannot take a larger integer as a parameter, and PostgreSQL would
# compare it as numeric, past the primary key's index: a hostile id would read the whole table.
_LARGEST_ID = 2**63 - 1


def get_payment_status(*, sale_id: int, user_id: int) -> dict | None:
    """The till's poll (every second), in one query. None: no such sale in the user's shop."""
    row = sql.fetch_one(_STATUS_SQL, [sale_id, user_id]) if sale_id <= _LARGEST_ID else None
    if row is None:
        return None
    values = iter(row)
    sale, stk, tx = (sql.model_instance(fields, [next(values) for _ in fields]) for fields in _STATUS_FIELDS)
    return describe_payment_status(sale, stk, tx)


def describe_payment_status(sale: Sale, stk: StkRequest | None, tx: MpesaTransaction | None) -> dict:
    """What the till shows while it waits: status, whether money came, and a sentence to act on.
    `stk` is the sale's latest prompt, `tx` that prompt's ledger row.

    `result_code` is always a string: the latest prompt's ResultCode as Daraja sends it ("0" paid,
    "1032" cancelled…), Daraja's error code when it refused the push ("500.001.1001"), or "" when
    there is none (no prompt, not sent, no answer yet). A completed sale is "paid" however it was
    paid, cash included, with payment_received true.
    """
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
    """The address that called us, as our own proxies saw it (pos.services.client_ip)."""
    return client_ip(remote_addr, forwarded_for)


def is_allowed_callback_source(ip: str | None) -> bool:
    if ip is None:
        return False
    address = ipaddress.ip_address(ip)
    if address.is_loopback and settings.MPESA_ENVIRONMENT == "simulator":
        return True
    return any(address in network for network in _networks(tuple(settings.MPESA_CALLBACK_ALLOWED_IPS)))


@functools.lru_cache(maxsize=4)
def _networks(allowed: tuple[str, ...]) -> list:
    # Parsed once, not for every callback (Safaricom publishes a dozen addresses).
    return [ipaddress.ip_network(net, strict=False) for net in allowed]


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
    return sql.insert(CallbackLog(
        kind=kind, body=body, headers={_storable(k): _storable(v) for k, v in headers.items()}, source_ip=source_ip,
        path=_storable(path[:255]), status=status, error=error,
    ))


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
    except (ValueError, RecursionError):
        raise ValueError("Body is not JSON.") from None
    envelope = document.get("Body") if isinstance(document, dict) else None
    callback = envelope.get("stkCallback") if isinstance(envelope, dict) else None
    if not isinstance(callback, dict):
        raise ValueError("No Body.stkCallback object.")
    checkout_id = callback.get("CheckoutRequestID")
    code = callback.get("ResultCode")
    if not isinstance(checkout_id, str) or not checkout_id.strip() or len(checkout_id) > 64 or (
            not checkout_id.isprintable()):
        raise ValueError("Missing or malformed CheckoutRequestID.")
    if isinstance(code, bool) or not isinstance(code, (int, str)) or str(code).strip() == "":
        raise ValueError("Missing or malformed ResultCode.")
    fields = {
        "merchant_request_id": _storable(str(callback.get("MerchantRequestID", ""))[:64]),
        "checkout_request_id": checkout_id.strip(),
        "result_code": _storable(str(code).strip()[:20]),
        "result_desc": _storable(str(callback.get("ResultDesc", ""))[:255]),
    }
    if fields["result_code"] != "0":
        return StkCallback(**fields)
    items = callback.get("CallbackMetadata", {})
    items = items.get("Item") if isinstance(items, dict) else None
    if not isinstance(items, list):
        raise ValueError("Success without CallbackMetadata.Item.")
    # By Name, never by position; Balance often has no Value at all.
    values = {item["Name"]: item.get("Value") for item in items
              if isinstance(item, dict) and isinstance(item.get("Name"), str)}
    amount, receipt = values.get("Amount"), values.get("MpesaReceiptNumber")
    if isinstance(amount, bool) or not isinstance(amount, (int, float, str)):
        raise ValueError("Success without an Amount.")
    try:
        amount = Decimal(str(amount))
    except InvalidOperation:
        raise ValueError(f"Amount {amount!r} is not a number.") from None
    if not amount.is_finite():
        raise ValueError(f"Amount {amount!r} is not a number.")
    if not _fits_ledger(amount):
        raise ValueError(f"Amount {amount} is not shillings and cents the ledger can hold exactly.")
    if not isinstance(receipt, str) or not receipt.strip().isalnum() or len(receipt) > 20:
        raise ValueError("Success without a valid MpesaReceiptNumber.")
    return StkCallback(
        **fields, amount=amount, receipt_number=receipt.strip(),
        phone=_storable(str(values.get("PhoneNumber") or "")[:80]),
        transaction_time=_daraja_time(values.get("TransactionDate")),
    )


def _storable(text: str) -> str:
    """Text PostgreSQL can hold: NUL and lone surrogates (sent only by forgers) become U+FFFD and '?'."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _fits_ledger(amount: Decimal) -> bool:
    """Shillings and cents the ledger (12 digits, 2 decimals) holds exactly: nothing is ever rounded into it."""
    return abs(amount) < Decimal("1e10") and amount == amount.quantize(Decimal("0.01"))


def _daraja_time(value) -> datetime | None:
    try:
        moment = datetime.strptime(str(value), "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
    except ValueError:
        return None
    # A year M-Pesa never saw is a broken or forged field, not a time (year 1 is not even readable back).
    return moment if 2000 <= moment.year <= 2100 else None


def process_callback(log_id: int) -> str:
    """Apply one stored callback, in its own transaction. Never raises: a failure is written on
    the log row (status failed, traceback) for the sweep to re-run once the cause is fixed."""
    try:
        confirmation = _confirm_by_query(log_id) if settings.MPESA_STK_CONFIRM_BY_QUERY else None
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # The raw row is already durable and this step is re-run from it if a crash loses
                # it, so it need not wait for its own WAL flush: the sale's and its stock rows'
                # locks are released sooner, and the worker is free sooner for the next callback.
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            # SKIP LOCKED: a log another process is applying right now is its business.
            log = sql.locked_row(CallbackLog, ["id", "kind", "body", "path", "status", "error", "attempts",
                                               "checkout_request_id", "trans_id"],
                                 f"id = %s AND status IN ({sql.in_list(RETRYABLE_LOGS)})",
                                 [log_id, *RETRYABLE_LOGS], skip_locked=True)
            if log is None:
                return "skipped"
            handler = _HANDLERS.get(log.kind)
            outcome = handler(log, confirmation) if handler else "ignored"
            done = log.status != CallbackLog.Status.RECEIVED
            sql.execute(
                "UPDATE mpesa_callbacklog SET status = %s, error = %s, attempts = attempts + 1, "
                "processed_at = COALESCE(%s, processed_at), checkout_request_id = %s, trans_id = %s WHERE id = %s",
                [log.status, log.error, sql.db_time(timezone.now()) if done else None, log.checkout_request_id,
                 log.trans_id, log.pk],
            )
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
    # Locked: the same result may be delivered many times at once; the rest wait and see it applied.
    stk = sql.locked_row(
        StkRequest, ["id", "sale", "shop", "amount", "status", "checkout_request_id", "merchant_request_id",
                     "mpesa_receipt"],
        "callback_token = %s" if token else "checkout_request_id = %s",
        [token or callback.checkout_request_id],
    )
    if stk is None:
        if token:
            log.status, log.error = CallbackLog.Status.REJECTED, "Unknown callback token in the URL; not processed."
            return "rejected"
        return _keep_orphan(log, callback)
    if stk.checkout_request_id and stk.checkout_request_id != callback.checkout_request_id:
        log.status = CallbackLog.Status.REJECTED
        log.error = f"CheckoutRequestID does not match request {stk.pk}'s; not processed."
        return "rejected"
    learnt_ids = not stk.checkout_request_id
    if learnt_ids:
        # The callback beat the push response: the token tells us which request it is.
        stk.checkout_request_id, stk.merchant_request_id = callback.checkout_request_id, callback.merchant_request_id
    log.status, log.error = CallbackLog.Status.PROCESSED, ""
    if not callback.paid:
        if stk.status not in AWAITING:
            return "duplicate"
        _settle(stk, StkRequest.Status.FAILED, callback.result_code, callback.result_desc)
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
        if learnt_ids:
            stk.save(update_fields=["checkout_request_id", "merchant_request_id"])
        return "review"
    _settle(stk, StkRequest.Status.PAID, "0", callback.result_desc, receipt=callback.receipt_number)
    # What the checks above found; a review decided while applying it (a sale paid already, stock
    # gone) is recorded on the ledger row.
    return "review" if reasons else "paid"


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
    # Locked if it exists, and only then read whole: the receipt is new but for a C2B that came first.
    found = sql.fetch_one("SELECT id FROM mpesa_mpesatransaction WHERE receipt_number = %s" + sql.for_update(),
                          [callback.receipt_number])
    if found is None:
        return MpesaTransaction.objects.create(
            receipt_number=callback.receipt_number, amount=callback.amount, msisdn=callback.phone,
            transaction_time=callback.transaction_time, shop_id=stk.shop_id, sale_id=stk.sale_id,
            stk_request=stk if link else None, callback=log, source=MpesaTransaction.Source.STK_CALLBACK,
            match_status=match, review_reason="; ".join(reasons)[:255],
        )
    existing = MpesaTransaction.objects.get(pk=found[0])
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
    if tx is None:
        return
    copy = MpesaTransaction.objects.select_for_update().filter(receipt_number=callback.receipt_number).first()
    if copy is None:
        tx.receipt_number = callback.receipt_number
        tx.save(update_fields=["receipt_number"])
    elif (copy.match_status == MpesaTransaction.Match.UNMATCHED and copy.stk_request_id is None
          and copy.payment_id is None and copy.amount == tx.amount):
        # The same money reached the ledger first by another road (a till's C2B confirmation has no
        # account number to find the sale by): that row, which has the receipt, takes the place of
        # the query's placeholder, so the payment stands in the ledger once.
        links = dict(stk_request=stk, sale_id=tx.sale_id, shop_id=tx.shop_id, payment_id=tx.payment_id,
                     match_status=tx.match_status, review_reason=tx.review_reason, processed=tx.processed)
        tx.delete()
        for name, value in links.items():
            setattr(copy, name, value)
        copy.save(update_fields=list(links))
    else:
        logger.error("STK request %s: receipt %s is in the ledger as row %s, which is not a bare copy of the "
                     "query-found payment %s; left for a manager", stk.pk, callback.receipt_number, copy.pk, tx.pk)
        return
    stk.mpesa_receipt = callback.receipt_number
    stk.save(update_fields=["mpesa_receipt"])
    if tx.payment_id:
        Payment.objects.filter(pk=tx.payment_id, reference="").update(reference=callback.receipt_number)


def _settle(stk: StkRequest, status: str, code: str, desc: str, *, receipt: str = "") -> None:
    """The prompt's outcome, with the ids a callback that beat the push response may have filled in."""
    stk.status, stk.result_code, stk.result_desc = status, code, desc[:255]
    stk.mpesa_receipt, stk.resolved_at = receipt or stk.mpesa_receipt, timezone.now()
    sql.execute(
        "UPDATE mpesa_stkrequest SET status = %s, result_code = %s, result_desc = %s, mpesa_receipt = %s, "
        "resolved_at = %s, checkout_request_id = %s, merchant_request_id = %s WHERE id = %s",
        [stk.status, stk.result_code, stk.result_desc, stk.mpesa_receipt, sql.db_time(stk.resolved_at),
         stk.checkout_request_id, stk.merchant_request_id, stk.pk],
    )


# --- C2B: paybill and till payments the customer makes from the phone -------------------------
# The confirmation is Safaricom's word that money arrived: it enters the one ledger (unique by
# TransID) and is matched to a sale only by a cashier's claim of its code or by a paybill account
# number that names exactly one open sale. MSISDN (masked or hashed) and names are kept, never keyed on.

# Each statement of the validation answer may take this long (daraja.md §6.3: Daraja waits about
# 8 s, we answer within 1 s); past it the payment is accepted, as with MPESA_C2B_RESPONSE_TYPE.
VALIDATION_DB_TIMEOUT_MS = 200
VALIDATION_ACCEPTED = {"ResultCode": "0", "ResultDesc": "Accepted"}
INVALID_ACCOUNT_NUMBER = "C2B00012"
INVALID_AMOUNT = "C2B00013"
_HASHED_MSISDN = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class C2BPayment:
    """One customer payment as a C2B confirmation (or a Pull record) reports it."""

    receipt_number: str
    amount: Decimal
    shortcode: str
    bill_ref_number: str = ""
    transaction_type: str = ""
    msisdn: str = ""
    first_name: str = ""
    middle_name: str = ""
    last_name: str = ""
    transaction_time: datetime | None = None

    @property
    def whole_shillings(self) -> bool:
        return self.amount == self.amount.to_integral_value()


def _c2b_text(value, limit: int) -> str:
    return "" if value is None or isinstance(value, (dict, list)) else _storable(str(value).strip()[:limit])


def _c2b_amount(value) -> Decimal:
    """TransAmount as "116.00", "116", 116 or 116.0, all the same Decimal; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"TransAmount {value!r} is not an amount.")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"TransAmount {value!r} is not an amount.") from None
    if not amount.is_finite() or amount <= 0 or not _fits_ledger(amount):
        raise ValueError(f"TransAmount {value!r} is not an amount above zero in shillings and cents.")
    return amount


def parse_c2b_payment(document) -> C2BPayment:
    """A C2B confirmation or validation body (daraja.md §6.4). Only TransID and TransAmount must
    be right; anything else may be missing, empty, masked or hashed. ValueError in words."""
    if not isinstance(document, dict):
        raise ValueError("The body is not a JSON object.")
    receipt = _c2b_text(document.get("TransID"), 21)
    if not receipt or len(receipt) > 20 or not receipt.isalnum():
        raise ValueError(f"TransID {document.get('TransID')!r} is not an M-Pesa receipt number.")
    return C2BPayment(
        receipt_number=receipt, amount=_c2b_amount(document.get("TransAmount")),
        shortcode=_c2b_text(document.get("BusinessShortCode"), 10),
        bill_ref_number=_c2b_text(document.get("BillRefNumber"), 40),
        transaction_type=_c2b_text(document.get("TransactionType"), 40),
        msisdn=_c2b_text(document.get("MSISDN"), 80), first_name=_c2b_text(document.get("FirstName"), 60),
        middle_name=_c2b_text(document.get("MiddleName"), 60), last_name=_c2b_text(document.get("LastName"), 60),
        transaction_time=_daraja_time(document.get("TransTime")),
    )


def answer_c2b_validation(*, body: bytes, headers: dict, remote_addr: str, forwarded_for: str, path: str,
                          truncated: bool = False) -> dict:
    """Daraja's question before it takes a C2B payment: "0" (take it) or a C2B000xx refusal.

    The raw request is stored first, as every callback is. The answer must come within a second
    whatever the database is doing, so every statement here runs under a short statement and lock
    timeout; a database that cannot answer in time gets the payment accepted (and logged), as
    MPESA_C2B_RESPONSE_TYPE=Completed would: money is never refused because we were slow.
    """
    started = time.monotonic()
    try:
        with transaction.atomic():
            _limit_statement_time(VALIDATION_DB_TIMEOUT_MS)
            log = record_callback(kind=CallbackLog.Kind.C2B_VALIDATION, body=body, headers=headers,
                                  remote_addr=remote_addr, forwarded_for=forwarded_for, path=path,
                                  truncated=truncated)
            if log.status != CallbackLog.Status.RECEIVED:
                # Not from Safaricom (or unreadable): nothing to decide; refusing would tell a forger
                # which account numbers exist.
                return VALIDATION_ACCEPTED
            try:
                payment = parse_c2b_payment(json.loads(body))
            except (ValueError, RecursionError) as error:
                code, reason = "0", f"Unreadable validation request ({error}); accepted, the confirmation decides."
            else:
                log.trans_id = payment.receipt_number
                try:
                    # A savepoint: a decision cut short by the timeout leaves the raw row in place.
                    with transaction.atomic():
                        code, reason = _decide_c2b_validation(payment)
                except DatabaseError as error:
                    code = "0"
                    reason = f"The database did not answer in time ({type(error).__name__}); accepted by default."
                    logger.warning("C2B validation of %s: %s", payment.receipt_number, reason)
            log.status, log.error, log.processed_at = CallbackLog.Status.PROCESSED, reason[:1000], timezone.now()
            log.attempts = 1
            log.save(update_fields=["status", "error", "processed_at", "attempts", "trans_id"])
    except DatabaseError as error:
        logger.error("C2B validation could not be stored (%s: the database is slow or down); accepted by "
                     "default, the confirmation will be processed when it comes", type(error).__name__)
        return VALIDATION_ACCEPTED
    elapsed_ms = (time.monotonic() - started) * 1000
    logger.info("C2B validation answered %s in %.0f ms: %s", code, elapsed_ms, reason)
    if code == "0":
        return VALIDATION_ACCEPTED
    return {"ResultCode": code, "ResultDesc": "Rejected"}


def _limit_statement_time(milliseconds: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # SET LOCAL: only for this transaction; the pooled connection keeps its defaults.
            cursor.execute(f"SET LOCAL statement_timeout = {int(milliseconds)}")
            cursor.execute(f"SET LOCAL lock_timeout = {int(milliseconds)}")


def _decide_c2b_validation(payment: C2BPayment) -> tuple[str, str]:
    """→ (ResultCode, why). A strict paybill refuses an account number naming no open sale
    (C2B00012) and an amount other than that sale's balance (C2B00013); all else is taken."""
    accounts = list(_accounts_for(payment.shortcode).filter(is_active=True).values_list(
        "shop_id", "kind", "validation_policy"))
    if not accounts:
        if payment.shortcode in (mpesa_config().shortcode, mpesa_config().till_number):
            return "0", "Accepted (the configured account takes every payment)."
        logger.warning("C2B validation for shortcode %s, which is no shop's: accepted", payment.shortcode)
        return "0", f"Shortcode {payment.shortcode!r} is no shop's M-Pesa account: accepted, kept for review."
    strict = {shop for shop, kind, policy in accounts
              if policy == MpesaAccount.ValidationPolicy.STRICT and kind == MpesaAccount.Kind.PAYBILL}
    if not strict:
        return "0", "Accepted (the shop takes every payment and reconciles later)."
    sales = _sales_named_by(payment.bill_ref_number, [shop for shop, _, _ in accounts], pending_only=True)
    if len(sales) != 1:
        if len(strict) < len({shop for shop, _, _ in accounts}):
            return "0", "Accepted (a shop sharing this paybill takes every payment)."
        return INVALID_ACCOUNT_NUMBER, (
            f"Account number {payment.bill_ref_number!r} is no open sale's receipt number: refused (strict shop)."
        )
    sale = sales[0]
    if sale.shop_id not in strict:
        return "0", f"Accepted for sale {sale.receipt_number}."
    due = math.ceil(sale.balance_due)
    if payment.amount != due:
        return INVALID_AMOUNT, (
            f"KES {payment.amount:,.2f} offered for sale {sale.receipt_number}, which needs KES {due:,}: refused "
            "(strict shop)."
        )
    return "0", f"Accepted for sale {sale.receipt_number}."


def _accounts_for(shortcode: str):
    """The M-Pesa accounts a C2B payment to this number belongs to: a paybill, a till, or a till's
    store number. Several shops may share one paybill, told apart by account number."""
    if not shortcode:
        return MpesaAccount.objects.none()
    return MpesaAccount.objects.filter(Q(shortcode=shortcode) | Q(till_number=shortcode))


def _shop_ids_for(shortcode: str) -> list[int]:
    """The shops a C2B payment to this number is for: those whose account it is; for the configured
    MPESA_SHORTCODE (or MPESA_TILL_NUMBER), every shop without an account of its own, as their STK
    prompts go out through it too."""
    shop_ids = sorted(set(_accounts_for(shortcode).values_list("shop_id", flat=True)))
    config = mpesa_config()
    if not shop_ids and shortcode and shortcode in (config.shortcode, config.till_number):
        shop_ids = sorted(Shop.objects.filter(mpesa_account__isnull=True).values_list("pk", flat=True))
    return shop_ids


def normalise_account_number(text: str) -> str:
    """What a customer typed as the account number, as a receipt number without its dash:
    "demo 0000123", "DEMO0000123" and "Demo-0000123" all give "DEMO0000123"."""
    return "".join(ch for ch in str(text or "").upper() if ch.isalnum())


def _sales_named_by(reference: str, shop_ids, *, pending_only: bool = False) -> list[Sale]:
    """Sales of these shops whose receipt number (CODE-0000123) the account number spells,
    forgiving case, spaces and the dash. By the unique receipt index, never a scan."""
    typed = normalise_account_number(reference)
    if not typed or not shop_ids:
        return []
    codes = Shop.objects.filter(pk__in=shop_ids).values_list("code", flat=True)
    candidates = {f"{code}-{typed[len(code):]}" for code in codes if typed.startswith(code) and len(typed) > len(code)}
    if not candidates:
        return []
    sales = Sale.objects.filter(shop_id__in=shop_ids, receipt_number__in=candidates)
    if pending_only:
        sales = sales.filter(status=Sale.Status.PENDING)
    return list(sales.order_by("pk")[:2])


def _process_c2b_confirmation(log: CallbackLog, confirmation) -> str:
    """A C2B confirmation: into the ledger once per TransID, then matched (waiting claim, or
    the paybill account number); always acknowledged to Safaricom with 0."""
    try:
        payment = parse_c2b_payment(json.loads(bytes(log.body)))
    except (ValueError, RecursionError) as error:
        log.status, log.error = CallbackLog.Status.INVALID, f"Not a C2B confirmation: {error}"
        return "invalid"
    log.trans_id = payment.receipt_number
    outcome, note = enter_c2b_payment(payment, source=MpesaTransaction.Source.C2B, callback=log)
    # Deferred: kept raw and re-run by the sweep, like an STK callback whose request is not there yet.
    log.status = CallbackLog.Status.ORPHAN if outcome == "deferred" else CallbackLog.Status.PROCESSED
    log.error = note[:1000]
    return outcome


def enter_c2b_payment(payment: C2BPayment, *, source: str, callback: CallbackLog | None = None) -> tuple[str, str]:
    """Put a C2B payment (confirmation or Pull) in the ledger unless it is there, and match it.

    → (outcome, note): "duplicate" (already in the ledger: nothing changes), "linked" (the receipt
    number of an STK payment known from STK Query), "deferred" (an open prompt of the named sale
    may be this very payment: decided once the prompt ends), "claimed", "paid", "partly_paid",
    "review" or "unmatched". Runs in the caller's transaction.
    """
    if MpesaTransaction.objects.filter(receipt_number=payment.receipt_number).exists():
        return "duplicate", "Receipt already in the ledger."
    shop_ids = _shop_ids_for(payment.shortcode)
    named = _sales_named_by(payment.bill_ref_number, shop_ids)
    sale = named[0] if len(named) == 1 else None
    if sale is not None:
        # Lock order: STK requests before the sale and the ledger, as the STK callback takes them.
        prompts = list(StkRequest.objects.select_for_update().filter(sale=sale).order_by("pk"))
        if any(stk.status in AWAITING and stk.amount == payment.amount for stk in prompts):
            return "deferred", (f"Sale {sale.receipt_number} has an open M-Pesa prompt for KES {payment.amount:,.0f}: "
                                "this may be the same payment; decided once the prompt ends.")
        if _fill_in_query_receipt(prompts, payment):
            return "linked", f"Receipt number of sale {sale.receipt_number}'s STK payment (known from STK Query)."
    if not shop_ids:
        logger.warning("C2B payment %s to shortcode %s, which is no shop's M-Pesa account: kept unmatched",
                       payment.receipt_number, payment.shortcode)
    try:
        with transaction.atomic():
            tx = MpesaTransaction.objects.create(
                receipt_number=payment.receipt_number, transaction_type=payment.transaction_type,
                amount=payment.amount, msisdn=payment.msisdn, first_name=payment.first_name,
                middle_name=payment.middle_name, last_name=payment.last_name,
                bill_ref_number=payment.bill_ref_number, business_shortcode=payment.shortcode,
                transaction_time=payment.transaction_time, callback=callback, source=source,
                shop_id=sale.shop_id if sale else (shop_ids[0] if len(shop_ids) == 1 else None),
                match_status=MpesaTransaction.Match.UNMATCHED,
                review_reason=_unmatched_reason(payment, shop_ids, named)[:255],
            )
    except IntegrityError:
        # The same payment delivered twice at once: the other delivery entered it.
        return "duplicate", "Receipt already in the ledger."
    claim = PaymentClaim.objects.filter(code=payment.receipt_number, status=PaymentClaim.Status.WAITING).first()
    if claim is not None and resolve_waiting_claim(claim_id=claim.pk) == "paid":
        return "claimed", f"Paid sale {claim.sale_id}'s claim by code."
    if sale is None:
        return "unmatched", tx.review_reason
    return _match_named_sale(tx, sale, payment)


def _unmatched_reason(payment: C2BPayment, shop_ids: list[int], named: list[Sale]) -> str:
    if not shop_ids:
        return f"Paid to {payment.shortcode or 'an unnamed number'}, which is no shop's paybill or till."
    if len(named) > 1:
        return f"Account number {payment.bill_ref_number!r} could be several sales: waiting for a person."
    if payment.bill_ref_number and not named:
        return f"Account number {payment.bill_ref_number!r} is no sale's receipt number: waiting for a person."
    return "" if named else "No account number (a till payment): waiting for a cashier's claim."


def _match_named_sale(tx: MpesaTransaction, sale: Sale, payment: C2BPayment) -> tuple[str, str]:
    """A paybill payment whose account number names exactly one sale of the shop."""
    if sale.status != Sale.Status.PENDING:
        tx.review_reason = (f"Account number {payment.bill_ref_number!r} is sale {sale.receipt_number}, which is "
                            f"{sale.status}: for a manager to refund or assign.")[:255]
        tx.save(update_fields=["review_reason"])
        return "unmatched", tx.review_reason
    if not payment.whole_shillings:
        # M-Pesa moves whole shillings: cents mean something is wrong with the record.
        tx.sale, tx.match_status = sale, MpesaTransaction.Match.REVIEW
        tx.review_reason = f"KES {payment.amount} is not a whole number of shillings: check it with Safaricom."
        tx.save(update_fields=["sale", "match_status", "review_reason"])
        return "review", tx.review_reason
    # Saved matched, the mpesa.signals receiver applies it to the sale (apply_mpesa_transaction).
    tx.sale, tx.match_status, tx.review_reason = sale, MpesaTransaction.Match.MATCHED, ""
    tx.save(update_fields=["sale", "match_status", "review_reason"])
    tx.refresh_from_db()
    if tx.match_status == MpesaTransaction.Match.REVIEW:
        return "review", tx.review_reason
    sale.refresh_from_db()
    return ("paid" if sale.status == Sale.Status.COMPLETED else "partly_paid"), (
        f"Paid sale {sale.receipt_number} by account number {payment.bill_ref_number!r}."
    )


def _fill_in_query_receipt(prompts: list[StkRequest], payment: C2BPayment) -> bool:
    """An STK payment first learnt from STK Query has no receipt number in the ledger; its C2B
    confirmation (or Pull record) names the sale and the amount, and brings the number."""
    paid = [stk.pk for stk in prompts if stk.status == StkRequest.Status.PAID and stk.amount == payment.amount]
    tx = (MpesaTransaction.objects.select_for_update()
          .filter(stk_request__in=paid, receipt_number__isnull=True).order_by("pk").first()) if paid else None
    if tx is None:
        return False
    tx.receipt_number = payment.receipt_number
    tx.save(update_fields=["receipt_number"])
    StkRequest.objects.filter(pk=tx.stk_request_id, mpesa_receipt="").update(mpesa_receipt=payment.receipt_number)
    if tx.payment_id:
        Payment.objects.filter(pk=tx.payment_id, reference="").update(reference=payment.receipt_number)
    return True


def _process_c2b_timeout(log: CallbackLog, confirmation) -> str:
    """Safaricom's notice that our validation answer came too late: its ResponseType decided."""
    try:
        document = json.loads(bytes(log.body))
    except (ValueError, RecursionError):
        document = None
    trans_id = _c2b_text(document.get("TransID"), 20) if isinstance(document, dict) else ""
    log.trans_id, log.status = trans_id, CallbackLog.Status.PROCESSED
    log.error = (f"M-Pesa says our validation answer was late; MPESA_C2B_RESPONSE_TYPE="
                 f"{settings.MPESA_C2B_RESPONSE_TYPE} decided. A taken payment still comes as a confirmation.")
    logger.warning("C2B validation timed out at Safaricom (TransID %s): %s", trans_id or "unknown", log.error)
    return "acknowledged"


def _acknowledge_only(log: CallbackLog, confirmation) -> str:
    log.status = CallbackLog.Status.PROCESSED
    return "acknowledged"


_HANDLERS = {
    CallbackLog.Kind.STK: _process_stk_callback,
    CallbackLog.Kind.C2B_CONFIRMATION: _process_c2b_confirmation,
    CallbackLog.Kind.C2B_VALIDATION: _acknowledge_only,
    CallbackLog.Kind.C2B_TIMEOUT: _process_c2b_timeout,
}


# --- The ledger applied to the sale -------------------------------------------------------------

def apply_mpesa_transaction(*, transaction_id: int, sale_id: int,
                            new_row: MpesaTransaction | None = None) -> Payment | None:
    """Record a matched M-Pesa transaction as the sale's payment, completing the sale when paid.

    Idempotent: an applied or unmatched transaction is left alone. Money that cannot count
    (cancelled or already paid sale, more than is due, stock gone) goes to review, never away.
    `new_row`: the row itself when the caller has just created it (the signal's `created`).
    """
    # Created inside the caller's open transaction, the row is invisible to every other one until
    # it commits: it is used as it is instead of being read and locked again.
    fresh = new_row is not None and connection.in_atomic_block
    # Joins the caller's transaction (the callback's, via the signal) without a savepoint.
    with transaction.atomic(savepoint=False):
        # Sale row first, as every payment of this sale takes it; then this ledger row.
        sale = sql.locked_row(Sale, ["id", "shop", "cashier", "receipt_number", "status", "total", "amount_paid"],
                              "id = %s", [sale_id])
        tx = new_row if fresh else MpesaTransaction.objects.select_for_update().get(pk=transaction_id)
        if tx.payment_id or tx.match_status != MpesaTransaction.Match.MATCHED or tx.sale_id != sale.pk:
            return None
        due = sale.balance_due
        if sale.status != Sale.Status.PENDING or due <= 0:
            return _to_review(tx, f"sale {sale.receipt_number} is {sale.status} and owed nothing: an "
                                  "overpayment to refund or credit")
        excess = Decimal("0")
        if tx.amount > math.ceil(due):
            # We set an STK prompt's amount, so more than it is suspicious; a customer keys a paybill
            # amount (or a manager assigns it) and paying over is ordinary: the excess is refunded.
            if tx.stk_request_id is not None and tx.claimed_by_id is None:
                return _to_review(tx, f"KES {tx.amount:,.2f} received but only KES {due:,.2f} is due: an overpayment")
            excess = tx.amount - due
        # M-Pesa moved whole shillings (the balance rounded up): the payment settles the balance
        # exactly and the cents above it are recorded as change due, as with cash.
        applied = min(tx.amount, due)
        try:
            # record_payment refuses before it writes, so the review below needs no savepoint; the
            # sale row locked above is handed over rather than locked again.
            payment = record_payment(
                sale=sale, method=Payment.Method.MPESA, amount=applied, tendered=tx.amount,
                change_given=tx.amount - applied - excess, reference=tx.receipt_number or "",
                user=tx.claimed_by if tx.claimed_by_id else None,
            )
        except InsufficientStock as error:
            # The money is real and stays in the ledger; a manager restocks and completes, or refunds.
            return _to_review(tx, f"paid, but the shop ran out of stock: {error}")
        tx.payment, tx.processed, tx.excess_amount = payment, True, excess
        if excess:
            tx.review_reason = f"Overpaid by KES {excess:,.2f}: refund or credit the customer."
        # Applied: saving it through the ORM would only send this receiver the row once more.
        sql.execute("UPDATE mpesa_mpesatransaction SET payment_id = %s, processed = %s, excess_amount = %s, "
                    "review_reason = %s WHERE id = %s", [payment.pk, True, excess, tx.review_reason, tx.pk])
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
    claims = resolve_waiting_claims()
    parts = [f"{count} {what}" for what, count in {**rerun, **swept, **claims}.items() if count]
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
                _settle(stk, StkRequest.Status.FAILED, code, answer.result_desc)
                return "failed"
            # Paid, says Daraja; its receipt number comes later (late callback, C2B, Pull).
            _settle(stk, StkRequest.Status.PAID, "0", answer.result_desc)
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
            ))
            return "expired"
        return "pending"


# --- Reconciliation ------------------------------------------------------------------------------
# A manager's fixes from the back office. Each one checks that it applies (refusing in words),
# acts through the same workflow the till and the callbacks use, and records a ManagerAction.

def unmatched_payments():
    """Money in the ledger that paid no sale yet (a till or paybill payment nobody claimed)."""
    return MpesaTransaction.objects.filter(match_status=MpesaTransaction.Match.UNMATCHED)


def amount_mismatches():
    """Under-, over- and double payments: rows held for review, and excess not yet refunded."""
    return MpesaTransaction.objects.filter(
        Q(match_status=MpesaTransaction.Match.REVIEW)
        | Q(excess_amount__gt=0, resolved_at__isnull=True, match_status=MpesaTransaction.Match.MATCHED)
    )


def stuck_callbacks():
    """Callbacks that found no request (orphans) or whose processing failed."""
    return CallbackLog.objects.filter(status__in=[CallbackLog.Status.ORPHAN, CallbackLog.Status.FAILED])


def unknown_stk_requests():
    """Prompts past the till's wait with no final answer from M-Pesa."""
    return StkRequest.objects.filter(
        status__in=AWAITING, created_at__lt=timezone.now() - timedelta(seconds=settings.MPESA_STK_TIMEOUT)
    )


def assign_mpesa_payment(*, transaction_id: int, sale_id: int, user, reason: str) -> dict:
    """Tie a payment that paid no sale to the sale it was for, by the till's claim rules (via admin:
    less than due leaves the sale partly paid, more pays it and keeps the excess for refund)."""
    reason = required_reason(reason)
    tx = MpesaTransaction.objects.get(pk=transaction_id)
    sale = Sale.objects.get(pk=sale_id)
    # A payment to an account no shop has is the owners' to place.
    check_may_manage(user, tx.shop_id)
    check_may_manage(user, sale.shop_id)
    if not tx.receipt_number:
        raise SaleError("This payment has no M-Pesa receipt number yet (known from STK Query only); it can be "
                        "assigned once the number arrives with the callback, the C2B confirmation or Pull.")
    with transaction.atomic():
        result = claim_mpesa_payment(sale_id=sale.pk, code=tx.receipt_number, user=user, via="admin")
        record_manager_action(user=user, shop_id=sale.shop_id, action=ManagerAction.Action.ASSIGN_PAYMENT,
                              target=f"M-Pesa {tx.receipt_number} → sale {sale.receipt_number}", reason=reason,
                              outcome=result["message"])
    return result


REFUND_METHODS = {"cash": "in cash", "outside": "outside this system (M-Pesa reversal or send money)"}


def refund_overpayment(*, transaction_id: int, user, method: str, reason: str) -> MpesaTransaction:
    """Record that money no sale needed went back to the customer. The ledger row stays as it
    was received; the refund is its resolution (who, when, how)."""
    reason = required_reason(reason)
    if method not in REFUND_METHODS:
        raise SaleError("Say how the money went back: in cash, or outside (M-Pesa reversal or send money).")
    with transaction.atomic():
        tx = MpesaTransaction.objects.select_for_update().get(pk=transaction_id)
        check_may_manage(user, tx.shop_id)
        label = f"M-Pesa {tx.receipt_number or tx.pk}"
        if tx.resolved_at is not None:
            raise SaleError(f"{label} was already resolved on {timezone.localtime(tx.resolved_at):%d/%m/%Y %H:%M}: "
                            f"{tx.resolution}")
        fields = ["resolved_by", "resolved_at", "resolution"]
        if tx.payment_id is not None and tx.excess_amount > 0:
            amount = tx.excess_amount
        elif tx.payment_id is None and tx.match_status in (MpesaTransaction.Match.REVIEW,
                                                            MpesaTransaction.Match.UNMATCHED):
            # No sale took any of it: all of it goes back, and the row leaves the queues.
            amount, tx.match_status = tx.amount, MpesaTransaction.Match.RESOLVED
            fields.append("match_status")
        else:
            raise SaleError(f"{label} paid its sale exactly: there is nothing to refund.")
        tx.resolved_by, tx.resolved_at = user, timezone.now()
        tx.resolution = f"KES {amount:,.2f} refunded {REFUND_METHODS[method]}: {reason}"
        tx.save(update_fields=fields)
        record_manager_action(user=user, shop_id=tx.shop_id, action=ManagerAction.Action.REFUND_OVERPAYMENT,
                              target=label, reason=reason, outcome=tx.resolution)
    return tx


def query_stk_request_now(*, stk_request_id: int, user, reason: str) -> str:
    """Ask Daraja now about a prompt with no answer, as the sweep would, and apply the answer."""
    reason = required_reason(reason)
    stk = StkRequest.objects.select_related("sale").get(pk=stk_request_id)
    check_may_manage(user, stk.shop_id)
    target = f"STK request {stk.checkout_request_id or stk.pk} (sale {stk.sale.receipt_number})"
    if stk.status not in AWAITING:
        raise SaleError(f"This prompt has its outcome already: {stk.get_status_display()}. Nothing to ask.")
    if not stk.checkout_request_id:
        raise SaleError("M-Pesa never acknowledged this prompt (no CheckoutRequestID), so it cannot be queried. "
                        "If the customer paid, the money arrives as an unmatched payment; assign it to the sale.")
    StkRequest.objects.filter(pk=stk.pk).update(last_queried_at=timezone.now(), query_count=F("query_count") + 1)
    try:
        answer = get_client().stk_query(checkout_request_id=stk.checkout_request_id)
    except DarajaError as error:
        outcome = f"M-Pesa did not answer the query ({error.message}). Try again in a minute."
        record_manager_action(user=user, shop_id=stk.shop_id, action=ManagerAction.Action.QUERY_STK,
                              target=target, reason=reason, outcome=outcome)
        raise SaleError(outcome) from error
    result = apply_stk_query_result(stk_request_id=stk.pk, answer=answer)
    stk.refresh_from_db()
    outcome = {
        "paid": f"M-Pesa says it is paid: KES {stk.amount} recorded on sale {stk.sale.receipt_number}.",
        "failed": f"M-Pesa says it was not paid (code {stk.result_code}: {stk.result_desc}).",
        "pending": "M-Pesa has no final answer yet: the customer may still be on the prompt. Ask again in a minute.",
        "expired": f"No final answer from M-Pesa: {stk.result_desc}",
        "settled": f"It was settled meanwhile: {stk.get_status_display()}.",
    }[result]
    record_manager_action(user=user, shop_id=stk.shop_id, action=ManagerAction.Action.QUERY_STK, target=target,
                          reason=reason, outcome=outcome)
    return outcome


def reprocess_callback(*, callback_id: int, user, reason: str) -> str:
    """Run a stored orphan or failed callback again now (the sweep would, on its own schedule)."""
    reason = required_reason(reason)
    log = CallbackLog.objects.get(pk=callback_id)
    # A raw callback belongs to no shop until processed: owners only.
    check_may_manage(user, None)
    label = f"callback #{log.pk} ({log.get_kind_display()})"
    if log.status == CallbackLog.Status.PROCESSED:
        raise SaleError(f"The {label} was processed already; running it again would change nothing.")
    if log.status == CallbackLog.Status.REJECTED:
        raise SaleError(f"The {label} was rejected ({log.error}) and is never processed. If the payment is real, "
                        "STK Query, the C2B confirmation or Pull brings it in.")
    if log.status == CallbackLog.Status.INVALID:
        raise SaleError(f"The {label} could not be read ({log.error}); processing it again cannot help.")
    result = process_callback(log.pk)
    log.refresh_from_db()
    outcome = f"Processed again: {result}. {log.error}".strip()[:1000]
    record_manager_action(user=user, shop_id=None, action=ManagerAction.Action.REPROCESS_CALLBACK, target=label,
                          reason=reason, outcome=outcome)
    return outcome


SETTLEMENT_LIST_LIMIT = 200


def daily_settlement(*, shop_id: int, day: date) -> dict:
    """One shop's day: the day's sales by payment method against the M-Pesa ledger, the
    differences and the rows behind each. A fixed number of aggregate queries at any size.

    The day's sales are those rung up that day (local time); the ledger's rows are those received
    that day. M-Pesa money on a sale is what the customer sent (Payment.tendered: the rounded-up
    shillings, or more on an assigned overpayment).
    """
    start = datetime.combine(day, datetime.min.time(), tzinfo=timezone.get_current_timezone())
    end = start + timedelta(days=1)
    # Every status named: the (shop, status, created_at) index is then searched, not scanned.
    days_sales = Sale.objects.filter(shop_id=shop_id, status__in=list(Sale.Status.values),
                                     created_at__gte=start, created_at__lt=end)
    sales = {row["status"]: row for row in days_sales.values("status").annotate(
        count=Count("pk"), total=Sum("total"), paid=Sum("amount_paid"))}
    payments = list(Payment.objects.filter(sale__in=days_sales).values("method").annotate(
        count=Count("pk"), applied=Sum("amount"), received=Sum("tendered"), change=Sum("change_given"),
    ).order_by("method"))
    ledger = MpesaTransaction.objects.filter(shop_id=shop_id, created_at__gte=start, created_at__lt=end)
    other_days_sale = Q(payment__isnull=False) & (Q(sale__created_at__lt=start) | Q(sale__created_at__gte=end))
    # Money that came in today but sits on no sale of today, and today's sales paid by money entered another day.
    off_ledger = Q(payment__isnull=True) | other_days_sale
    totals = ledger.aggregate(
        count=Count("pk"), total=Sum("amount"),
        pull_count=Count("pk", filter=Q(source=MpesaTransaction.Source.PULL)),
        pull=Sum("amount", filter=Q(source=MpesaTransaction.Source.PULL)),
        unapplied=Sum("amount", filter=Q(payment__isnull=True)),
        other_days=Sum("amount", filter=other_days_sale),
        excess=Sum("excess_amount", filter=Q(excess_amount__gt=0, resolved_at__isnull=True)),
    )
    by_source = [{**row, "label": MpesaTransaction.Source(row["source"]).label}
                 for row in ledger.values("source").annotate(count=Count("pk"), total=Sum("amount")).order_by("source")]
    mpesa_payments = Payment.objects.filter(sale__in=days_sales, method=Payment.Method.MPESA)
    entered_elsewhere = mpesa_payments.filter(
        Q(mpesa_transaction__isnull=True) | Q(mpesa_transaction__created_at__lt=start)
        | Q(mpesa_transaction__created_at__gte=end)
    )
    earlier = entered_elsewhere.aggregate(total=Sum("tendered"))["total"] or Decimal("0")
    zero = Decimal("0")
    mpesa_on_sales = sum((row["received"] or zero for row in payments if row["method"] == Payment.Method.MPESA), zero)
    ledger_total = totals["total"] or zero
    difference = ledger_total - mpesa_on_sales
    explained = (totals["unapplied"] or zero) + (totals["other_days"] or zero) - earlier
    completed = sales.get(Sale.Status.COMPLETED, {})
    return {
        "shop_id": shop_id, "day": day,
        "sales": {status: {"count": row["count"], "total": row["total"], "paid": row["paid"]}
                  for status, row in sales.items()},
        "completed_total": completed.get("total") or zero,
        "payments": payments,
        "ledger": {"count": totals["count"], "total": ledger_total, "by_source": by_source,
                   "pull_count": totals["pull_count"], "pull": totals["pull"]},
        "mpesa_on_sales": mpesa_on_sales,
        "difference": difference,
        "unexplained": difference - explained,
        "excess_to_refund": totals["excess"] or zero,
        "not_on_days_sales": list(ledger.filter(off_ledger).select_related("sale").order_by("created_at")
                                  [:SETTLEMENT_LIST_LIMIT]),
        "not_on_days_sales_total": (totals["unapplied"] or zero) + (totals["other_days"] or zero),
        "entered_elsewhere": list(entered_elsewhere.select_related("sale", "mpesa_transaction").order_by("id")
                                  [:SETTLEMENT_LIST_LIMIT]),
        "entered_elsewhere_total": earlier,
        "excess_rows": list(ledger.filter(excess_amount__gt=0, resolved_at__isnull=True).select_related("sale")
                            .order_by("created_at")[:SETTLEMENT_LIST_LIMIT]),
        "open_sales": list(days_sales.filter(Q(status=Sale.Status.PENDING)
                                             | Q(status=Sale.Status.CANCELLED, amount_paid__gt=0))
                           .order_by("created_at")[:SETTLEMENT_LIST_LIMIT]),
        "drawers": list(Shift.objects.filter(shop_id=shop_id, closed_at__gte=start, closed_at__lt=end)
                        .select_related("till", "closed_by").order_by("closed_at")),
        "list_limit": SETTLEMENT_LIST_LIMIT,
    }


# --- Shift report --------------------------------------------------------------------------------

def shift_mpesa_section(*, shift, until: datetime) -> dict:
    """The M-Pesa row of a shift's X/Z report (POS_SHIFT_REPORT_SECTIONS; pos.services.shift_report).

    Expected: what the shift's sales recorded as paid by M-Pesa (the amounts the customers sent).
    Received: the ledger's transactions for those sales, including money that came for one of them
    but paid nothing (a cancelled sale, an overpayment held for review). Also shown: excess still to
    refund, and the shop's payments made during the shift that match no sale yet - they may be this
    till's customers, and only a manager can assign them.
    """
    zero = Decimal("0")
    recorded = Payment.objects.filter(sale__shift=shift, method=Payment.Method.MPESA).aggregate(
        count=Count("pk"), sent=Sum(Coalesce("tendered", "amount"))
    )
    ledger = MpesaTransaction.objects.filter(sale__shift=shift).select_related("sale").order_by("created_at", "pk")
    applied = ledger.filter(payment__isnull=False).aggregate(count=Count("pk"), total=Sum("amount"))
    # Listed one by one: the money a manager has to act on (few rows, unlike the shift's paid sales).
    held = list(ledger.filter(payment__isnull=True))
    excess = list(ledger.filter(excess_amount__gt=0, resolved_at__isnull=True))
    # Daraja gives the time of payment to the second: a payment in the second the shift opened is in it.
    since = shift.opened_at.replace(microsecond=0)
    unmatched = list(
        MpesaTransaction.objects.filter(
            shop_id=shift.shop_id, sale__isnull=True,
            match_status__in=[MpesaTransaction.Match.UNMATCHED, MpesaTransaction.Match.REVIEW],
        ).filter(
            # Daraja's time of payment where the ledger has it (a Pull can bring a payment in hours later).
            Q(transaction_time__gte=since, transaction_time__lte=until)
            | Q(transaction_time__isnull=True, created_at__gte=since, created_at__lte=until)
        ).order_by("created_at", "pk")
    )
    expected = recorded["sent"] or zero
    held_total = sum((tx.amount for tx in held), zero)
    received = (applied["total"] or zero) + held_total
    # Still received, and still in the difference; but a manager has settled them (refunded, written off).
    resolved = [tx for tx in held if tx.resolved_at is not None or tx.match_status == MpesaTransaction.Match.RESOLVED]
    unresolved = [tx for tx in held if tx not in resolved]
    attention = []
    if unresolved:
        attention.append(_shift_attention(
            unresolved, "M-Pesa received for this shift's sales but paid none of them (held for review)",
            "{n} M-Pesa payment{s} (KES {total}) came for this shift's sales but paid none of them: "
            "a manager refunds or re-assigns {them} in the back office.",
        ))
    if excess:
        attention.append(_shift_attention(
            excess, "Overpaid by M-Pesa, excess to refund",
            "{n} M-Pesa payment{s} paid more than the sale needed: refund the excess (KES {total}) and mark "
            "{them} refunded in the back office.", amount=lambda tx: tx.excess_amount,
        ))
    if unmatched:
        attention.append(_shift_attention(
            unmatched, "Unmatched M-Pesa payments to the shop during this shift (any till)",
            "{n} M-Pesa payment{s} (KES {total}) to the shop during this shift match{es} no sale: "
            "a manager assigns {them} to the right sale in the back office.",
        ))
    return {
        "method": Payment.Method.MPESA, "label": "M-Pesa",
        "expected_label": f"Sales paid by M-Pesa ({recorded['count']})", "expected": expected,
        "received_label": "M-Pesa ledger for these sales", "received": received,
        "difference": received - expected,
        "lines": [
            {"label": f"Paid sales ({applied['count']} in the ledger)", "amount": applied["total"] or zero},
            {"label": "Held for review, paid no sale", "amount": held_total},
        ],
        "resolved": sum((tx.amount for tx in resolved), zero),
        "attention": attention,
    }


def _shift_attention(transactions: list[MpesaTransaction], title: str, summary: str, *,
                     amount=lambda tx: tx.amount) -> dict:
    total = sum((amount(tx) for tx in transactions), Decimal("0"))
    many = len(transactions) > 1
    words = {"n": len(transactions), "s": "s" if many else "", "es": "" if many else "es",
             "them": "them" if many else "it", "total": f"{total:,.2f}"}
    return {
        "title": title,
        "summary": summary.format(**words),
        "total": total,
        "items": [
            {"time": tx.transaction_time or tx.created_at, "reference": tx.receipt_number or "(receipt to come)",
             "amount": amount(tx), "detail": _shift_item_detail(tx)}
            for tx in transactions
        ],
    }


def _shift_item_detail(tx: MpesaTransaction) -> str:
    parts = [_display_msisdn(tx.msisdn), " ".join(part for part in (tx.first_name, tx.last_name) if part)]
    if tx.bill_ref_number:
        parts.append(f"account {tx.bill_ref_number}")
    if tx.sale_id:
        parts.append(f"sale {tx.sale.receipt_number}")
    if tx.review_reason:
        parts.append(tx.review_reason)
    return " · ".join(part for part in parts if part)


# --- Claims: "the customer paid to our till", checked against Safaricom's confirmation --------
# A code typed from the customer's SMS proves nothing (fake and recycled SMS are common): only a
# confirmation in our ledger pays a sale. Lock order: sale → claim → ledger row.

_MPESA_CODE = re.compile(r"[A-Z][A-Z0-9]{9}")


class ClaimRefused(SaleError):
    """A claim the cashier must not rely on; the message says why and what to do."""


def claim_mpesa_payment(*, sale_id: int, code: str, user, via: str = "till") -> dict:
    """Pay a pending sale with the M-Pesa payment whose code the customer shows (or a manager picks).

    At the till the payment must be exactly the balance (rounded up to whole shillings); via="admin"
    a smaller one leaves the sale partly paid and a larger one pays it, keeping the excess to refund.
    A code Safaricom has not confirmed yet gives a waiting claim (status "waiting"), settled when the
    confirmation comes or expired after MPESA_CLAIM_WAIT_SECONDS. Raises SaleError in words.
    """
    typed = "".join(str(code or "").split()).upper()
    if not _MPESA_CODE.fullmatch(typed):
        raise SaleError(f"{str(code or '').strip()[:30]!r} is not an M-Pesa code: a code is 10 letters and digits "
                        "starting with a letter, like QK12AB34CD. Check it on the customer's SMS.")
    try:
        with transaction.atomic():
            return _claim(sale_id=sale_id, code=typed, user=user, via=via)
    except ClaimRefused as refusal:
        if via == "till":
            # Kept: a refused code at the counter is what fraud looks like to a manager.
            sale = Sale.objects.only("shop_id").get(pk=sale_id)
            PaymentClaim.objects.create(sale_id=sale_id, shop_id=sale.shop_id, code=typed, claimed_by=user,
                                        status=PaymentClaim.Status.REFUSED, message=str(refusal),
                                        resolved_at=timezone.now())
            logger.warning("M-Pesa claim of %s for sale %s refused: %s", typed, sale_id, refusal)
        raise


def _claim(*, sale_id: int, code: str, user, via: str) -> dict:
    # Sale row first: every payment of this sale queues here.
    sale = Sale.objects.select_for_update().get(pk=sale_id)
    live = PaymentClaim.objects.select_for_update().filter(code=code, status__in=PaymentClaim.LIVE).first()
    if live is not None and live.sale_id == sale.pk:
        # The same claim again (a double click, or asking after the confirmation came).
        if live.status == PaymentClaim.Status.WAITING:
            _settle_waiting_claim(live, sale)
        return describe_claim(live, sale)
    if live is not None:
        raise ClaimRefused(_used_message(code, live.sale, live.created_at, waiting=live.status == "waiting"))
    tx = MpesaTransaction.objects.select_for_update().filter(receipt_number=code).first()
    if tx is not None and tx.sale_id == sale.pk and tx.payment_id:
        # Its account number already paid this very sale: the cashier's claim just confirms it.
        return _record_paid_claim(sale, tx, user)
    if sale.status != Sale.Status.PENDING or sale.balance_due <= 0:
        raise ClaimRefused(f"Sale {sale.receipt_number} is {sale.status}; there is nothing to pay.")
    if tx is None:
        if via != "till":
            raise ClaimRefused(f"No M-Pesa payment with code {code} is in the ledger.")
        return _wait_for_confirmation(sale, code, user)
    refusal = _claim_refusal(sale, tx, via)
    if refusal:
        raise ClaimRefused(refusal)
    problem = _apply_claimed_payment(tx, sale, user)
    if problem:
        raise ClaimRefused(problem)
    return _record_paid_claim(sale, tx, user)


def _record_paid_claim(sale: Sale, tx: MpesaTransaction, user) -> dict:
    return _create_claim(sale, tx.receipt_number, user, status=PaymentClaim.Status.PAID, transaction=tx,
                         message=_paid_message(tx, sale), resolved_at=timezone.now())


def _wait_for_confirmation(sale: Sale, code: str, user) -> dict:
    return _create_claim(sale, code, user, status=PaymentClaim.Status.WAITING, message=_waiting_message(code))


def _create_claim(sale: Sale, code: str, user, **fields) -> dict:
    try:
        with transaction.atomic():
            claim = PaymentClaim.objects.create(sale=sale, shop_id=sale.shop_id, code=code, claimed_by=user, **fields)
    except IntegrityError:
        # one_live_claim_per_code: another till claimed this code a moment ago and won.
        other = (PaymentClaim.objects.filter(code=code, status__in=PaymentClaim.LIVE)
                 .select_related("sale").order_by("-pk").first())
        if other is not None and other.sale_id == sale.pk:
            return describe_claim(other, sale)
        if other is None:
            raise ClaimRefused(f"M-Pesa code {code} was claimed for another sale at the same moment. Check the "
                               "sale and try again.") from None
        raise ClaimRefused(_used_message(code, other.sale, other.created_at,
                                         waiting=other.status == PaymentClaim.Status.WAITING)) from None
    return describe_claim(claim, sale)


def _used_message(code: str, sale: Sale, when, *, waiting: bool = False) -> str:
    at = f"{timezone.localtime(when):%d/%m/%Y at %H:%M}" if when else "earlier"
    if waiting:
        return (f"M-Pesa code {code} is already claimed for sale {sale.receipt_number} ({at}), waiting for M-Pesa's "
                "confirmation. One payment pays one sale: ask the customer for another payment.")
    return (f"M-Pesa code {code} was already used for sale {sale.receipt_number} ({at}). One payment pays one "
            "sale: do not hand over the goods; ask the customer for another payment.")


def _claim_refusal(sale: Sale, tx: MpesaTransaction, via: str) -> str:
    """Why this ledger row cannot pay this sale ("" when it can)."""
    code = tx.receipt_number
    if tx.payment_id or (tx.sale_id and tx.match_status == MpesaTransaction.Match.MATCHED):
        used = tx.sale or sale
        return _used_message(code, used, tx.claimed_at or (tx.payment.created_at if tx.payment_id else tx.created_at))
    if tx.match_status == MpesaTransaction.Match.RESOLVED:
        return f"M-Pesa payment {code} was closed by a manager ({tx.resolution or 'resolved'}); it cannot pay a sale."
    if tx.match_status == MpesaTransaction.Match.REVIEW and via == "till":
        return f"M-Pesa payment {code} is held for a manager ({tx.review_reason}). Ask a manager."
    if tx.shop_id != sale.shop_id and (tx.shop_id is not None or via == "till"):
        return (f"M-Pesa payment {code} was made to another shop's till or paybill"
                f"{' (' + tx.business_shortcode + ')' if tx.business_shortcode else ''}, not to {sale.shop.name}. "
                "Only payments to this shop count: ask the customer to pay this shop's number.")
    due = math.ceil(sale.balance_due)
    if via == "till" and tx.amount != due:
        if tx.amount < due:
            return (f"M-Pesa payment {code} is KES {tx.amount:,.2f} but sale {sale.receipt_number} needs KES {due:,}. "
                    f"Nothing was applied. Take the KES {due - tx.amount:,.2f} difference first (cash or another "
                    "payment), then claim this code again; or ask a manager to apply it as part payment.")
        return (f"M-Pesa payment {code} is KES {tx.amount:,.2f} but sale {sale.receipt_number} needs only KES {due:,}. "
                f"Nothing was applied. Ask a manager to apply it and refund the KES {tx.amount - due:,.2f} "
                "difference, or add what the customer is buying.")
    return ""


def _apply_claimed_payment(tx: MpesaTransaction, sale: Sale, user) -> str:
    """Tie the ledger row to the sale; saved matched, the signal applies it. → a problem, or ""."""
    tx.sale, tx.shop_id, tx.match_status = sale, sale.shop_id, MpesaTransaction.Match.MATCHED
    tx.claimed_by, tx.claimed_at, tx.review_reason = user, timezone.now(), ""
    tx.save(update_fields=["sale", "shop", "match_status", "claimed_by", "claimed_at", "review_reason"])
    tx.refresh_from_db()
    sale.refresh_from_db()
    if tx.payment_id is None:
        return (f"M-Pesa payment {tx.receipt_number} was received but cannot pay sale {sale.receipt_number}: "
                f"{tx.review_reason or 'it needs a manager'}. Do not hand over the goods; call a manager.")
    return ""


def _paid_message(tx: MpesaTransaction, sale: Sale) -> str:
    confirmed = f"M-Pesa payment {tx.receipt_number} of KES {tx.amount:,.2f} confirmed by Safaricom"
    if sale.status == Sale.Status.COMPLETED:
        return f"Paid: {confirmed}. Hand over the goods."
    return f"{confirmed}. KES {sale.balance_due:,.2f} still to pay."


def _waiting_message(code: str) -> str:
    return (f"M-Pesa has not confirmed code {code} yet. Waiting up to {settings.MPESA_CLAIM_WAIT_SECONDS} s for "
            "Safaricom's confirmation: do not hand over the goods until it says paid.")


def resolve_waiting_claim(*, claim_id: int) -> str:
    """Settle a waiting claim if its confirmation has come, or expire it past the wait.
    → the claim's status. Called by the confirmation, the till's poll and the sweep."""
    sale_id = (PaymentClaim.objects.filter(pk=claim_id, status=PaymentClaim.Status.WAITING)
               .values_list("sale_id", flat=True).first())
    if sale_id is None:
        return PaymentClaim.objects.filter(pk=claim_id).values_list("status", flat=True).first() or ""
    with transaction.atomic():
        sale = Sale.objects.select_for_update().get(pk=sale_id)
        claim = PaymentClaim.objects.select_for_update().get(pk=claim_id)
        if claim.status == PaymentClaim.Status.WAITING:
            _settle_waiting_claim(claim, sale)
        return claim.status


def _settle_waiting_claim(claim: PaymentClaim, sale: Sale) -> None:
    """The claim and its sale are locked by the caller."""
    tx = MpesaTransaction.objects.select_for_update().filter(receipt_number=claim.code).first()
    if tx is None:
        if timezone.now() - claim.created_at < timedelta(seconds=settings.MPESA_CLAIM_WAIT_SECONDS):
            return
        claim.status = PaymentClaim.Status.EXPIRED
        claim.message = (
            f"No confirmation from M-Pesa for code {claim.code} after {settings.MPESA_CLAIM_WAIT_SECONDS} s: sale "
            f"{sale.receipt_number} is NOT paid. Do not hand over the goods. The code may be mistyped or the SMS "
            "fake: check the code with the customer, or take another payment."
        )
        logger.warning("M-Pesa claim %s of code %s expired: no confirmation came", claim.pk, claim.code)
    else:
        problem = _claim_refusal(sale, tx, "till")
        if sale.status != Sale.Status.PENDING:
            problem = f"Sale {sale.receipt_number} is {sale.status}; M-Pesa payment {claim.code} was not applied."
        problem = problem or _apply_claimed_payment(tx, sale, claim.claimed_by)
        claim.transaction = tx
        claim.status = PaymentClaim.Status.REFUSED if problem else PaymentClaim.Status.PAID
        claim.message = problem or _paid_message(tx, sale)
    claim.resolved_at = timezone.now()
    claim.save(update_fields=["status", "message", "transaction", "resolved_at"])


def describe_claim(claim: PaymentClaim, sale: Sale) -> dict:
    status = claim.status
    if status == PaymentClaim.Status.PAID and sale.status != Sale.Status.COMPLETED:
        status = "partly_paid"
    info = {
        "status": status, "message": claim.message, "mpesa_receipt": claim.code, "claim_id": claim.pk,
        "sale_id": sale.pk, "amount_paid": f"{sale.amount_paid:.2f}", "balance_due": f"{sale.balance_due:.2f}",
    }
    if claim.status == PaymentClaim.Status.WAITING:
        left = settings.MPESA_CLAIM_WAIT_SECONDS - (timezone.now() - claim.created_at).total_seconds()
        info["timeout_after"] = max(0, math.ceil(left))
    return info


def get_claim_status(*, claim_id: int, user_id: int) -> dict | None:
    """The till's poll of a claim (None: no such claim in the user's shop). A waiting claim is
    settled or expired here too, so the till never waits on the worker."""
    if not PaymentClaim.objects.filter(pk=claim_id, shop__staff__user=user_id).exists():
        return None
    resolve_waiting_claim(claim_id=claim_id)
    claim = PaymentClaim.objects.select_related("sale").get(pk=claim_id)
    return describe_claim(claim, claim.sale)


def resolve_waiting_claims() -> dict[str, int]:
    """The sweep: settle or expire every waiting claim (the till may have been closed)."""
    outcomes: dict[str, int] = {}
    waiting = PaymentClaim.objects.filter(status=PaymentClaim.Status.WAITING).order_by("pk")
    for claim_id in waiting.values_list("pk", flat=True)[:SWEEP_BATCH]:
        status = resolve_waiting_claim(claim_id=claim_id)
        if status != PaymentClaim.Status.WAITING:
            outcomes[f"claims {status}"] = outcomes.get(f"claims {status}", 0) + 1
    return outcomes


def list_unclaimed_payments(*, shop_id: int, minutes: int | None = None) -> list[dict]:
    """This shop's M-Pesa payments of the last minutes that paid no sale: the till's pick list."""
    minutes = settings.MPESA_UNCLAIMED_MINUTES if minutes is None else minutes
    now = timezone.now()
    rows = (MpesaTransaction.objects
            .filter(shop_id=shop_id, match_status=MpesaTransaction.Match.UNMATCHED, payment__isnull=True,
                    receipt_number__isnull=False, created_at__gte=now - timedelta(minutes=minutes))
            .order_by("-created_at", "-pk")[:50])
    return [
        {
            "receipt_number": tx.receipt_number, "amount": f"{tx.amount:.2f}",
            "time": (tx.transaction_time or tx.created_at).isoformat(),
            "time_label": _time_label(tx.transaction_time or tx.created_at, now),
            "phone": _display_msisdn(tx.msisdn), "first_name": tx.first_name.title(), "bill_ref": tx.bill_ref_number,
        }
        for tx in rows
    ]


def _time_label(moment: datetime, now: datetime) -> str:
    minutes = int((now - moment).total_seconds() // 60)
    ago = "just now" if minutes < 1 else f"{minutes} min ago"
    return f"{timezone.localtime(moment):%H:%M} ({ago})"


def _display_msisdn(msisdn: str) -> str:
    """Masked as Safaricom sent it, masked by us if it came whole, nothing if it came hashed."""
    if not msisdn or _HASHED_MSISDN.fullmatch(msisdn):
        return ""
    return mask_phone(msisdn)


# --- Pull: C2B payments whose confirmation never reached us --------------------------------------
# Daraja's Pull Transactions lists a shortcode's C2B payments of the last 48 hours, a page per
# OffSetValue (daraja.md §11). What is missing from the ledger is entered and matched as its
# confirmation would have been; what is there already is left exactly as it is.

PULL_WINDOW = timedelta(hours=48)
# Each sweep re-reads a little before the last pull: records may appear in Daraja late.
PULL_OVERLAP = timedelta(minutes=30)
PULL_MAX_PAGES = 1000


def pull_transactions(*, hours: float = 24, shop_id: int | None = None, progress=None) -> dict:
    """Pull the last `hours` (at most 48) of every active account's shortcode, or one shop's.
    → counts; "failed" lists shortcodes Daraja did not answer for, in words. `progress(text)`
    hears about each page."""
    accounts = MpesaAccount.objects.filter(is_active=True).order_by("shortcode")
    if shop_id is not None:
        accounts = accounts.filter(shop_id=shop_id)
    shortcodes = list(dict.fromkeys(accounts.values_list("shortcode", flat=True)))
    if not shortcodes and not MpesaAccount.objects.filter(**({"shop_id": shop_id} if shop_id else {})).exists():
        # No account of its own: the shop (or every shop) is paid through the configured one.
        shortcodes = [mpesa_config().shortcode]
    end = timezone.now()
    start = end - min(timedelta(hours=hours), PULL_WINDOW - timedelta(minutes=1))
    counts = _pull_counts()
    for shortcode in shortcodes:
        _pull_shortcode(shortcode, start, end, counts, progress)
    return counts


def sweep_pull() -> str:
    """POS_WORKER_TASKS: pull each account at most every MPESA_PULL_EVERY_SECONDS, from a little
    before its last successful pull. Safe in several workers: each account is claimed first."""
    now = timezone.now()
    due = now - timedelta(seconds=settings.MPESA_PULL_EVERY_SECONDS)
    counts = _pull_counts()
    pulled = set()
    accounts = (MpesaAccount.objects.filter(is_active=True)
                .filter(Q(last_pulled_at__isnull=True) | Q(last_pulled_at__lte=due)).order_by("pk"))
    for account in accounts:
        if account.shortcode in pulled or cache.get(_pull_backoff_key(account.pk)):
            continue
        previous = account.last_pulled_at
        # Compare-and-swap: of several workers, only the one whose update lands pulls this account.
        unchanged = Q(last_pulled_at__isnull=True) if previous is None else Q(last_pulled_at=previous)
        if not MpesaAccount.objects.filter(unchanged, pk=account.pk).update(last_pulled_at=now):
            continue
        pulled.add(account.shortcode)
        start = max(now - PULL_WINDOW + timedelta(minutes=1), (previous or now - PULL_WINDOW) - PULL_OVERLAP)
        failures = len(counts["failed"])
        _pull_shortcode(account.shortcode, start, now, counts, None)
        if len(counts["failed"]) > failures:
            # The window must start where the last good pull ended; wait a round before trying again.
            MpesaAccount.objects.filter(pk=account.pk, last_pulled_at=now).update(last_pulled_at=previous)
            cache.set(_pull_backoff_key(account.pk), True, timeout=settings.MPESA_PULL_EVERY_SECONDS)
    return describe_pull(counts) if counts["shortcodes"] and (counts["added"] or counts["failed"]) else ""


def _pull_backoff_key(account_id: int) -> str:
    return f"mpesa:pull-failed:{account_id}"


def _pull_counts() -> dict:
    return {"shortcodes": 0, "pages": 0, "records": 0, "added": 0, "matched": 0, "unmatched": 0, "already": 0,
            "linked": 0, "deferred": 0, "invalid": 0, "failed": []}


def _pull_shortcode(shortcode: str, start: datetime, end: datetime, counts: dict, progress) -> None:
    counts["shortcodes"] += 1
    # Daraja's window is to the second: the payment of this very second must be inside it.
    end = end.replace(microsecond=0) + timedelta(seconds=1)
    offset = 0
    while offset < PULL_MAX_PAGES:
        try:
            page = get_client().pull_query(start=start, end=end, offset=offset, shortcode=shortcode)
        except DarajaError as error:
            message = f"{shortcode}: Pull failed on page {offset + 1}: {error.message}"
            logger.error("M-Pesa %s", message)
            counts["failed"].append(message)
            return
        counts["pages"] += 1
        counts["records"] += len(page.records)
        for record in page.records:
            _count_pull_outcome(counts, _enter_pulled_record(record, shortcode))
        if progress:
            pages = f" of {page.total_pages}" if page.total_pages else ""
            progress(f"{shortcode}: page {offset + 1}{pages}, {len(page.records)} record(s)"
                     if page.records or offset else
                     f"{shortcode}: no records (Daraja answers 1001 both for a quiet window and for a shortcode "
                     "not registered for Pull)")
        offset += 1
        if not page.records or (page.total_pages is not None and offset >= page.total_pages):
            return


def _count_pull_outcome(counts: dict, outcome: str) -> None:
    if outcome in ("paid", "partly_paid", "claimed", "review"):
        counts["added"] += 1
        counts["matched"] += 1
    elif outcome == "unmatched":
        counts["added"] += 1
        counts["unmatched"] += 1
    elif outcome == "duplicate":
        counts["already"] += 1
    elif outcome in counts:
        counts[outcome] += 1


def _enter_pulled_record(record: dict, shortcode: str) -> str:
    try:
        payment = parse_pull_record(record, shortcode)
    except ValueError as error:
        logger.warning("Pull record skipped: %s", error)
        return "invalid"
    try:
        with transaction.atomic():
            outcome, _ = enter_c2b_payment(payment, source=MpesaTransaction.Source.PULL)
    except IntegrityError:
        return "duplicate"
    if outcome not in ("duplicate", "deferred"):
        logger.info("Pull recovered M-Pesa payment %s (KES %s): %s", payment.receipt_number, payment.amount, outcome)
    return outcome


def parse_pull_record(record, shortcode: str) -> C2BPayment:
    """One Pull record (transactionId, trxDate, msisdn, transactiontype, billreference, amount)."""
    if not isinstance(record, dict):
        raise ValueError(f"not a record: {record!r:.80}")
    receipt = _c2b_text(record.get("transactionId"), 21)
    if not receipt or len(receipt) > 20 or not receipt.isalnum():
        raise ValueError(f"transactionId {record.get('transactionId')!r} is not an M-Pesa receipt number")
    try:
        amount = _c2b_amount(record.get("amount"))
    except ValueError as error:
        raise ValueError(f"{receipt}: {error}") from None
    when = None
    try:
        when = datetime.fromisoformat(_c2b_text(record.get("trxDate"), 40))
        when = when if when.tzinfo else when.replace(tzinfo=NAIROBI)
    except ValueError:
        pass
    return C2BPayment(
        receipt_number=receipt, amount=amount, shortcode=shortcode,
        bill_ref_number=_c2b_text(record.get("billreference"), 40),
        transaction_type=_c2b_text(record.get("transactiontype"), 40), msisdn=_c2b_text(record.get("msisdn"), 80),
        transaction_time=when,
    )


def describe_pull(counts: dict) -> str:
    """The counts in words, for the command and the worker log."""
    text = (f"{counts['shortcodes']} shortcode(s), {counts['pages']} page(s), {counts['records']} record(s): "
            f"{counts['added']} added to the ledger ({counts['matched']} matched to a sale, {counts['unmatched']} "
            f"unmatched), {counts['already']} already there")
    extras = [f"{counts['linked']} gave the receipt number of an STK payment"] if counts["linked"] else []
    if counts["deferred"]:
        extras.append(f"{counts['deferred']} wait for an open M-Pesa prompt of their sale")
    if counts["invalid"]:
        extras.append(f"{counts['invalid']} unreadable (skipped, see the log)")
    if counts["failed"]:
        extras.append(f"{len(counts['failed'])} failed: " + "; ".join(counts["failed"]))
    return text + "".join(f", {extra}" for extra in extras) + "."
