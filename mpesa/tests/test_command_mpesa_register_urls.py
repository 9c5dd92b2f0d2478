"""`manage.py mpesa_register_urls` against the Daraja simulator."""

import importlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import clear_url_caches

import comolor.urls
import mpesa.urls

from mpesa.conf import callback_url
from mpesa.models import DarajaCall, MpesaAccount
from mpesa.simulator.models import C2BRegistration
from pos.tests.factories import ShopFactory


def run(*args):
    out = StringIO()
    call_command("mpesa_register_urls", *args, stdout=out)
    return out.getvalue()


def test_without_shop_accounts_the_configured_shortcode_is_registered(daraja_sim):
    output = run()
    assert "174379: registered" in output
    registration = C2BRegistration.objects.get()
    assert (registration.shortcode, registration.confirmation_url, registration.validation_url) == (
        "174379", callback_url("c2b-confirmation"), callback_url("c2b-validation"))


def test_every_active_shop_account_is_registered_once(daraja_sim, settings):
    settings.DARAJA_SIM_EXTRA_SHORTCODES = ["600100"]
    for code, shortcode, active in [("A", "174379", True), ("B", "600100", True), ("C", "174379", True),
                                    ("D", "600999", False)]:
        MpesaAccount.objects.create(shop=ShopFactory(code=code), shortcode=shortcode, is_active=active)
    run("--c2b-version", "v1", "--response-type", "Cancelled")
    assert sorted(C2BRegistration.objects.values_list("shortcode", "version", "response_type")) == [
        ("174379", "v1", "Cancelled"), ("600100", "v1", "Cancelled")]
    assert DarajaCall.objects.filter(endpoint="/mpesa/c2b/v1/registerurl").count() == 2


def test_shops_without_an_account_of_their_own_get_the_configured_shortcode_registered_too(daraja_sim, settings):
    settings.DARAJA_SIM_EXTRA_SHORTCODES = ["600100"]
    MpesaAccount.objects.create(shop=ShopFactory(code="A"), shortcode="600100")
    ShopFactory(code="B")  # sells through MPESA_SHORTCODE, as its STK prompts do
    run()
    assert sorted(C2BRegistration.objects.values_list("shortcode", flat=True)) == ["174379", "600100"]


def test_a_shortcode_daraja_refuses_fails_the_command_after_trying_the_others(daraja_sim):
    out = StringIO()
    with pytest.raises(CommandError, match="1 of 2 shortcode"):
        call_command("mpesa_register_urls", "--shortcode", "999999", "--shortcode", "174379", stdout=out)
    assert "999999: not registered" in out.getvalue()
    assert C2BRegistration.objects.filter(shortcode="174379").exists()


def test_production_refuses_urls_safaricom_would_refuse(daraja_sim, settings):
    settings.MPESA_ENVIRONMENT = "production"
    settings.MPESA_CALLBACK_BASE_URL = "http://pos.duka.co.ke"
    with pytest.raises(CommandError) as refused:
        run("--yes")
    assert "nothing was registered" in str(refused.value)
    assert "uses http" in str(refused.value) and "'mpesa'" in str(refused.value)
    assert not DarajaCall.objects.exists()


@pytest.fixture
def neutral_callback_prefix(settings):
    """Production-grade callback paths: the URLconf is rebuilt from MPESA_CALLBACK_PREFIX."""
    original = settings.MPESA_CALLBACK_PREFIX, settings.MPESA_ENVIRONMENT
    settings.MPESA_CALLBACK_PREFIX = "hooks"
    _rebuild_urls()
    yield
    # Rebuilt with the settings every other test expects (the simulator is routed by environment).
    settings.MPESA_CALLBACK_PREFIX, settings.MPESA_ENVIRONMENT = original
    _rebuild_urls()


def _rebuild_urls():
    importlib.reload(mpesa.urls)
    importlib.reload(comolor.urls)
    clear_url_caches()


def test_production_explains_the_one_time_rule_and_waits_for_yes(daraja_sim, settings, neutral_callback_prefix):
    settings.MPESA_ENVIRONMENT = "production"
    settings.MPESA_CALLBACK_BASE_URL = "https://pos.duka.co.ke"
    with pytest.raises(CommandError) as waiting:
        run()
    assert "registers C2B URLs ONCE" in str(waiting.value) and "--yes" in str(waiting.value)
    assert not DarajaCall.objects.exists()

    output = run("--yes")
    assert "https://pos.duka.co.ke/hooks/c2b/confirmation" in output
    assert "174379: registered" in output
    assert C2BRegistration.objects.get().confirmation_url == "https://pos.duka.co.ke/hooks/c2b/confirmation"


def test_registering_again_in_production_says_how_to_change_the_urls(daraja_sim, settings, neutral_callback_prefix):
    settings.MPESA_ENVIRONMENT, settings.DARAJA_SIM_MODE = "production", "production"
    settings.MPESA_CALLBACK_BASE_URL = "https://pos.duka.co.ke"
    run("--yes")
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("mpesa_register_urls", "--yes", stdout=out)
    assert "174379: not registered: These C2B URLs are already registered" in out.getvalue()
    assert "URL Management" in out.getvalue()
