"""`manage.py mpesa_simulate_c2b` against the Daraja simulator."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from mpesa.simulator.models import Payment


def run(*args):
    out = StringIO()
    call_command("mpesa_simulate_c2b", *args, stdout=out)
    return out.getvalue()


def test_a_paybill_payment_with_an_account_number(daraja_sim):
    output = run("250", "--account", "S-000123", "--phone", "0711000001")
    assert "KES 250 payment to paybill 174379 account S-000123" in output
    payment = Payment.objects.get()
    assert (payment.amount, payment.bill_ref_number, payment.phone) == (250, "S-000123", "254711000001")


def test_a_till_payment_when_the_configured_account_is_a_till(daraja_sim, settings):
    settings.MPESA_SHORTCODE_TYPE, settings.MPESA_SHORTCODE, settings.MPESA_TILL_NUMBER = "till", "300300", "5123456"
    assert "payment to till 5123456" in run("99")
    assert Payment.objects.get().shortcode == "5123456"


def test_production_is_refused_in_words(daraja_sim, settings):
    settings.MPESA_ENVIRONMENT = "production"
    with pytest.raises(CommandError, match="not in production"):
        run("10")
