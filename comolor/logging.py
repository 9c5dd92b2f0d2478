"""Log redaction: no full phone number, password, token or passkey reaches a log line."""

import logging
import re

# Kenyan mobile numbers in every shape a customer or Daraja writes them.
_PHONE = re.compile(r"(?<!\d)(?:\+?254|0)?([17]\d{2})(\d{3})(\d{3})(?!\d)")
_SECRET_FIELD = re.compile(
    r"""(?ix)
    ("?(?:password|passkey|access_token|consumer_secret|consumersecret|securitycredential|
        initiatorpassword|secret|authorization)"?\s*[:=]\s*)("[^"]*"|'[^']*'|\S+)
    """
)
_BEARER = re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+")


def mask_phone(value: str) -> str:
    """2547XXXXXXXX → 2547•••••123: enough to recognise, not enough to reuse."""
    return _PHONE.sub(lambda m: f"{m.group(0)[:-9]}{m.group(1)[:1]}*****{m.group(3)}", value)


def redact(text: str) -> str:
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)
    text = _SECRET_FIELD.sub(lambda m: f"{m.group(1)}[redacted]", text)
    return mask_phone(text)


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
