"""Kenyan mobile numbers as cashiers type them, turned into the 2547XXXXXXXX form Daraja takes."""

import re

_SEPARATORS = re.compile(r"[\s\-]+")
# The nine digits after the country code: 7XXXXXXXX or 1XXXXXXXX (the newer 01xx prefixes).
_NATIONAL = re.compile(r"[17]\d{8}")


class InvalidPhone(ValueError):
    """The message is written for the cashier who typed the number."""


def normalise_phone(value: str) -> str:
    """07…, 01…, 7…, 1…, +254…, 254… (spaces and dashes allowed) → 2547…/2541…"""
    typed = str(value or "").strip()
    if not typed:
        raise InvalidPhone("Enter the customer's M-Pesa phone number, for example 0712 345 678.")
    digits = _SEPARATORS.sub("", typed)
    if digits.startswith("+"):
        if not digits.startswith("+254"):
            raise InvalidPhone(f"“{typed}” is not a Kenyan number: M-Pesa prompts go only to +254 numbers.")
        digits = digits[1:]
    if not digits.isdigit():
        raise InvalidPhone(f"“{typed}” is not a phone number: use digits only, for example 0712 345 678.")
    if digits.startswith("254"):
        national = digits[3:]
    elif digits.startswith("0"):
        national = digits[1:]
    else:
        national = digits
    if len(national) != 9:
        raise InvalidPhone(
            f"“{typed}” has the wrong number of digits: a Kenyan mobile number is 10 digits "
            "starting 07 or 01, like 0712 345 678."
        )
    if not _NATIONAL.fullmatch(national):
        raise InvalidPhone(
            f"“{typed}” is not a mobile number that can receive an M-Pesa prompt: "
            "use a number starting 07 or 01."
        )
    return "254" + national
