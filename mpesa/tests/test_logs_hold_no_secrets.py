"""S7: a full STK flow and a full C2B flow through the simulator over HTTP, with every logger at
DEBUG, leave no full phone number, path token, bearer token, consumer secret, passkey or STK
password in any log line: neither in the records as logged nor in what the configured handlers write."""

import base64
import json
import logging
import re
import secrets

import pytest
from django.core.management import call_command
from django.urls import reverse

from mpesa.models import StkRequest
from mpesa.simulator.models import AccessToken, TrafficEntry
from mpesa.tests.factories import callback_paths, make_pending_sale
from pos.models import Sale

# Kenyan mobile numbers in full, as Daraja (2547…, 2541…) and people (07…, 01…) write them.
FULL_PHONE = re.compile(r"(?<!\d)(?:254[17]\d{8}|0[17]\d{8})(?!\d)")
CUSTOMER = "0712345678"


OUR_APPS = {"comolor", "inventory", "pos", "mpesa", "receipts"}


class Records(logging.Handler):
    """Our own code's records as logged, before any handler's filter has touched them: our code
    masks and leaves out secrets itself; the redaction filter is only the safety net."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        if record.name.split(".")[0] not in OUR_APPS:
            return
        self.lines.append(f"{record.name} {record.getMessage()}")
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


@pytest.fixture
def every_log(monkeypatch, caplog, settings):
    """Every logger at DEBUG; → (records as logged, lines the configured handlers wrote, caplog)."""
    root = logging.getLogger()
    loggers = [root] + [logger for logger in logging.root.manager.loggerDict.values()
                        if isinstance(logger, logging.Logger)]
    configured = {handler for logger in loggers for handler in logger.handlers
                  if handler.name in settings.LOGGING["handlers"]}
    assert configured, "settings.LOGGING is not in force"
    written = []
    for handler in configured:
        # The handler's own filters (redaction) have run by the time emit is called.
        monkeypatch.setattr(handler, "emit", lambda record, handler=handler: written.append(handler.format(record)))
        monkeypatch.setattr(handler, "level", logging.DEBUG)
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    records = Records()
    # First in line: it sees each record before any handler's filter has rewritten it.
    root.handlers.insert(0, records)
    yield records.lines, written, caplog
    root.handlers.remove(records)
    for logger, level in levels.items():
        logger.setLevel(level)


@pytest.fixture
def production_paths(settings):
    """Callback URLs as production has them: a neutral prefix and a long random path secret."""
    with callback_paths(settings, prefix="hooks", token=secrets.token_urlsafe(32)) as token:
        yield token


def secrets_in_play(settings, path_secret) -> dict[str, str]:
    """What must never be logged, read back from both sides once the flows are over."""
    found = {
        "the path secret MPESA_CALLBACK_TOKEN": path_secret,
        "the consumer secret": settings.MPESA_CONSUMER_SECRET,
        "the Basic credentials": base64.b64encode(
            f"{settings.MPESA_CONSUMER_KEY}:{settings.MPESA_CONSUMER_SECRET}".encode()).decode(),
        "the passkey": settings.MPESA_PASSKEY,
    }
    for n, token in enumerate(StkRequest.objects.values_list("callback_token", flat=True)):
        found[f"per-request callback token {n}"] = token
    for n, token in enumerate(AccessToken.objects.values_list("token", flat=True)):
        found[f"bearer token {n}"] = token
    for entry in TrafficEntry.objects.filter(url__contains="stkpush"):
        password = json.loads(entry.request_body or "{}").get("Password")
        if password:
            found[f"STK password of {entry.url}"] = password
    assert sum(name.startswith("bearer") for name in found) >= 1, "the flow never fetched a token"
    assert sum(name.startswith("STK password") for name in found) >= 2, "the flow sent no push and no query"
    return found


def assert_clean(lines: list[str], secret_values: dict[str, str], where: str):
    text = "\n".join(lines)
    assert text, f"nothing was logged ({where}): the capture is broken"
    for name, value in secret_values.items():
        assert value not in text, f"{name} is in the {where}:\n" + "\n".join(line for line in lines if value in line)
    phones = FULL_PHONE.findall(text)
    assert not phones, f"full phone numbers {phones} in the {where}:\n" + "\n".join(
        line for line in lines if FULL_PHONE.search(line))


@pytest.mark.django_db(transaction=True)
def test_a_full_stk_and_c2b_flow_logs_no_secret(daraja_sim, production_paths, every_log, settings, cashier_client,
                                                cashier, till, product):
    records, written, caplog = every_log
    settings.MPESA_STK_CONFIRM_BY_QUERY = True  # a success is confirmed by STK Query: both calls logged
    call_command("mpesa_register_urls", stdout=open("/dev/null", "w"))

    # STK: pushed from the till, paid on the phone, called back, confirmed, polled.
    sale = make_pending_sale(cashier=cashier, till=till, product=product)
    response = cashier_client.post(reverse("mpesa:start-stk", args=[sale.pk]), {"phone": CUSTOMER},
                                   content_type="application/json")
    assert response.status_code == 201, response.content
    daraja_sim.deliver()
    assert cashier_client.get(reverse("mpesa:check-payment", args=[sale.pk])).json()["status"] == "paid"

    # C2B: the customer pays the paybill with the sale's number; validation and confirmation come in.
    other = make_pending_sale(cashier=cashier, till=till, product=product)
    daraja_sim.send_c2b(amount=116, account=other.receipt_number, phone="254712345678", first_name="Amina")
    daraja_sim.deliver()

    # A callback with a wrong request token and one from outside the allowlist are logged too.
    settings.MPESA_ENVIRONMENT = "production"
    cashier_client.post(reverse("mpesa:stk-callback", kwargs={"token": "x" * 43}), b"{}",
                        content_type="application/json", REMOTE_ADDR="41.90.1.2")
    cashier_client.get(reverse("mpesa:c2b-confirmation"))  # 405: Django logs the path
    settings.MPESA_ENVIRONMENT = "simulator"

    assert Sale.objects.get(pk=sale.pk).status == Sale.Status.COMPLETED
    found = secrets_in_play(settings, production_paths)
    assert_clean(written, found, "lines the configured handlers wrote")
    assert_clean(caplog.text.splitlines(), found, "lines pytest's caplog captured")
    assert_clean(records, found, "records our code logged")


@pytest.mark.django_db
def test_a_traceback_is_redacted_like_the_message(every_log, production_paths):
    """A database error quotes the row it refused ("Failing row contains (…)"): the traceback a
    handler writes is redacted as the message is."""
    _, written, caplog = every_log
    try:
        raise ValueError(f"Failing row contains (254712345678, /hooks/{production_paths}/c2b/confirmation, "
                         "/stk/callback/" + "t" * 43 + ").")
    except ValueError:
        logging.getLogger("mpesa.services").exception("processing callback 7 failed; the sweep will retry it")

    for lines, where in ((written, "configured handlers"), (caplog.text.splitlines(), "caplog")):
        text = "\n".join(lines)
        assert "Failing row contains (2547*****678, /hooks/[token]/c2b/confirmation, /stk/callback/[token])." in text
        assert production_paths not in text and "t" * 43 not in text, where
