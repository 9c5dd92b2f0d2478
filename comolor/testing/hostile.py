"""Hypothesis settings and strategies for the hostile-input suites (issue 8; reliability.md T19–T24, T33, S4).

Bodies start from Daraja's real payloads (docs/daraja.md §4.3, §6.4) and are mutated field by field:
wrong types, odd numbers, nasty text, missing or extra keys; then encoded the ways a broken or hostile
sender might (UTF-16, a BOM, cut short, invalid UTF-8, nested thousands deep).
"""

import json
import os
from contextlib import contextmanager

from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# CI-sized: a few dozen examples per property. HOSTILE_EXAMPLES=1000 for a long hunt on a quiet machine.
HOSTILE = settings(
    max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "25")),
    # Each example is a request through Django and PostgreSQL: speed belongs to bench/, not here.
    deadline=None,
    # No .hypothesis folder in the working tree; a failure prints the example to reproduce it.
    database=None,
    # Fixtures are set up once per test and every example runs in a rolled-back transaction (below).
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def rolled_back():
    """Undo one example's writes, so every example starts from the fixtures' rows alone."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


SAFARICOM_IPS = ["196.201.214.200", "196.201.214.206", "196.201.213.114", "196.201.212.69"]

# Text that has broken parsers and databases: NUL (PostgreSQL text refuses it), a lone surrogate,
# number look-alikes in other scripts, markup, SQL, direction overrides, and plain long strings.
NASTY_TEXT = st.sampled_from([
    "", " ", "\x00", "A\x00B", "\ud800", "\udfff", "0", "-1", "116", "116.00", "116.001", " 116 ", "1e3",
    "1e400", "-0", "NaN", "nan", "Infinity", "-Infinity", "sNaN", "0x74", "١١٦", "１１６", "Ⅻ", "null", "true",
    "<script>alert(1)</script>", "'; DROP TABLE pos_sale; --", "../../etc/passwd", "\u202eKES", "\r\n", "\t",
    "%00", "😀" * 30, "A" * 300, "254708374149", "0712345678", "00010101000000", "99991231235959",
]) | st.text(max_size=30)
NASTY_NUMBERS = st.sampled_from([
    0, -0.0, 1, -1, 116, 116.0, 116.001, 115.999, 0.5, 1e-9, -116, 10**9, 10**12, 2**63, 2**64, 10**30, -(10**30),
    1e308, float("inf"), float("-inf"), float("nan"),
]) | st.integers() | st.floats()
SCALARS = st.none() | st.booleans() | NASTY_NUMBERS | NASTY_TEXT
JSON_VALUES = st.recursive(
    SCALARS, lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                                               max_size=4),
    max_leaves=10,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, prefix + (index,))


def _replaced(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    if new is _DELETE and not rest:
        del copy[head]
    else:
        copy[head] = _replaced(value[head], rest, new)
    return copy


_DELETE = object()


@st.composite
def mutated(draw, document, max_changes: int = 3):
    """`document` with one to `max_changes` changes: a value replaced (often by one of another
    type), a key or item deleted, a key added, or a value wrapped in a list or an object."""
    for _ in range(draw(st.integers(1, max_changes))):
        path = draw(st.sampled_from(list(_paths(document))))
        target = document
        for step in path:
            target = target[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "wrap", "stringify"]))
        if action == "delete" and path:
            document = _replaced(document, path, _DELETE)
        elif action == "add" and isinstance(target, dict):
            document = _replaced(document, path, {**target, draw(st.text(max_size=20)): draw(JSON_VALUES)})
        elif action == "wrap":
            document = _replaced(document, path, draw(st.sampled_from([[target], {"Value": target}])))
        elif action == "stringify" and not isinstance(target, (dict, list)):
            document = _replaced(document, path, str(target))
        else:
            document = _replaced(document, path, draw(JSON_VALUES))
    return document


@st.composite
def encoded(draw, document):
    """The document as bytes, mostly as a sender would write it, sometimes badly."""
    text = json.dumps(document, ensure_ascii=draw(st.booleans()), allow_nan=True)
    how = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "bom", "cut", "bad-byte", "latin-1"]))
    if how == "utf-16":
        return text.encode("utf-16", "surrogatepass")
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
    if how == "latin-1":
        return text.encode("latin-1", "replace")
    body = text.encode("utf-8", "surrogatepass")
    if how == "cut":
        return body[:draw(st.integers(0, max(len(body) - 1, 0)))]
    if how == "bad-byte":
        at = draw(st.integers(0, len(body)))
        return body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80", b"\x80\x80"])) + body[at:]
    return body


def deeply_nested(depth: int) -> bytes:
    """Valid JSON nested past Python's recursion limit."""
    return b'{"Body":' + b"[" * depth + b"]" * depth + b"}"


RAW_BODIES = st.one_of(
    st.binary(max_size=600),
    st.builds(deeply_nested, st.integers(500, 20_000)),
    JSON_VALUES.map(lambda value: json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")),
)
CONTENT_TYPES = st.sampled_from([
    "application/json", "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16",
    "application/json; charset=no-such-charset", "text/plain", "text/xml", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz", "multipart/form-data", "application/octet-stream", "", ";;;", "*/*",
])
# A header value as an HTTP server hands it over: ISO-8859-1 characters (WSGI), commas included.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)
IP_ADDRESSES = st.ip_addresses().map(str)
