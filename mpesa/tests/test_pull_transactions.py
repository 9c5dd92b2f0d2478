"""Pull Transactions from the simulator over HTTP: a lost C2B confirmation recovered and matched
(T10), pages walked, nothing already in the ledger changed, the worker's rate limit, failures."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from mpesa import services
from mpesa.conf import callback_url
from mpesa.daraja import get_client
from mpesa.models import CallbackLog, DarajaCall, MpesaAccount, MpesaTransaction, StkRequest
from mpesa.simulator import services as simulator
from mpesa.simulator.models import Delivery
from mpesa.tests.factories import make_pending_sale, register_c2b_urls
from pos.models import Payment, Sale

LOST = "254700009001"  # the simulator never confirms this phone's payments to the shop


@pytest.fixture
def paybill(daraja_sim, settings, shop):
    """The demo shop's paybill, with C2B URLs and registered for Pull."""
    account = MpesaAccount.objects.create(shop=shop, shortcode=settings.MPESA_SHORTCODE)
    register_c2b_urls()
    get_client().pull_register(nominated_number="0722000000", callback_url=callback_url("c2b-confirmation"))
    daraja_sim.account = account
    return daraja_sim


@pytest.fixture
def sale(paybill, cashier, till, product):
    return make_pending_sale(cashier=cashier, till=till, product=product)


def mpesa_pull(*args) -> str:
    out = StringIO()
    call_command("mpesa_pull", *args, stdout=out)
    return out.getvalue()


def pull_calls() -> int:
    return DarajaCall.objects.filter(endpoint__endswith="/pulltransactions/v1/query").count()


def test_a_lost_confirmation_is_recovered_by_pull_and_pays_its_sale(paybill, sale, client):
    payment = paybill.send_c2b(amount=116, account="demo 0000001", phone=LOST)
    paybill.deliver()
    assert not MpesaTransaction.objects.exists()

    out = mpesa_pull("--hours", "2")

    assert "page 1 of 1, 1 record(s)" in out
    assert "1 added to the ledger (1 matched to a sale, 0 unmatched), 0 already there" in out
    tx = MpesaTransaction.objects.get()
    assert (tx.receipt_number, tx.source, tx.sale, tx.amount) == (payment.receipt_number, "pull", sale, 116)
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED

    # The confirmation turns up after all: a duplicate, nothing changes.
    late = simulator.c2b_body(payment, "v2", Delivery.Kind.C2B_CONFIRMATION)
    client.post(reverse("mpesa:c2b-confirmation"), data=json.dumps(late), content_type="application/json")
    assert "already in the ledger" in CallbackLog.objects.get(kind=CallbackLog.Kind.C2B_CONFIRMATION).error
    assert MpesaTransaction.objects.count() == 1 and Payment.objects.count() == 1


def test_pull_changes_nothing_already_in_the_ledger(paybill, sale):
    paybill.send_c2b(amount=116, account="DEMO-0000001")
    paybill.send_c2b(amount=40, account="DEMO-0000099", phone="254711000005")
    paybill.deliver()
    before = list(MpesaTransaction.objects.order_by("pk").values())

    out = mpesa_pull()

    assert "0 added to the ledger (0 matched to a sale, 0 unmatched), 2 already there" in out
    assert list(MpesaTransaction.objects.order_by("pk").values()) == before


def test_pull_walks_every_page_and_keeps_what_it_cannot_match(paybill, sale, shop, monkeypatch):
    monkeypatch.setattr(simulator, "PULL_PAGE_SIZE", 2)
    receipts = {paybill.send_c2b(amount=10 + n, account=f"DEMO-00000{n}9", phone=LOST).receipt_number
                for n in range(5)}
    paybill.deliver()

    out = mpesa_pull("--shop", "demo")

    assert [line for line in out.splitlines() if ": page" in line] == [
        f"{paybill.account.shortcode}: page 1 of 3, 2 record(s)",
        f"{paybill.account.shortcode}: page 2 of 3, 2 record(s)",
        f"{paybill.account.shortcode}: page 3 of 3, 1 record(s)",
    ]
    assert "5 added to the ledger (0 matched to a sale, 5 unmatched)" in out
    assert set(MpesaTransaction.objects.values_list("receipt_number", flat=True)) == receipts
    assert {p["receipt_number"] for p in services.list_unclaimed_payments(shop_id=shop.pk)} == receipts


def test_pull_gives_the_receipt_number_of_an_stk_payment_known_only_from_query(paybill, sale, cashier_client,
                                                                              settings):
    settings.MPESA_SWEEP_AFTER = 0
    cashier_client.post(reverse("mpesa:start-stk", args=[sale.pk]), data={"phone": LOST},
                        content_type="application/json")
    paybill.deliver()
    services.sweep_mpesa()
    tx = MpesaTransaction.objects.get()
    assert tx.receipt_number is None and tx.source == "stk_query"

    out = mpesa_pull()

    assert "1 gave the receipt number of an STK payment" in out
    tx.refresh_from_db()
    stk = StkRequest.objects.get()
    assert tx.receipt_number == stk.mpesa_receipt == Payment.objects.get().reference != ""
    assert MpesaTransaction.objects.count() == 1


def test_nothing_to_pull_is_said_in_words_and_is_not_a_failure(daraja_sim, settings, shop):
    MpesaAccount.objects.create(shop=shop, shortcode=settings.MPESA_SHORTCODE)  # not registered for Pull

    out = mpesa_pull()

    assert "no records (Daraja answers 1001 both for a quiet window and for a shortcode not registered" in out
    assert "Done: 1 shortcode(s), 1 page(s), 0 record(s)" in out


def test_a_pull_daraja_does_not_answer_fails_the_command(paybill, settings):
    settings.MPESA_BASE_URL = "http://127.0.0.1:8419/daraja"  # nothing listens here

    with pytest.raises(CommandError, match="Not every shortcode could be pulled.*Pull failed on page 1"):
        mpesa_pull()


@pytest.mark.parametrize("args, words", [
    (["--shop", "NOPE"], "No shop with code 'NOPE'"),
    (["--hours", "72"], "Daraja keeps the last 48 hours"),
])
def test_the_command_refuses_what_it_cannot_do_in_words(paybill, args, words):
    with pytest.raises(CommandError, match=words):
        mpesa_pull(*args)


def test_the_worker_pulls_each_account_at_most_every_interval(paybill, sale, settings):
    settings.MPESA_PULL_EVERY_SECONDS = 900
    paybill.send_c2b(amount=116, account="DEMO-0000001", phone=LOST)
    paybill.deliver()

    assert "1 added to the ledger (1 matched" in services.sweep_pull()
    paybill.account.refresh_from_db()
    assert paybill.account.last_pulled_at is not None
    calls = pull_calls()
    assert services.sweep_pull() == "" and pull_calls() == calls  # too soon: Daraja is not asked

    MpesaAccount.objects.filter(pk=paybill.account.pk).update(last_pulled_at=timezone.now() - timedelta(seconds=901))
    services.sweep_pull()
    assert pull_calls() == calls + 1
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and MpesaTransaction.objects.count() == 1


def test_a_failed_worker_pull_keeps_its_window_and_waits_before_trying_again(paybill, settings):
    settings.MPESA_BASE_URL = "http://127.0.0.1:8419/daraja"

    assert "1 failed" in services.sweep_pull()
    paybill.account.refresh_from_db()
    assert paybill.account.last_pulled_at is None  # the next pull still covers the last 48 hours
    assert services.sweep_pull() == ""  # backing off, not hammering a Daraja that is down
