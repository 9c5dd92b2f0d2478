"""Log redaction: no full phone number, password, token or passkey reaches a log line."""

import logging
import re

from django.conf import settings

# Kenyan mobile numbers in every shape a customer or Daraja writes them.
_PHONE = re.compile(r"(?<!\d)(?:\+?254|0)?([17]\d{2})(\d{3})(\d{3})(?!\d)")
_SECRET_FIELD = re.compile(
    r"""(?ix)
    ("?(?:password|passkey|access_token|consumer_secret|consumersecret|securitycredential|
        initiatorpassword|secret|authorization)"?\s*[:=]\s*)("[^"]*"|'[^']*'|\S+)
    """
)
_BEARER = re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+")
# The per-request token of an STK callback URL, wherever a URL or a path is written out.
_STK_CALLBACK_TOKEN = re.compile(r"(?<=/stk/callback/)[A-Za-z0-9_\-]+")


def mask_phone(value: str) -> str:
    """2547XXXXXXXX → 2547•••••123: enough to recognise, not enough to reuse."""
    return _PHONE.sub(lambda m: f"{m.group(0)[:-9]}{m.group(1)[:1]}*****{m.group(3)}", value)


def redact(text: str) -> str:
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)
    text = _SECRET_FIELD.sub(lambda m: f"{m.group(1)}[redacted]", text)
    return mask_phone(redact_path_tokens(text))


def redact_path_tokens(text: str) -> str:
    """Hide the callback path secret and per-request tokens: Django logs paths (404, 405) and
    urllib3 logs the URLs it calls."""
    secret = getattr(settings, "MPESA_CALLBACK_TOKEN", "") if settings.configured else ""
    if secret:
        text = text.replace(secret, "[token]")
    return _STK_CALLBACK_TOKEN.sub("[token]", text)


# Keys of Daraja bodies whose whole value is a secret, a phone number or a URL with a path token.
_SECRET_KEYS = {
    "password", "passkey", "access_token", "consumer_secret", "securitycredential",
    "initiatorpassword", "authorization", "secret",
}
_PHONE_KEYS = {"partya", "phonenumber", "msisdn", "nominatednumber", "phone"}
_URL_KEYS = {"callbackurl", "resulturl", "queuetimeouturl", "confirmationurl", "validationurl"}
# A path segment this long made of token characters is an unguessable callback token.
_PATH_TOKEN = re.compile(r"(?<=/)[A-Za-z0-9_\-]{16,}(?=/|$)")


def redact_url(url: str) -> str:
    """Hide callback path tokens and query strings: a leaked token lets anyone forge callbacks."""
    path, _, query = str(url).partition("?")
    path = _PATH_TOKEN.sub("[token]", path)
    return f"{path}?[redacted]" if query else path


def redact_payload(value, key: str = ""):
    """A copy of a JSON body fit for a log table: secrets dropped, phones masked, tokens hidden."""
    lowered = key.lower()
    if isinstance(value, dict):
        return {k: redact_payload(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_payload(item, key) for item in value]
    if value is None or isinstance(value, bool):
        return value
    if lowered in _SECRET_KEYS:
        return "[redacted]"
    if lowered in _URL_KEYS:
        return redact_url(value)
    if lowered in _PHONE_KEYS:
        return mask_phone(str(value))
    if isinstance(value, str):
        return redact(value)
    return value


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # A traceback quotes values too (a database error's "Failing row contains (…)"); the
            # formatter writes exc_text as it is when it is set.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
