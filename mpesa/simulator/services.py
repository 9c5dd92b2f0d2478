"""Daraja's behaviour, one function per product workflow. Views parse HTTP and call these.

Everything mirrors docs/daraja.md (the real API), not our client: field checks and their error
envelopes, the ID formats, value types in callbacks, and the timing of asynchronous results.
Outbound POSTs are rows in `Delivery`, sent by `run_due_work` outside any transaction.
"""

import base64
import binascii
import hashlib
import json
import logging
import math
import re
import secrets
import string
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Min, Q, Sum
from django.utils import timezone

from comolor.logging import mask_phone, redact_url

from .models import AccessToken, C2BRegistration, Delivery, Payment, PullRegistration, StkPrompt, TrafficEntry
from .scheduler import wake_delivery_thread

logger = logging.getLogger("mpesa.simulator")

EAT = ZoneInfo("Africa/Nairobi")
PAYBILL_ONLINE, BUY_GOODS_ONLINE = "CustomerPayBillOnline", "CustomerBuyGoodsOnline"
TOKEN_LIFETIME = timedelta(seconds=3600)
MAX_AMOUNT = 250_000
CALLBACK_TIMEOUT = 10.0
PULL_PAGE_SIZE = 100
PULL_WINDOW = timedelta(hours=48)
_MSISDN = re.compile(r"254[17]\d{8}")
_SHORTCODE = re.compile(r"\d{5,7}")
# Words Safaricom refuses in C2B URLs, longest first so "m-pesa" is named rather than "mpesa".
BANNED_URL_WORDS = ("safaricom", "m-pesa", "mpesa", "query", "exec", "exe", "cmd", "sql")

RESULT_DESCRIPTIONS = {
    "0": "The service request is processed successfully.",
    "1": "The balance is insufficient for the transaction.",
    "3": "Declined due to limit rule: greater than the maximum transaction amount.",
    "17": "Rule limited.",
    "1019": "Transaction has expired.",
    "1032": "Request cancelled by user",
    "1037": "DS timeout user cannot be reached",
    "2001": "The initiator information is invalid.",
    "2028": "The request is not permitted according to product assignment.",
    "SFC_IC0003": "The operator does not exist.",
}
LOCK_MESSAGE = "Unable to lock subscriber, a transaction is already in process for the current subscriber"


@dataclass(frozen=True)
class Outcome:
    result: str
    delivery: str = StkPrompt.Delivery.NORMAL
    after_timeout: bool = False


# DESIGN.md §4.3: deterministic outcomes by the paying phone; any other valid number pays.
PHONE_OUTCOMES = {
    "254700000001": Outcome("1"),
    "254700001032": Outcome("1032"),
    "254700001037": Outcome("1037", after_timeout=True),
    "254700002001": Outcome("2001"),
    "254700001019": Outcome("1019"),
    "254700000017": Outcome("17"),
    "254700009001": Outcome("0", StkPrompt.Delivery.LOST),
    "254700009002": Outcome("0", StkPrompt.Delivery.TWICE),
    "254700009003": Outcome("0", StkPrompt.Delivery.EARLY),
    "254700009004": Outcome("0", StkPrompt.Delivery.LATE),
}
LOCKED_PHONE = "254700009005"

# Answers a person can give on the virtual phone.
ANSWERS = {"pay": "0", "cancel": "1032", "wrong_pin": "2001"}


class DarajaFault(Exception):
    """A synchronous Daraja refusal: the `{requestId, errorCode, errorMessage}` envelope."""

    def __init__(self, http_status: int, error_code: str, error_message: str, request_id: str = ""):
        super().__init__(f"{error_code} {error_message}")
        self.http_status = http_status
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id or new_request_id()

    def envelope(self) -> dict:
        return {"requestId": self.request_id, "errorCode": self.error_code, "errorMessage": self.error_message}


class InvalidCredentials(DarajaFault):
    """OAuth with a wrong key or secret: Daraja answers 400 with an empty body."""

    def __init__(self):
        super().__init__(400, "", "Bad Request: Invalid Credentials")


class PaymentRefused(ValueError):
    """A C2B payment the virtual phone cannot make (the message is for the person at the form)."""


def _invalid(field: str) -> DarajaFault:
    return DarajaFault(400, "400.002.02", f"Bad Request - Invalid {field}")


# --- identifiers in Daraja's formats ----------------------------------------------------------

def _digits(count: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(count))


def new_request_id() -> str:
    """Like "1c5b-4ba8-815c-ac45c57a3db01495926" (also used for OriginatorConversationIDs)."""
    return f"{secrets.token_hex(2)}-{secrets.token_hex(2)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}{_digits(7)}"


def _new_merchant_request_id() -> str:
    return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(90_000_000) + 10_000_000}-1"


def _new_checkout_request_id(now: datetime) -> str:
    local = now.astimezone(EAT)
    return f"ws_CO_{local:%d%m%Y%H%M%S}{local.microsecond // 1000:03d}{_digits(9)}"


def _new_conversation_id(now: datetime) -> str:
    return f"AG_{now.astimezone(EAT):%Y%m%d}_{secrets.token_hex(10)}"


def _new_receipt_number(now: datetime) -> str:
    """10 characters like "UAB1C2D3E4": a year letter (T = 2025), a month letter, then random."""
    local = now.astimezone(EAT)
    alphabet = string.ascii_uppercase + string.digits
    while True:
        receipt = (
            chr(ord("T") + (local.year - 2025) % 7)
            + chr(ord("A") + local.month - 1)
            + "".join(secrets.choice(alphabet) for _ in range(8))
        )
        if not Payment.objects.filter(receipt_number=receipt).exists():
            return receipt


def _daraja_time(moment: datetime) -> str:
    return f"{moment.astimezone(EAT):%Y%m%d%H%M%S}"


# --- merchants the simulated M-Pesa knows -----------------------------------------------------

@dataclass(frozen=True)
class Merchant:
    shortcode: str
    tills: tuple[str, ...]  # empty: a paybill; otherwise a store (head office) with Buy Goods tills

    @property
    def is_store(self) -> bool:
        return bool(self.tills)


def _merchants() -> dict[str, Merchant]:
    """The configured account (MPESA_SHORTCODE, a paybill or a till's store number) plus
    DARAJA_SIM_EXTRA_SHORTCODES ("600100" for a paybill, "600200:5200200" for store:till).
    All share MPESA_PASSKEY."""
    merchants = {}
    entries = list(settings.DARAJA_SIM_EXTRA_SHORTCODES)
    own = str(settings.MPESA_SHORTCODE).strip()
    till = str(getattr(settings, "MPESA_TILL_NUMBER", "")).strip()
    if getattr(settings, "MPESA_SHORTCODE_TYPE", "paybill") == "till" and till:
        entries.insert(0, f"{own}:{till}")
    else:
        entries.insert(0, own)
    for entry in entries:
        shortcode, _, tills = entry.partition(":")
        known = merchants.get(shortcode)
        extra = tuple(t for t in tills.split(",") if t)
        merchants[shortcode] = Merchant(shortcode, (known.tills if known else ()) + extra)
    return merchants


def payable_numbers() -> dict[str, tuple[Merchant, bool]]:
    """Every number a customer can pay: paybills, and tills (is_till=True) with their store."""
    numbers = {}
    for merchant in _merchants().values():
        if merchant.is_store:
            numbers.update({till: (merchant, True) for till in merchant.tills})
        else:
            numbers[merchant.shortcode] = (merchant, False)
    return numbers


# --- field checks -----------------------------------------------------------------------------

def _text(body: dict, field: str, *, required: bool = True) -> str:
    value = body.get(field)
    if value is None or (required and str(value).strip() == ""):
        if required:
            raise _invalid(field)
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _invalid(field)
    return str(value)


def _number_field(body: dict, field: str, pattern: re.Pattern = _SHORTCODE) -> str:
    value = _text(body, field)
    if not pattern.fullmatch(value):
        raise _invalid(field)
    return value


def _amount(body: dict, field: str = "Amount") -> int:
    """Whole shillings of at least 1, sent as a number or a digit string."""
    value = body.get(field)
    if isinstance(value, bool):
        raise _invalid(field)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 1:
        raise _invalid(field)
    return value


def _url_field(body: dict, field: str) -> str:
    url = _text(body, field)
    parts = urlsplit(url)
    if url != url.strip() or " " in url or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(field)
    if settings.DARAJA_SIM_MODE == "production" and parts.scheme != "https":
        raise _invalid(field)
    return url


def _timestamp(body: dict) -> str:
    value = _text(body, "Timestamp")
    try:
        datetime.strptime(value, "%Y%m%d%H%M%S")
    except ValueError:
        raise _invalid("Timestamp") from None
    if len(value) != 14:
        raise _invalid("Timestamp")
    return value


def _check_merchant_password(body: dict) -> Merchant:
    """Shortcode, Password and Timestamp, checked as M-Pesa Express checks them."""
    shortcode = _number_field(body, "BusinessShortCode")
    password = _text(body, "Password")
    timestamp = _timestamp(body)
    merchant = _merchants().get(shortcode)
    if merchant is None:
        raise DarajaFault(500, "500.001.1001", "Merchant does not exist")
    expected = base64.b64encode(f"{shortcode}{settings.MPESA_PASSKEY.strip()}{timestamp}".encode()).decode()
    if not secrets.compare_digest(password.encode(), expected.encode()):
        raise DarajaFault(500, "500.001.1001", "[MerchantValidate] - Wrong credentials")
    return merchant


# --- OAuth and the bearer check -----------------------------------------------------------------

# The code Daraja gives for an unknown or expired token differs per product (daraja.md §2).
INVALID_TOKEN = {
    "stk": (404, "404.001.03"),
    "c2b": (400, "400.003.01"),
    "status": (400, "400.003.01"),
    "pull": (401, "401.001"),
}


def issue_token(*, authorization: str, grant_type: str | None) -> dict:
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise DarajaFault(400, "400.008.01", "Invalid authentication type passed")
    if grant_type != "client_credentials":
        raise DarajaFault(400, "400.008.02", "Invalid grant type passed")
    try:
        key, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidCredentials() from None
    if not (
        secrets.compare_digest(key.encode(), settings.MPESA_CONSUMER_KEY.strip().encode())
        and secrets.compare_digest(secret.encode(), settings.MPESA_CONSUMER_SECRET.strip().encode())
    ):
        raise InvalidCredentials()
    now = timezone.now()
    with transaction.atomic():
        if settings.DARAJA_SIM_SINGLE_TOKEN:
            AccessToken.objects.filter(consumer_key=key, revoked=False).update(revoked=True)
        token = AccessToken.objects.create(
            token="".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(28)),
            consumer_key=key, expires_at=now + TOKEN_LIFETIME
        )
    # Real Daraja sends expires_in as a string, whatever its own docs show.
    return {"access_token": token.token, "expires_in": "3599"}


def authenticate_bearer(*, authorization: str, product: str) -> None:
    scheme, _, token = authorization.strip().partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise DarajaFault(404, "404.001.04", "Invalid Authentication Header")
    valid = AccessToken.objects.filter(token=token.strip(), revoked=False, expires_at__gt=timezone.now()).exists()
    if not valid:
        status, code = INVALID_TOKEN[product]
        raise DarajaFault(status, code, "Invalid Access Token")


def check_rate_limit() -> None:
    """Spike arrest: more than DARAJA_SIM_MAX_TPS API requests within the last second."""
    limit = settings.DARAJA_SIM_MAX_TPS
    if limit and TrafficEntry.objects.filter(
        direction=TrafficEntry.Direction.IN, created_at__gte=timezone.now() - timedelta(seconds=1)
    ).count() >= limit:
        raise DarajaFault(500, "500.003.02", "Error Occurred: Spike Arrest Violation")


# --- M-Pesa Express (STK Push) ------------------------------------------------------------------

def push_stk(*, body: dict) -> dict:
    """Accept a push (or refuse it as Daraja does) and plan the prompt's outcome."""
    merchant = _check_merchant_password(body)
    transaction_type = _text(body, "TransactionType")
    if transaction_type not in (PAYBILL_ONLINE, BUY_GOODS_ONLINE):
        raise _invalid("TransactionType")
    amount = _amount(body)
    _number_field(body, "PartyA", _MSISDN)
    party_b = _number_field(body, "PartyB")
    phone = _number_field(body, "PhoneNumber", _MSISDN)
    callback_url = _url_field(body, "CallBackURL")
    account_reference = _text(body, "AccountReference")
    if len(account_reference) > 12:
        raise DarajaFault(400, "400.002.02", "The element AccountReference is invalid.")
    description = _text(body, "TransactionDesc", required=False)
    if phone == LOCKED_PHONE:
        raise DarajaFault(500, "500.001.1001", LOCK_MESSAGE)

    now = timezone.now()
    outcome, decide_at, waits = _plan_outcome(merchant, transaction_type, party_b, phone, amount, now)
    try:
        # The partial unique index (one open prompt per phone) is the subscriber lock.
        with transaction.atomic():
            prompt = StkPrompt.objects.create(
                merchant_request_id=_new_merchant_request_id(),
                checkout_request_id=_new_checkout_request_id(now),
                business_shortcode=merchant.shortcode,
                party_b=party_b,
                transaction_type=transaction_type,
                amount=amount,
                phone=phone,
                account_reference=account_reference,
                description=description[:100],
                callback_url=callback_url,
                delivery=outcome.delivery,
                planned_result=outcome.result,
                decide_at=decide_at,
                waits_for_person=waits,
            )
    except IntegrityError:
        raise DarajaFault(500, "500.001.1001", LOCK_MESSAGE) from None
    logger.info(
        "STK push %s accepted for %s, outcome %s", prompt.checkout_request_id, mask_phone(phone), outcome.result
    )

    if prompt.delivery == StkPrompt.Delivery.EARLY:
        # The callback reaches the shop before this response does (DESIGN.md §4.3).
        _decide_prompt(prompt.pk, outcome.result)
        for delivery_id in Delivery.objects.filter(prompt=prompt).values_list("pk", flat=True):
            _send_delivery(delivery_id)
    _work_scheduled()
    return {
        "MerchantRequestID": prompt.merchant_request_id,
        "CheckoutRequestID": prompt.checkout_request_id,
        "ResponseCode": "0",
        "ResponseDescription": "Success. Request accepted for processing",
        "CustomerMessage": "Success. Request accepted for processing",
    }


def _plan_outcome(merchant: Merchant, transaction_type: str, party_b: str, phone: str, amount: int,
                  now: datetime) -> tuple[Outcome, datetime, bool]:
    """→ (what happens, when it is decided, whether it waits for a person instead)."""
    delay = timedelta(seconds=settings.DARAJA_SIM_CALLBACK_DELAY)
    deadline = now + timedelta(seconds=settings.DARAJA_SIM_PROMPT_TIMEOUT)
    expected_type = BUY_GOODS_ONLINE if merchant.is_store else PAYBILL_ONLINE
    expected_party_b = merchant.tills if merchant.is_store else (merchant.shortcode,)
    if transaction_type != expected_type:
        return Outcome("2028"), now + delay, False
    if party_b not in expected_party_b:
        return Outcome("SFC_IC0003"), now + delay, False
    if amount > MAX_AMOUNT:
        return Outcome("3"), now + delay, False
    if phone == settings.DARAJA_SIM_MANUAL_PHONE:
        return Outcome("1037"), deadline, True
    outcome = PHONE_OUTCOMES.get(phone, Outcome("0"))
    window = settings.DARAJA_SIM_SAME_AMOUNT_WINDOW
    if outcome.result == "0" and window and StkPrompt.objects.filter(
        phone=phone, amount=amount, result_code="0", decided_at__gte=now - timedelta(seconds=window)
    ).exists():
        return Outcome("17"), now + delay, False
    return outcome, deadline if outcome.after_timeout else now + delay, False


def answer_prompt(*, checkout_request_id: str, answer: str) -> StkPrompt:
    """A person on the virtual phone pays, cancels, enters a wrong PIN or ignores the prompt."""
    prompt = StkPrompt.objects.get(checkout_request_id=checkout_request_id)
    if answer == "ignore":
        # Nobody answers: the prompt times out as it would on a real phone.
        StkPrompt.objects.filter(pk=prompt.pk, decided_at__isnull=True).update(
            planned_result="1037",
            decide_at=prompt.created_at + timedelta(seconds=settings.DARAJA_SIM_PROMPT_TIMEOUT),
            waits_for_person=False,
        )
    else:
        _decide_prompt(prompt.pk, ANSWERS[answer])
    _work_scheduled()
    prompt.refresh_from_db()
    return prompt


def _decide_prompt(prompt_id: int, result: str) -> bool:
    """Fix the prompt's result once and queue its callbacks; False if already decided."""
    now = timezone.now()
    with transaction.atomic():
        # Lock: the delivery thread, a person on the phone page and a query may decide at once.
        prompt = StkPrompt.objects.select_for_update().get(pk=prompt_id)
        if prompt.decided_at is not None:
            return False
        prompt.result_code = result
        prompt.result_desc = RESULT_DESCRIPTIONS[result]
        prompt.decided_at = now
        if result == "0":
            prompt.receipt_number = _new_receipt_number(now)
            payment = Payment.objects.create(
                receipt_number=prompt.receipt_number,
                kind=Payment.Kind.STK,
                shortcode=prompt.party_b,
                store_number=prompt.business_shortcode,
                amount=Decimal(prompt.amount),
                phone=prompt.phone,
                bill_ref_number=prompt.account_reference,
                first_name="JOHN",
                last_name="DOE",
                originator_conversation_id=prompt.merchant_request_id,
                prompt=prompt,
                transacted_at=now,
            )
            if settings.DARAJA_SIM_C2B_FOR_STK:
                _queue_c2b_notice(payment, Delivery.Kind.C2B_CONFIRMATION, now)
        prompt.save(update_fields=["result_code", "result_desc", "decided_at", "receipt_number"])
        body = stk_callback_body(prompt)
        copies = {
            StkPrompt.Delivery.LOST: 0,
            StkPrompt.Delivery.TWICE: 2,
        }.get(prompt.delivery, 1)
        due = now
        if prompt.delivery == StkPrompt.Delivery.LATE:
            due = prompt.created_at + timedelta(seconds=settings.DARAJA_SIM_LATE_DELAY)
        for _ in range(copies):
            Delivery.objects.create(
                kind=Delivery.Kind.STK_CALLBACK, url=prompt.callback_url, body=json.dumps(body), due_at=due,
                prompt=prompt,
            )
    return True


def stk_callback_body(prompt: StkPrompt) -> dict:
    """Real callback types: numeric ResultCode (unless Daraja's own is not a number), float
    Amount, Balance without a value, numeric TransactionDate and PhoneNumber."""
    code = prompt.result_code
    callback = {
        "MerchantRequestID": prompt.merchant_request_id,
        "CheckoutRequestID": prompt.checkout_request_id,
        "ResultCode": int(code) if code.isdigit() else code,
        "ResultDesc": prompt.result_desc,
    }
    if code == "0":
        callback["CallbackMetadata"] = {"Item": [
            {"Name": "Amount", "Value": float(prompt.amount)},
            {"Name": "MpesaReceiptNumber", "Value": prompt.receipt_number},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": int(_daraja_time(prompt.decided_at))},
            {"Name": "PhoneNumber", "Value": int(prompt.phone)},
        ]}
    return {"Body": {"stkCallback": callback}}


def query_stk(*, body: dict, settle_due: bool = True) -> dict:
    """STK Query: HTTP 500 "being processed" while the prompt is open, then the final result."""
    merchant = _check_merchant_password(body)
    checkout_request_id = _text(body, "CheckoutRequestID")
    prompt = StkPrompt.objects.filter(
        checkout_request_id=checkout_request_id, business_shortcode=merchant.shortcode
    ).first()
    if prompt is None:
        raise _invalid("CheckoutRequestID")
    if settle_due and prompt.is_open and prompt.decide_at <= timezone.now() and not prompt.waits_for_person:
        _decide_prompt(prompt.pk, prompt.planned_result)
        _work_scheduled()
        prompt.refresh_from_db()
    if prompt.is_open:
        raise DarajaFault(500, "500.001.1001", "The transaction is being processed", request_id=checkout_request_id)
    return {
        "ResponseCode": "0",
        # Daraja's own spelling.
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": prompt.merchant_request_id,
        "CheckoutRequestID": prompt.checkout_request_id,
        "ResultCode": prompt.result_code,
        "ResultDesc": prompt.result_desc,
    }


# --- C2B ------------------------------------------------------------------------------------

def register_c2b_urls(*, body: dict, version: str) -> dict:
    shortcode = _number_field(body, "ShortCode")
    if shortcode not in _merchants() and shortcode not in payable_numbers():
        raise _invalid("ShortCode")
    response_type = _text(body, "ResponseType")
    if response_type not in ("Completed", "Cancelled"):
        raise _invalid("ResponseType")
    urls = {field: _url_field(body, field) for field in ("ConfirmationURL", "ValidationURL")}
    if settings.DARAJA_SIM_MODE == "production":
        for field, url in urls.items():
            word = next((w for w in BANNED_URL_WORDS if w in url.lower()), None)
            if word:
                raise DarajaFault(400, "400.003.02", f"Bad Request - Invalid {field} - URL has the word {word.upper()}")
    with transaction.atomic():
        existing = C2BRegistration.objects.select_for_update().filter(shortcode=shortcode).first()
        if existing and settings.DARAJA_SIM_MODE == "production":
            # Production registration is one-time; changing URLs goes through Safaricom.
            raise DarajaFault(500, "500.003.1001", "Urls are already registered")
        C2BRegistration.objects.update_or_create(
            shortcode=shortcode,
            defaults={
                "version": version,
                "response_type": response_type,
                "confirmation_url": urls["ConfirmationURL"],
                "validation_url": urls["ValidationURL"],
            },
        )
    # "OriginatorCoversationID" is Daraja's spelling.
    return {"OriginatorCoversationID": new_request_id(), "ResponseCode": "0", "ResponseDescription": "Success"}


def simulate_c2b(*, body: dict) -> dict:
    if settings.DARAJA_SIM_MODE == "production":
        raise DarajaFault(404, "404.001.01", "Resource not found")
    shortcode = _number_field(body, "ShortCode")
    command_id = _text(body, "CommandID")
    payable = payable_numbers().get(shortcode)
    if payable is None:
        raise _invalid("ShortCode")
    if command_id != (BUY_GOODS_ONLINE if payable[1] else PAYBILL_ONLINE):
        raise _invalid("CommandID")
    amount = _amount(body)
    msisdn = _number_field(body, "Msisdn", _MSISDN)
    bill_ref = "" if payable[1] else _text(body, "BillRefNumber", required=False)
    conversation_id = new_request_id()
    pay_c2b(shortcode=shortcode, amount=amount, phone=msisdn, account=bill_ref,
            originator_conversation_id=conversation_id)
    return {
        "OriginatorCoversationID": conversation_id,
        "ResponseCode": "0",
        "ResponseDescription": "Accept the service request successfully.",
    }


def pay_c2b(*, shortcode: str, amount: int | Decimal, phone: str, account: str = "",
            first_name: str = "JOHN", middle_name: str = "", last_name: str = "DOE",
            originator_conversation_id: str = "") -> Payment:
    """A customer pays a paybill (with the account number they type) or a till from the
    M-Pesa menu: validation (when registered) and confirmation follow asynchronously."""
    payable = payable_numbers().get(str(shortcode))
    if payable is None:
        raise PaymentRefused(f"{shortcode} is not a paybill or till the simulator knows.")
    merchant, is_till = payable
    if not _MSISDN.fullmatch(str(phone)):
        raise PaymentRefused(f"{phone!r} is not a phone number in the form 2547XXXXXXXX or 2541XXXXXXXX.")
    amount = Decimal(amount)
    if amount < 1 or amount > MAX_AMOUNT or amount != amount.to_integral_value():
        raise PaymentRefused(f"Pay a whole number of shillings from 1 to {MAX_AMOUNT:,}.")
    if len(account) > 20:
        raise PaymentRefused("An account number has at most 20 characters.")
    # C2B URLs for a till may be registered on the till itself or on its store number.
    registrations = {
        r.shortcode: r for r in C2BRegistration.objects.filter(shortcode__in=[shortcode, merchant.shortcode])
    }
    registration = registrations.get(str(shortcode)) or registrations.get(merchant.shortcode)
    now = timezone.now()
    with transaction.atomic():
        validating = bool(registration and registration.validation_url)
        payment = Payment.objects.create(
            receipt_number=_new_receipt_number(now),
            kind=Payment.Kind.C2B,
            status=Payment.Status.VALIDATING if validating else Payment.Status.COMPLETED,
            shortcode=str(shortcode),
            store_number=registration.shortcode if registration else merchant.shortcode,
            amount=amount,
            phone=phone,
            bill_ref_number="" if is_till else account,
            first_name=first_name,
            middle_name=middle_name,
            last_name=last_name,
            originator_conversation_id=originator_conversation_id,
            transacted_at=now,
        )
        if registration:
            _queue_c2b_notice(
                payment, Delivery.Kind.C2B_VALIDATION if validating else Delivery.Kind.C2B_CONFIRMATION, now
            )
    logger.info("C2B payment %s of KES %s to %s", payment.receipt_number, amount, shortcode)
    _work_scheduled()
    return payment


def _queue_c2b_notice(payment: Payment, kind: str, due_at: datetime) -> None:
    registration = C2BRegistration.objects.filter(shortcode=payment.store_number).first()
    if registration is None:
        return
    copies = 1
    if kind == Delivery.Kind.C2B_CONFIRMATION and payment.kind == Payment.Kind.C2B:
        # The STK phones that lose or repeat their callback do the same to a menu payment's
        # confirmation (the money still shows in Pull Transactions and Transaction Status).
        delivery = PHONE_OUTCOMES.get(payment.phone, Outcome("0")).delivery
        copies = {StkPrompt.Delivery.LOST: 0, StkPrompt.Delivery.TWICE: 2}.get(delivery, 1)
    url = registration.validation_url if kind == Delivery.Kind.C2B_VALIDATION else registration.confirmation_url
    for _ in range(copies):
        Delivery.objects.create(
            kind=kind, url=url, body=json.dumps(c2b_body(payment, registration.version, kind)), due_at=due_at,
            payment=payment,
        )


def c2b_body(payment: Payment, version: str, kind: str) -> dict:
    """Every value a string; MSISDN hashed (v1) or masked (v2); no balance in validation."""
    phone = payment.phone
    msisdn = hashlib.sha256(phone.encode()).hexdigest() if version == "v1" else f"{phone[:4]} ***** {phone[-3:]}"
    balance = ""
    if kind == Delivery.Kind.C2B_CONFIRMATION:
        total = Payment.objects.filter(
            store_number=payment.store_number, status=Payment.Status.COMPLETED
        ).aggregate(total=Sum("amount"))["total"] or Decimal(0)
        balance = f"{total:.2f}"
    return {
        "TransactionType": "Buy Goods" if _is_till(payment.shortcode) else "Pay Bill",
        "TransID": payment.receipt_number,
        "TransTime": _daraja_time(payment.transacted_at),
        "TransAmount": f"{payment.amount:.2f}",
        "BusinessShortCode": payment.shortcode,
        "BillRefNumber": payment.bill_ref_number,
        "InvoiceNumber": "",
        "OrgAccountBalance": balance,
        "ThirdPartyTransID": payment.third_party_trans_id,
        "MSISDN": msisdn,
        "FirstName": payment.first_name,
        "MiddleName": payment.middle_name,
        "LastName": payment.last_name,
    }


def _is_till(number: str) -> bool:
    payable = payable_numbers().get(number)
    return bool(payable and payable[1])


def _finish_c2b_validation(delivery: Delivery, status_code: int | None, response_text: str) -> None:
    """The shop's answer decides; no usable answer in time → the registered ResponseType."""
    payment = delivery.payment
    registration = C2BRegistration.objects.filter(shortcode=payment.store_number).first()
    answer = None
    if status_code is not None and 200 <= status_code < 300:
        try:
            answer = json.loads(response_text)
        except ValueError:
            answer = None
    if isinstance(answer, dict) and "ResultCode" in answer:
        accepted = str(answer["ResultCode"]) == "0"
        third_party = str(answer.get("ThirdPartyTransID") or "")[:64]
    else:
        accepted = registration is None or registration.response_type == "Completed"
        third_party = ""
    now = timezone.now()
    with transaction.atomic():
        updated = Payment.objects.filter(pk=payment.pk, status=Payment.Status.VALIDATING).update(
            status=Payment.Status.COMPLETED if accepted else Payment.Status.CANCELLED,
            third_party_trans_id=third_party,
        )
        if updated and accepted:
            payment.refresh_from_db()
            _queue_c2b_notice(payment, Delivery.Kind.C2B_CONFIRMATION, now)


# --- Transaction Status ---------------------------------------------------------------------

def query_transaction_status(*, body: dict) -> dict:
    initiator = _text(body, "Initiator")
    _text(body, "SecurityCredential")
    if _text(body, "CommandID") != "TransactionStatusQuery":
        raise _invalid("CommandID")
    transaction_id = _text(body, "TransactionID", required=False)
    original_id = _text(body, "OriginalConversationID", required=False)
    if not (transaction_id or original_id):
        raise _invalid("TransactionID")
    party_a = _number_field(body, "PartyA")
    if _text(body, "IdentifierType") not in ("1", "2", "4"):
        raise _invalid("IdentifierType")
    result_url = _url_field(body, "ResultURL")
    _url_field(body, "QueueTimeOutURL")
    occasion = _text(body, "Occasion", required=False)

    now = timezone.now()
    originator_id, conversation_id = new_request_id(), _new_conversation_id(now)
    if transaction_id:
        payment = Payment.objects.filter(receipt_number=transaction_id).first()
    else:
        payment = Payment.objects.filter(
            Q(originator_conversation_id=original_id) | Q(prompt__checkout_request_id=original_id)
        ).first()
    if initiator != getattr(settings, "MPESA_INITIATOR_NAME", "testapi"):
        code, desc = 2001, RESULT_DESCRIPTIONS["2001"]
    elif payment is None or payment.status == Payment.Status.VALIDATING:
        # Unverified against real traffic: the reversal product's code for an unknown transaction.
        code, desc = "R000002", "The OriginalTransactionID is invalid."
    else:
        code, desc = 0, RESULT_DESCRIPTIONS["0"]
    result = {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": desc,
        "OriginatorConversationID": originator_id,
        "ConversationID": conversation_id,
        "TransactionID": _new_receipt_number(now),
    }
    if code == 0:
        finished = int(_daraja_time(payment.transacted_at))
        result["ResultParameters"] = {"ResultParameter": [
            {"Key": "DebitPartyName", "Value": f"{payment.phone} - {payment.first_name} {payment.last_name}".strip()},
            {"Key": "CreditPartyName", "Value": f"{party_a} - Comolor Simulated Merchant"},
            {"Key": "OriginatorConversationID", "Value": payment.originator_conversation_id},
            {"Key": "InitiatedTime", "Value": finished},
            {"Key": "DebitAccountType", "Value": "MMF Account For Customer"},
            {"Key": "DebitPartyCharges"},
            {"Key": "TransactionReason"},
            {"Key": "ReasonType", "Value": "Pay Bill Online" if payment.kind == Payment.Kind.STK else "Pay Bill"},
            {"Key": "TransactionStatus",
             "Value": "Completed" if payment.status == Payment.Status.COMPLETED else "Cancelled"},
            {"Key": "FinalisedTime", "Value": finished},
            {"Key": "Amount", "Value": float(payment.amount)},
            {"Key": "ConversationID", "Value": conversation_id},
            {"Key": "ReceiptNo", "Value": payment.receipt_number},
        ]}
    result["ReferenceData"] = {"ReferenceItem": {"Key": "Occasion", "Value": occasion}}
    Delivery.objects.create(
        kind=Delivery.Kind.RESULT, url=result_url, body=json.dumps({"Result": result}),
        due_at=now + timedelta(seconds=settings.DARAJA_SIM_CALLBACK_DELAY), payment=payment,
    )
    _work_scheduled()
    return {
        "OriginatorConversationID": originator_id,
        "ConversationID": conversation_id,
        "ResponseCode": "0",
        "ResponseDescription": "Accept the service request successfully.",
    }


# --- Pull Transactions ----------------------------------------------------------------------

def register_pull(*, body: dict) -> dict:
    shortcode = _number_field(body, "ShortCode")
    if shortcode not in _merchants() and shortcode not in payable_numbers():
        raise _invalid("ShortCode")
    if _text(body, "RequestType") != "Pull":
        raise _invalid("RequestType")
    nominated = _number_field(body, "NominatedNumber", re.compile(r"(?:0|254)[17]\d{8}"))
    callback_url = _url_field(body, "CallBackURL")
    _, created = PullRegistration.objects.get_or_create(
        shortcode=shortcode, defaults={"nominated_number": nominated, "callback_url": callback_url}
    )
    return {
        "ResponseRefID": new_request_id(),
        "ResponseStatus": "1000" if created else "1001",
        "ShortCode": shortcode,
        "ResponseDescription": "Shortcode Registered Successfully" if created else "Shortcode already Registered",
    }


def query_pull(*, body: dict) -> dict:
    """C2B and STK payments of a registered shortcode within the last 48 hours, a page of
    PULL_PAGE_SIZE per OffSetValue; "nothing" is HTTP 200 with ResponseCode 1001."""
    shortcode = _number_field(body, "ShortCode")
    window = {}
    for field in ("StartDate", "EndDate"):
        try:
            window[field] = datetime.strptime(_text(body, field), "%Y-%m-%d %H:%M:%S").replace(tzinfo=EAT)
        except ValueError:
            raise _invalid(field) from None
    offset = _text(body, "OffSetValue")
    if not offset.isdigit():
        raise _invalid("OffSetValue")
    nothing = {
        "ResponseRefID": new_request_id(),
        "ResponseCode": "1001",
        "ResponseMessage": "No records found or Organization Name not available",
    }
    if not PullRegistration.objects.filter(shortcode=shortcode).exists():
        return nothing
    start = max(window["StartDate"], timezone.now() - PULL_WINDOW)
    merchant = _merchants().get(shortcode)
    numbers = [shortcode, *(merchant.tills if merchant else ())]
    payments = Payment.objects.filter(
        Q(shortcode__in=numbers) | Q(store_number=shortcode),
        status=Payment.Status.COMPLETED,
        transacted_at__gte=start,
        transacted_at__lte=window["EndDate"],
    ).order_by("transacted_at", "pk")
    total = payments.count()
    page = int(offset)
    pages = math.ceil(total / PULL_PAGE_SIZE)
    if page >= pages:
        return nothing
    records = [
        {
            "transactionId": p.receipt_number,
            "trxDate": p.transacted_at.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "msisdn": int(p.phone),
            "sender": "",
            "transactiontype": "c2b-buy-goods-debit" if _is_till(p.shortcode) else "c2b-pay-bill-debit",
            "billreference": p.bill_ref_number,
            "amount": f"{p.amount:.2f}",
            "organizationname": "Comolor Simulated Merchant",
        }
        for p in payments[page * PULL_PAGE_SIZE:(page + 1) * PULL_PAGE_SIZE]
    ]
    return {
        "ResponseRefID": new_request_id(),
        "ResponseCode": "1000",
        "ResponseMessage": "Success",
        "TotalPages": pages,
        # A list inside a list, as the live sandbox sends it.
        "Response": [records],
    }


# --- delivering what is owed ----------------------------------------------------------------

def run_due_work(*, ignore_delays: bool = False) -> int:
    """Decide due prompts and POST due deliveries; → how many things were done.
    ignore_delays (tests): everything queued now, except prompts waiting for a person."""
    done = 0
    for _ in range(10):  # a validation answer queues a confirmation: go round until quiet
        done += decide_due_prompts(ignore_delays=ignore_delays)
        deliveries = Delivery.objects.filter(state=Delivery.State.QUEUED)
        if not ignore_delays:
            # Read the clock again: the prompts just decided queued callbacks due at that moment.
            deliveries = deliveries.filter(due_at__lte=timezone.now())
        due = list(deliveries.values_list("pk", flat=True))
        if not due:
            break
        for delivery_id in due:
            done += _send_delivery(delivery_id)
    return done


def decide_due_prompts(*, ignore_delays: bool = False) -> int:
    """The customers answer: each due prompt gets its planned outcome and its callbacks are queued,
    not sent (mpesa_storm delivers them itself, as a misbehaving network would)."""
    prompts = StkPrompt.objects.filter(decided_at__isnull=True)
    prompts = prompts.filter(waits_for_person=False) if ignore_delays else prompts.filter(decide_at__lte=timezone.now())
    return sum(_decide_prompt(prompt_id, result)
               for prompt_id, result in prompts.order_by("decide_at", "pk").values_list("pk", "planned_result"))


def next_due_at() -> datetime | None:
    times = [
        StkPrompt.objects.filter(decided_at__isnull=True).aggregate(at=Min("decide_at"))["at"],
        Delivery.objects.filter(state=Delivery.State.QUEUED).aggregate(at=Min("due_at"))["at"],
    ]
    times = [t for t in times if t is not None]
    return min(times) if times else None


def _send_delivery(delivery_id: int) -> bool:
    """POST one delivery, at most once, holding no transaction or lock while it is in flight."""
    claimed = Delivery.objects.filter(pk=delivery_id, state=Delivery.State.QUEUED).update(
        state=Delivery.State.SENDING
    )
    if not claimed:
        return False
    delivery = Delivery.objects.select_related("payment").get(pk=delivery_id)
    is_validation = delivery.kind == Delivery.Kind.C2B_VALIDATION
    timeout = settings.DARAJA_SIM_VALIDATION_TIMEOUT if is_validation else CALLBACK_TIMEOUT
    status_code, text, error = None, "", ""
    started = time.monotonic()
    try:
        response = requests.post(
            delivery.url, data=delivery.body.encode(), headers={"Content-Type": "application/json"}, timeout=timeout
        )
        status_code, text = response.status_code, response.text[:5000]
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    duration_ms = int((time.monotonic() - started) * 1000)
    delivery.state = Delivery.State.FAILED if error else Delivery.State.SENT
    delivery.status_code, delivery.response_body, delivery.error = status_code, text, error
    delivery.sent_at = timezone.now()
    delivery.save(update_fields=["state", "status_code", "response_body", "error", "sent_at"])
    TrafficEntry.objects.create(
        direction=TrafficEntry.Direction.OUT, method="POST", url=delivery.url[:500],
        request_headers="Content-Type: application/json",
        request_body=json.dumps(json.loads(delivery.body), indent=2),
        status_code=status_code, response_body=text, error=error, duration_ms=duration_ms,
    )
    if error:
        logger.warning("simulator: %s to %s failed: %s", delivery.get_kind_display(), redact_url(delivery.url), error)
    if is_validation:
        _finish_c2b_validation(delivery, status_code, text)
    return True


def prune_traffic(*, keep: int = 5000) -> int:
    """Keep the traffic table to its newest `keep` rows: a dev server may run for weeks."""
    older = list(TrafficEntry.objects.order_by("-id").values_list("id", flat=True)[keep:keep + 1])
    return TrafficEntry.objects.filter(id__lte=older[0]).delete()[0] if older else 0


def _work_scheduled() -> None:
    """New work exists: wake the delivery thread, unless tests deliver by hand."""
    if settings.DARAJA_SIM_DELIVERY == "thread":
        wake_delivery_thread()
