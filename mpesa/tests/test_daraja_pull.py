"""Pull Transactions against the Daraja simulator over HTTP."""

from datetime import timedelta

from django.utils import timezone

from mpesa.conf import callback_url
from mpesa.daraja import get_client
from mpesa.simulator.models import PullRegistration


def test_pull_register_then_again_reads_1001_as_already_registered(daraja_sim):
    first = get_client().pull_register(nominated_number="0722000000", callback_url=callback_url("c2b-confirmation"))
    again = get_client().pull_register(nominated_number="0722000000", callback_url=callback_url("c2b-confirmation"))
    assert (first.already_registered, first.response_status) == (False, "1000")
    assert (again.already_registered, again.response_status) == (True, "1001")
    assert PullRegistration.objects.get(shortcode="174379").nominated_number == "0722000000"


def test_pull_query_returns_the_window_s_payments_flattened(daraja_sim):
    get_client().pull_register(nominated_number="0722000000", callback_url=callback_url("c2b-confirmation"))
    daraja_sim.send_c2b(amount=116, account="S-1")
    daraja_sim.send_c2b(amount=50, account="S-2", phone="254711000001")
    daraja_sim.deliver()
    now = timezone.now()
    page = get_client().pull_query(start=now - timedelta(hours=1), end=now + timedelta(minutes=1))
    assert page.total_pages == 1
    assert sorted((r["billreference"], r["amount"]) for r in page.records) == [("S-1", "116.00"), ("S-2", "50.00")]
    assert all(len(r["transactionId"]) == 10 for r in page.records)


def test_an_empty_window_or_unregistered_shortcode_is_no_records(daraja_sim):
    now = timezone.now()
    unregistered = get_client().pull_query(start=now - timedelta(hours=1), end=now)
    assert (unregistered.records, unregistered.raw["ResponseCode"]) == ([], "1001")
    get_client().pull_register(nominated_number="0722000000", callback_url=callback_url("c2b-confirmation"))
    assert get_client().pull_query(start=now - timedelta(hours=1), end=now).records == []
