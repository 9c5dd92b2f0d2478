"""The Daraja (M-Pesa API) client: one pooled HTTP session, a shared OAuth token, typed errors.

Every call is written to `DarajaCall`, redacted. Pushes are never retried: after a
`DarajaUnavailable` on a push the prompt may or may not have gone out, and only STK Query can tell.
Its subclass `DarajaNotReached` (`request_sent` False) is the exception: no connection was made or
no token could be had, so nothing was sent and the push may be tried again.
Token, query and status calls may be retried once.
"""

import base64
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import requests
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils import timezone
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from comolor.logging import redact, redact_payload
from mpesa.conf import BUY_GOODS_ONLINE, PAYBILL_ONLINE, MpesaConfig, callback_url_problems, mpesa_config
from mpesa.models import DarajaCall
from mpesa.phone import InvalidPhone, normalise_phone

logger = logging.getLogger("mpesa.daraja")

NAIROBI = ZoneInfo("Africa/Nairobi")
STK_MIN_AMOUNT, STK_MAX_AMOUNT = 1, 250_000
ACCOUNT_REFERENCE_MAX, TRANSACTION_DESC_MAX = 12, 13
# Mint a new token this long before Daraja says the old one expires.
TOKEN_EXPIRY_MARGIN = 60
RETRY_PAUSE = 0.5
# Seconds a refused key and secret are remembered before Daraja is asked again.
REFUSAL_MEMORY = 10

# Daraja's per-product codes for "Invalid Access Token" (plus Pull's 401.001).
INVALID_TOKEN_CODES = {"404.001.03", "400.003.01", "401.002.01", "401.001"}


class DarajaError(Exception):
    """Daraja refused or failed a call. `message` is in plain words; the rest is Daraja's own."""

    def __init__(self, message: str, *, error_code: str = "", error_message: str = "",
                 request_id: str = "", http_status: int | None = None):
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id
        self.http_status = http_status


class DarajaAuthError(DarajaError):
    """Wrong consumer key/secret, passkey, token or API product: an operator must fix settings."""


class DarajaRequestError(DarajaError):
    """Daraja (or this client, before sending) refused the request itself; nothing was done."""


class DarajaBusy(DarajaError):
    """The customer's phone already has an M-Pesa session open; try again in a minute."""


class DarajaRateLimited(DarajaError):
    """Too many requests (spike arrest, quota or HTTP 429); slow down."""


class DarajaUnavailable(DarajaError):
    """No usable answer: network error, timeout, 5xx or a gateway's HTML page. On a push the
    outcome is unknown: never push again, resolve it by STK Query."""

    # Whether the request may have reached Daraja. Only then is a push's outcome unknown.
    request_sent = True


class DarajaNotReached(DarajaUnavailable):
    """The request was never sent: no connection could be made (refused, no DNS, connect timeout)
    or, for a push, no access token could be had. Nothing happened at Daraja; a push may be sent
    again."""

    request_sent = False


@dataclass(frozen=True)
class StkPushResult:
    merchant_request_id: str
    checkout_request_id: str
    response_code: str
    response_description: str
    customer_message: str


@dataclass(frozen=True)
class StkQueryResult:
    checkout_request_id: str
    pending: bool
    # The final ResultCode (0 = paid); None while pending or when Daraja sends a non-numeric code
    # such as "SFC_IC0003" (then read raw["ResultCode"]).
    result_code: int | None
    result_desc: str
    raw: dict = field(repr=False)


@dataclass(frozen=True)
class AcceptedResult:
    """Daraja accepted an asynchronous request (C2B register/simulate, Transaction Status)."""

    originator_conversation_id: str
    conversation_id: str
    response_code: str
    response_description: str
    raw: dict = field(repr=False)


@dataclass(frozen=True)
class PullRegisterResult:
    already_registered: bool
    response_status: str
    response_description: str
    raw: dict = field(repr=False)


@dataclass(frozen=True)
class PullQueryResult:
    records: list[dict]
    total_pages: int | None
    raw: dict = field(repr=False)


def daraja_timestamp(moment: datetime | None = None) -> str:
    """YYYYMMDDHHmmss in Nairobi time, as Daraja expects whatever the server's zone."""
    return (moment or timezone.now()).astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


class _RecentConnectionsOnly:
    """A pooled connection idle longer than MPESA_CONNECTION_IDLE_SECONDS is reconnected before use.

    A server closes a keep-alive connection left idle past its own limit (Apache and our gunicorn:
    5 s). A push sent on it just as it closes is reset, and whether the prompt went out is unknown:
    the sale waits for STK Query. Seen in the storm, one push in 2,000.
    """

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        idle_since = getattr(conn, "comolor_idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > settings.MPESA_CONNECTION_IDLE_SECONDS:
            conn.close()
        return conn

    def _put_conn(self, conn):
        if conn is not None:
            conn.comolor_idle_since = time.monotonic()
        super()._put_conn(conn)


class _HTTPPool(_RecentConnectionsOnly, HTTPConnectionPool):
    pass


class _HTTPSPool(_RecentConnectionsOnly, HTTPSConnectionPool):
    pass


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class DarajaClient:
    def __init__(self, config: MpesaConfig | None = None):
        # None: read settings on every call, so one process-wide client follows setting changes.
        self._config = config
        self.session = requests.Session()
        adapter = _Adapter(pool_connections=4, pool_maxsize=32)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    @property
    def config(self) -> MpesaConfig:
        return self._config or mpesa_config()

    # --- OAuth ---------------------------------------------------------------------------

    def _token_key(self, config: MpesaConfig) -> str:
        # Keyed by Daraja address and consumer key: each app has its own token, and so does the
        # simulator, so switching environments never sends one system's token to another.
        digest = hashlib.sha256(f"{config.base_url}|{config.consumer_key}".encode()).hexdigest()[:24]
        return f"mpesa:token:{digest}"

    def access_token(self, *, refused: str | None = None, fresh: bool = False) -> str:
        """The shared token, minted by one caller while the others wait for it.

        refused: the token Daraja just called invalid; a new one is minted unless another caller
        already replaced it. fresh=True always mints (to test the credentials)."""
        config = self.config
        key = self._token_key(config)
        lock_key = key + ":lock"
        per_try = config.connect_timeout + config.read_timeout
        deadline = time.monotonic() + 2 * per_try + 5

        def usable(token):
            return token and token != refused and not fresh

        while True:
            token = cache.get(key)
            if usable(token):
                return token
            refusal = None if fresh else cache.get(key + ":refused")
            if refusal:
                raise DarajaAuthError(refusal)
            # cache.add is atomic (locmem, Redis, database): exactly one caller mints at a time.
            if cache.add(lock_key, "minting", timeout=int(2 * per_try + RETRY_PAUSE + 5)):
                try:
                    token = cache.get(key)
                    if usable(token):
                        return token
                    try:
                        token, expires_in = self._mint_token(config)
                    except DarajaAuthError as error:
                        # Remembered briefly, so the callers waiting here do not each hammer Daraja
                        # with the same refused key and secret.
                        cache.set(key + ":refused", error.message, timeout=REFUSAL_MEMORY)
                        raise
                    margin = TOKEN_EXPIRY_MARGIN if expires_in > 2 * TOKEN_EXPIRY_MARGIN else expires_in / 2
                    lifetime = expires_in - margin
                    cache.set(key, token, timeout=max(int(lifetime), 1))
                    return token
                finally:
                    cache.delete(lock_key)
            if time.monotonic() > deadline:
                raise DarajaUnavailable(
                    "Waited too long for another process to get a Daraja access token; try again."
                )
            time.sleep(0.05)

    def _mint_token(self, config: MpesaConfig) -> tuple[str, int]:
        if not config.consumer_key or not config.consumer_secret:
            raise DarajaAuthError(
                "MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET are not set: copy them from your app on "
                "developer.safaricom.co.ke."
            )
        for attempt in (1, 2):
            try:
                body = self._call(
                    config, "GET", "/oauth/v1/generate", params={"grant_type": "client_credentials"},
                    auth=(config.consumer_key, config.consumer_secret), operation="token",
                )
                break
            except DarajaUnavailable:
                if attempt == 2:
                    raise
                time.sleep(RETRY_PAUSE)
        token = body.get("access_token")
        try:
            expires_in = int(float(body.get("expires_in")))  # a string on real Daraja, a number in its docs
        except (TypeError, ValueError):
            expires_in = 0
        if not token or expires_in <= 0:
            raise DarajaUnavailable(
                "Daraja's token answer had no access_token or expires_in.", http_status=200,
            )
        return str(token), expires_in

    # --- Transport -----------------------------------------------------------------------

    def _authorised_post(self, config: MpesaConfig, path: str, payload: dict, *, operation: str) -> dict:
        token = self._token_for(operation)
        try:
            return self._call(config, "POST", path, json=payload, token=token, operation=operation)
        except DarajaAuthError as error:
            if error.error_code not in INVALID_TOKEN_CODES:
                raise
            # Daraja turned the request away at its gateway, so nothing was done and sending it
            # again (even a push) with a fresh token cannot double anything.
            token = self._token_for(operation, refused=token)
            return self._call(config, "POST", path, json=payload, token=token, operation=operation)

    def _token_for(self, operation: str, *, refused: str | None = None) -> str:
        """A token for a call that has not been sent: if none can be had, the call never went out."""
        try:
            return self.access_token(refused=refused)
        except DarajaUnavailable as error:
            # However the token request failed (even after it was sent), the call itself never was.
            raise DarajaNotReached(
                f"No Daraja access token for the {operation}, so it was not sent: {error.message}",
                error_code=error.error_code, error_message=error.error_message, request_id=error.request_id,
                http_status=error.http_status,
            ) from error

    def _call(self, config: MpesaConfig, method: str, path: str, *, operation: str, json=None,
              params=None, auth=None, token=None) -> dict:
        url = config.base_url + path
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.monotonic()
        response = None
        body = None
        outcome = "failed"
        try:
            try:
                response = self.session.request(
                    method, url, json=json, params=params, auth=auth, headers=headers,
                    timeout=(config.connect_timeout, config.read_timeout),
                )
            except requests.ConnectTimeout as exc:
                raise DarajaNotReached(
                    f"Daraja did not accept a connection for the {operation} within {config.connect_timeout:g} s."
                ) from exc
            except requests.Timeout as exc:
                raise DarajaUnavailable(
                    f"Daraja did not answer the {operation} within {config.read_timeout:g} s."
                ) from exc
            except requests.RequestException as exc:
                # Refused, unresolvable or unconnectable: nothing was sent. A connection dropped
                # once the request was on its way (or anything else) leaves the outcome unknown.
                error_class = DarajaNotReached if _never_connected(exc) else DarajaUnavailable
                raise error_class(
                    f"Could not reach Daraja at {config.base_url} for the {operation}: {_reason(exc)}."
                ) from exc
            body = _json_body(response)
            if response.status_code == 200 and isinstance(body, dict) and "errorCode" not in body:
                outcome = "ok"
                return body
            raise _error_from_response(response, body, operation=operation, config=config)
        except DarajaError as error:
            outcome = f"{type(error).__name__}: " + " ".join(filter(None, (error.error_code, error.message)))
            raise
        finally:
            self._record_call(
                path=path, method=method, started=started, response=response, request_body=json,
                response_body=body, outcome=outcome,
            )

    def _record_call(self, *, path, method, started, response, request_body, response_body, outcome):
        duration_ms = int((time.monotonic() - started) * 1000)
        if response is not None and response_body is None:
            response_body = {"text": redact(response.text[:500])}
        recorded_response = redact_payload(response_body) if response_body is not None else None
        request_id = ""
        if isinstance(response_body, dict):
            request_id = str(
                response_body.get("requestId") or response_body.get("CheckoutRequestID")
                or response_body.get("OriginatorConversationID")
                or response_body.get("OriginatorCoversationID") or ""
            )[:80]
        try:
            # A savepoint: a failed log write must not break a caller's transaction.
            with transaction.atomic():
                DarajaCall.objects.create(
                    endpoint=path[:120], method=method, duration_ms=duration_ms,
                    status_code=response.status_code if response is not None else None,
                    request_id=request_id, outcome=redact(outcome)[:200],
                    request_body=redact_payload(request_body) if request_body is not None else None,
                    response_body=recorded_response,
                )
        except DatabaseError:
            # The payment matters more than its log row: say so in the log and carry on.
            logger.exception("could not record Daraja call %s %s (%s)", method, path, outcome)
        logger.info("daraja %s %s → %s in %d ms: %s", method, path,
                    response.status_code if response is not None else "no answer", duration_ms, outcome)

    # --- M-Pesa Express (STK) ------------------------------------------------------------

    def stk_push(self, *, phone: str, amount: int, account_reference: str, description: str,
                 callback_url: str, shortcode: str | None = None, party_b: str | None = None,
                 transaction_type: str = PAYBILL_ONLINE) -> StkPushResult:
        """Send the payment prompt to the customer's phone. Never retried: see the module doc."""
        config = self.config
        shortcode = _digits(shortcode or config.shortcode, "shortcode")
        if transaction_type == PAYBILL_ONLINE:
            if party_b and str(party_b) != shortcode:
                raise DarajaRequestError(
                    f"A paybill push pays the paybill itself ({shortcode}), not {party_b}: for a till "
                    "use CustomerBuyGoodsOnline with the store number as shortcode and the till as PartyB."
                )
            party_b = shortcode
        elif transaction_type == BUY_GOODS_ONLINE:
            if not party_b:
                raise DarajaRequestError(
                    "A till (Buy Goods) push needs the till number as PartyB; the shortcode is the store number."
                )
            party_b = _digits(party_b, "till number")
        else:
            raise DarajaRequestError(
                f"TransactionType {transaction_type!r}: use {PAYBILL_ONLINE} (paybill) or {BUY_GOODS_ONLINE} (till)."
            )
        try:
            msisdn = normalise_phone(phone)
        except InvalidPhone as exc:
            raise DarajaRequestError(str(exc)) from exc
        amount = _whole_shillings(amount)
        account_reference = str(account_reference).strip()
        if not account_reference or len(account_reference) > ACCOUNT_REFERENCE_MAX:
            raise DarajaRequestError(
                f"The account reference {account_reference!r} must be 1 to {ACCOUNT_REFERENCE_MAX} characters "
                "(it is shown on the customer's phone)."
            )
        description = str(description).strip() or "Payment"
        if len(description) > TRANSACTION_DESC_MAX:
            raise DarajaRequestError(
                f"The description {description!r} is longer than Daraja's {TRANSACTION_DESC_MAX} characters."
            )
        self._refuse_bad_callback(callback_url, config)
        if not config.passkey:
            raise DarajaAuthError("MPESA_PASSKEY is not set: STK pushes need the passkey Safaricom sent you.")
        # One timestamp for both fields: Daraja rebuilds the password from it byte for byte.
        timestamp = daraja_timestamp()
        payload = {
            "BusinessShortCode": int(shortcode),
            "Password": stk_password(shortcode, config.passkey, timestamp),
            "Timestamp": timestamp,
            "TransactionType": transaction_type,
            "Amount": amount,
            "PartyA": msisdn,
            "PartyB": party_b,
            "PhoneNumber": msisdn,
            "CallBackURL": callback_url,
            "AccountReference": account_reference,
            "TransactionDesc": description,
        }
        body = self._authorised_post(config, "/mpesa/stkpush/v1/processrequest", payload, operation="STK push")
        if str(body.get("ResponseCode")) != "0" or not body.get("CheckoutRequestID"):
            raise DarajaRequestError(
                f"Daraja did not accept the push: {body.get('ResponseDescription') or body}.",
                error_code=str(body.get("ResponseCode", "")),
                error_message=str(body.get("ResponseDescription", "")), http_status=200,
            )
        return StkPushResult(
            merchant_request_id=str(body.get("MerchantRequestID", "")),
            checkout_request_id=str(body["CheckoutRequestID"]),
            response_code=str(body["ResponseCode"]),
            response_description=str(body.get("ResponseDescription", "")),
            customer_message=str(body.get("CustomerMessage", "")),
        )

    def stk_query(self, *, checkout_request_id: str, shortcode: str | None = None) -> StkQueryResult:
        """Ask how a push ended. Pending while the customer still has the prompt open."""
        config = self.config
        shortcode = _digits(shortcode or config.shortcode, "shortcode")
        timestamp = daraja_timestamp()
        payload = {
            "BusinessShortCode": shortcode,
            "Password": stk_password(shortcode, config.passkey, timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        }
        try:
            body = self._retry_once(
                lambda: self._authorised_post(config, "/mpesa/stkpushquery/v1/query", payload, operation="STK query")
            )
        except DarajaBusy as error:
            if not _is_still_processing(error.error_message):
                raise
            # 500.001.1001 "The transaction is being processed": the customer has not answered yet.
            return StkQueryResult(checkout_request_id, True, None, error.error_message,
                                  {"errorCode": error.error_code, "errorMessage": error.error_message,
                                   "requestId": error.request_id})
        raw_code = str(body.get("ResultCode", "")).strip()
        desc = str(body.get("ResultDesc", ""))
        if str(body.get("ResponseCode", "0")) != "0" or raw_code == "":
            raise DarajaRequestError(
                f"Daraja could not look up {checkout_request_id}: {body.get('ResponseDescription') or body}.",
                error_code=str(body.get("ResponseCode", "")),
                error_message=str(body.get("ResponseDescription", "")), http_status=200,
            )
        # 4999 "still under processing" is reported by some integrators instead of the 500 above.
        if raw_code == "4999":
            return StkQueryResult(checkout_request_id, True, None, desc, body)
        result_code = int(raw_code) if raw_code.lstrip("-").isdigit() else None
        return StkQueryResult(checkout_request_id, False, result_code, desc, body)

    # --- C2B -----------------------------------------------------------------------------

    def register_c2b_urls(self, *, confirmation_url: str, validation_url: str, shortcode: str | None = None,
                          response_type: str | None = None, version: str | None = None) -> AcceptedResult:
        """Tell Daraja where to post payments made to the shortcode. One time only in production."""
        config = self.config
        shortcode = _digits(shortcode or config.shortcode, "shortcode")
        response_type = response_type or config.c2b_response_type
        if response_type not in ("Completed", "Cancelled"):
            raise DarajaRequestError(
                f"ResponseType {response_type!r}: Daraja takes exactly 'Completed' or 'Cancelled'."
            )
        for url in (confirmation_url, validation_url):
            self._refuse_bad_callback(url, config)
        payload = {
            "ShortCode": shortcode,
            "ResponseType": response_type,
            "ConfirmationURL": confirmation_url,
            "ValidationURL": validation_url,
        }
        version = _version(version or config.c2b_version)
        body = self._authorised_post(
            config, f"/mpesa/c2b/{version}/registerurl", payload, operation="C2B URL registration"
        )
        return _accepted(body, "register the C2B URLs")

    def c2b_simulate(self, *, amount: int, phone: str, bill_ref_number: str = "", shortcode: str | None = None,
                     command_id: str = PAYBILL_ONLINE, version: str | None = None) -> AcceptedResult:
        """Make a pretend customer payment (sandbox and simulator only)."""
        config = self.config
        if config.environment == "production":
            raise DarajaRequestError("C2B simulation exists only on the sandbox and the simulator, not in production.")
        if command_id not in (PAYBILL_ONLINE, BUY_GOODS_ONLINE):
            raise DarajaRequestError(f"CommandID {command_id!r}: use {PAYBILL_ONLINE} or {BUY_GOODS_ONLINE}.")
        shortcode = _digits(shortcode or config.shortcode, "shortcode")
        try:
            msisdn = normalise_phone(phone)
        except InvalidPhone as exc:
            raise DarajaRequestError(str(exc)) from exc
        payload = {
            "ShortCode": int(shortcode),
            "CommandID": command_id,
            "Amount": _whole_shillings(amount),
            "Msisdn": int(msisdn),
            # Buy Goods has no account number.
            "BillRefNumber": bill_ref_number if command_id == PAYBILL_ONLINE else None,
        }
        version = _version(version or config.c2b_version)
        body = self._authorised_post(config, f"/mpesa/c2b/{version}/simulate", payload, operation="C2B simulation")
        return _accepted(body, "simulate the C2B payment")

    # --- Transaction Status --------------------------------------------------------------

    def transaction_status(self, *, result_url: str, timeout_url: str, transaction_id: str = "",
                           original_conversation_id: str = "", party_a: str | None = None,
                           identifier_type: str = "4", remarks: str = "Status check",
                           occasion: str = "") -> AcceptedResult:
        """Ask for a transaction's details by receipt or conversation id; the answer is posted to
        result_url later."""
        config = self.config
        if not transaction_id and not original_conversation_id:
            raise DarajaRequestError("Transaction Status needs an M-Pesa receipt or an OriginatorConversationID.")
        if not config.initiator_name or not config.security_credential:
            raise DarajaAuthError(
                "MPESA_INITIATOR_NAME and MPESA_SECURITY_CREDENTIAL must be set for Transaction Status: the "
                "API operator's name and its password encrypted with Safaricom's certificate."
            )
        for url in (result_url, timeout_url):
            self._refuse_bad_callback(url, config)
        payload = {
            "Initiator": config.initiator_name,
            "SecurityCredential": config.security_credential,
            "CommandID": "TransactionStatusQuery",
            "TransactionID": transaction_id,
            "OriginalConversationID": original_conversation_id,
            "PartyA": _digits(party_a or config.shortcode, "PartyA"),
            "IdentifierType": str(identifier_type),
            "ResultURL": result_url,
            "QueueTimeOutURL": timeout_url,
            "Remarks": remarks[:100] or "Status check",
            "Occasion": occasion[:100],
        }
        body = self._retry_once(lambda: self._authorised_post(
            config, "/mpesa/transactionstatus/v1/query", payload, operation="Transaction Status"))
        return _accepted(body, "check the transaction status")

    # --- Pull Transactions ---------------------------------------------------------------

    def pull_register(self, *, nominated_number: str, callback_url: str,
                      shortcode: str | None = None) -> PullRegisterResult:
        """One-time registration of a production shortcode for Pull Transactions."""
        config = self.config
        self._refuse_bad_callback(callback_url, config)
        try:
            nominated = normalise_phone(nominated_number)
        except InvalidPhone as exc:
            raise DarajaRequestError(f"Nominated number: {exc}") from exc
        payload = {
            "ShortCode": _digits(shortcode or config.shortcode, "shortcode"),
            "RequestType": "Pull",
            "NominatedNumber": "0" + nominated[3:],
            "CallBackURL": callback_url,
        }
        body = self._authorised_post(config, "/pulltransactions/v1/register", payload, operation="Pull registration")
        status = str(body.get("ResponseStatus") or body.get("ResponseCode") or "")
        description = str(body.get("ResponseDescription") or body.get("ResponseMessage") or "")
        if status not in ("1000", "1001", "0"):
            raise DarajaRequestError(
                f"Daraja refused the Pull registration: {description or body}.",
                error_code=status, error_message=description, http_status=200,
            )
        return PullRegisterResult(status == "1001", status, description, body)

    def pull_query(self, *, start: datetime, end: datetime, offset: int = 0,
                   shortcode: str | None = None) -> PullQueryResult:
        """One page of C2B payments between start and end (Daraja keeps the last 48 hours)."""
        config = self.config
        if end <= start:
            raise DarajaRequestError("The Pull window's end must be after its start.")
        payload = {
            "ShortCode": _digits(shortcode or config.shortcode, "shortcode"),
            "StartDate": start.astimezone(NAIROBI).strftime("%Y-%m-%d %H:%M:%S"),
            "EndDate": end.astimezone(NAIROBI).strftime("%Y-%m-%d %H:%M:%S"),
            "OffSetValue": str(offset),
        }
        body = self._retry_once(lambda: self._authorised_post(
            config, "/pulltransactions/v1/query", payload, operation="Pull query"))
        code = str(body.get("ResponseCode", "")).strip()
        # 1001 comes with HTTP 200 both for an empty window and for a shortcode not registered
        # for Pull: "no records", never "imported nothing successfully".
        if code == "1001":
            return PullQueryResult([], 0, body)
        if code not in ("1000", "0", ""):
            message = body.get("ResponseMessage") or body.get("ResponseDescription") or body
            raise DarajaRequestError(f"Daraja refused the Pull query: {message}.", error_code=code,
                                     error_message=str(message), http_status=200)
        records = _flatten_records(body.get("Response", body.get("Transactions", [])))
        try:
            total_pages = int(body["TotalPages"]) if body.get("TotalPages") not in (None, "") else None
        except (TypeError, ValueError):
            total_pages = None
        return PullQueryResult(records, total_pages, body)

    # --- Helpers -------------------------------------------------------------------------

    @staticmethod
    def _retry_once(call):
        """For calls that are safe to repeat (queries): one more try after a network failure."""
        try:
            return call()
        except DarajaUnavailable:
            time.sleep(RETRY_PAUSE)
            return call()

    @staticmethod
    def _refuse_bad_callback(url: str, config: MpesaConfig) -> None:
        # Outside production only a malformed URL is certain to be refused; the sandbox's
        # tolerance of http, local hosts and words is undocumented, so the system check warns.
        strictness = "production" if config.environment == "production" else "simulator"
        problems = callback_url_problems(str(url), strictness)
        if problems:
            raise DarajaRequestError("Safaricom would refuse this callback URL: " + " ".join(problems))


_client: DarajaClient | None = None
_client_lock = threading.Lock()


def get_client() -> DarajaClient:
    """The process-wide client: one connection pool shared by every thread."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = DarajaClient()
    return _client


# --- Parsing -------------------------------------------------------------------------------

def _json_body(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        return None


def _never_connected(exc: requests.RequestException) -> bool:
    """True only when no connection was made, so the request cannot have been sent.

    requests wraps urllib3's MaxRetryError, whose `reason` is a NewConnectionError (refused,
    unreachable, DNS failure: NameResolutionError is a subclass) when connecting failed.
    """
    wrapped = exc.args[0] if exc.args else None
    reason = getattr(wrapped, "reason", wrapped)
    return isinstance(reason, NewConnectionError)


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "the connection was refused (is the address right, and is Daraja up?)"
    if "Name or service not known" in text or "NameResolutionError" in text or "getaddrinfo" in text:
        return "the host name does not resolve (check MPESA_BASE_URL and the internet connection)"
    return redact(text)[:200]


def _error_from_response(response: requests.Response, body, *, operation: str, config: MpesaConfig) -> DarajaError:
    status = response.status_code
    data = body if isinstance(body, dict) else {}
    code = str(data.get("errorCode", "")).strip()
    text = str(data.get("errorMessage", "")).strip()
    if body is None and operation == "token":
        # A refused key and secret come as an empty 400 whose reason phrase is the only message.
        text = response.reason or ""
    request_id = str(data.get("requestId", ""))
    ids = {"error_code": code, "error_message": text, "request_id": request_id, "http_status": status}
    lowered = text.lower()

    if operation == "token" and status in (400, 401, 403):
        return DarajaAuthError(
            f"Daraja refused the consumer key and secret (HTTP {status} {response.reason or ''}".rstrip() + "). "
            "Check MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET, and that they belong to this environment "
            f"({config.environment}, {config.base_url}): sandbox keys do not work on production and the "
            "other way round.", **ids,
        )
    if status == 429 or code in ("500.003.02", "500.003.03"):
        return DarajaRateLimited(
            f"Daraja is limiting how fast we call it ({text or 'too many requests'}); wait a moment and try again.",
            **ids,
        )
    if status in (404, 405) and not code:
        return DarajaRequestError(
            f"There is no Daraja {operation} service at {response.url.split('?')[0]} (HTTP {status}): "
            "check MPESA_BASE_URL and MPESA_ENVIRONMENT.", **ids,
        )
    if body is None or (not isinstance(body, dict)):
        is_page = "html" in response.headers.get("Content-Type", "").lower() or "<html" in response.text[:500].lower()
        kind = "a web page" if is_page else "something unreadable"
        return DarajaUnavailable(
            f"Daraja answered the {operation} with {kind} (HTTP {status}) instead of data: its gateway is "
            "having trouble. Try again shortly.", **ids,
        )
    if code in INVALID_TOKEN_CODES:
        return DarajaAuthError(f"Daraja refused the access token for the {operation} ({text}).", **ids)
    if code == "401.003.01" or "apiproduct" in lowered:
        return DarajaAuthError(
            f"The Daraja app is not allowed to use the {operation}: tick the product on the app at "
            "developer.safaricom.co.ke (for C2B, the version in MPESA_C2B_VERSION must match the product).",
            **ids,
        )
    if code.startswith(("404.001.04", "400.008")):
        return DarajaAuthError(f"Daraja refused how we authenticated the {operation} ({text}).", **ids)
    if code == "500.001.1001":
        if "lock subscriber" in lowered or _is_still_processing(text):
            return DarajaBusy(
                "The customer's phone already has an M-Pesa request open. Ask them to finish or cancel it, "
                "then try again in a minute.", **ids,
            )
        if "wrong credentials" in lowered:
            return DarajaAuthError(
                f"Daraja says the STK password is wrong: MPESA_PASSKEY does not belong to the shortcode used "
                f"({text}).", **ids,
            )
        if "merchant does not exist" in lowered:
            return DarajaRequestError(
                "Daraja does not know this shortcode. For a paybill use the paybill number; for a till use "
                "the store (head office) number as shortcode and the till as PartyB.", **ids,
            )
        # Any other 500.001.1001 is a definite refusal, not an outage.
        return DarajaRequestError(f"Daraja refused the {operation}: {text or code}.", **ids)
    if code == "500.003.1001" and "already registered" in lowered:
        return DarajaRequestError(
            "These C2B URLs are already registered for this shortcode. In production registration is "
            "one-time: to change the URLs, delete them on the M-PESA Org portal (URL Management) or ask "
            "apisupport@safaricom.co.ke, then register again.", **ids,
        )
    if code == "500.003.1001" and "duplicate notification" in lowered:
        return DarajaRequestError(
            "This shortcode's C2B URLs are registered on Safaricom's older broker platform; ask "
            f"apisupport@safaricom.co.ke to remove them, then register again ({text}).", **ids,
        )
    if status >= 500:
        detail = f" ({code} {text})".replace("( ", "(") if code or text else ""
        return DarajaUnavailable(f"Daraja failed the {operation}{detail}; try again shortly.", **ids)
    if code.startswith(("404.001.01", "404.003", "405")):
        return DarajaRequestError(
            f"Daraja has no such service at {config.base_url} ({code} {text}): check MPESA_BASE_URL.", **ids,
        )
    return DarajaRequestError(f"Daraja refused the {operation}: {_in_words(text) or text or code}.", **ids)


def _is_still_processing(error_message: str) -> bool:
    lowered = error_message.lower()
    return "being processed" in lowered or "under processing" in lowered


_FIELD_WORDS = {
    "phonenumber": "the phone number is not a valid Safaricom number",
    "amount": "the amount must be whole shillings between 1 and 250,000",
    "callbackurl": "the callback URL is not acceptable (public https, no spaces)",
    "businessshortcode": "the shortcode is not valid for this app",
    "accountreference": "the account reference is too long or has odd characters",
    "timestamp": "the timestamp is not valid (the server clock may be wrong)",
}


def _in_words(error_message: str) -> str:
    squashed = error_message.lower().replace(" ", "")
    for key, words in _FIELD_WORDS.items():
        if f"invalid{key}" in squashed or f"element{key}" in squashed:
            return f"{words} ({error_message})"
    return ""


def _accepted(body: dict, what: str) -> AcceptedResult:
    code = str(body.get("ResponseCode", "0"))
    description = str(body.get("ResponseDescription", ""))
    if code not in ("0", "00"):
        raise DarajaRequestError(f"Daraja would not {what}: {description or body}.", error_code=code,
                                 error_message=description, http_status=200)
    return AcceptedResult(
        # Daraja spells it "OriginatorCoversationID" on C2B answers.
        originator_conversation_id=str(
            body.get("OriginatorConversationID") or body.get("OriginatorCoversationID") or ""
        ),
        conversation_id=str(body.get("ConversationID", "")),
        response_code=code,
        response_description=description,
        raw=body,
    )


def _flatten_records(value) -> list[dict]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [record for item in value for record in _flatten_records(item)]
    return []


def _digits(value, what: str) -> str:
    text = str(value or "").strip()
    if not text.isdigit():
        raise DarajaRequestError(f"The {what} {text!r} must be a number (check MPESA_SHORTCODE / the M-Pesa account).")
    return text


def _whole_shillings(amount) -> int:
    if isinstance(amount, bool) or not isinstance(amount, (int, Decimal, float, str)):
        raise DarajaRequestError(f"The amount {amount!r} is not a number of shillings.")
    try:
        value = Decimal(str(amount).strip())
    except ArithmeticError:
        raise DarajaRequestError(f"The amount {amount!r} is not a number of shillings.") from None
    if value != value.to_integral_value():
        raise DarajaRequestError(f"M-Pesa takes whole shillings only: {amount} has cents.")
    value = int(value)
    if not STK_MIN_AMOUNT <= value <= STK_MAX_AMOUNT:
        raise DarajaRequestError(
            f"M-Pesa takes between KES {STK_MIN_AMOUNT} and KES {STK_MAX_AMOUNT:,} in one payment, not {value:,}."
        )
    return value


def _version(version: str) -> str:
    if version not in ("v1", "v2"):
        raise DarajaRequestError(f"C2B version {version!r}: use 'v1' or 'v2' (MPESA_C2B_VERSION).")
    return version
