"""Test helpers: the simulator over real HTTP (Django's live server), with its asynchronous
work run when the test says so instead of after real delays.

    def test_paid_sale_completes(daraja_sim, ...):
        result = get_client().stk_push(...)   # MPESA_BASE_URL points at the live server
        daraja_sim.deliver()                  # the callback is POSTed to the shop now
"""

from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.cache import cache

from . import services
from .models import Delivery, Payment, StkPrompt, TrafficEntry


def deliver_callbacks_now() -> int:
    """Decide every open prompt (except those waiting for a person) and POST every queued
    callback now, synchronously, ignoring delays; → how many things were done."""
    return services.run_due_work(ignore_delays=True)


@dataclass
class DarajaSim:
    base_url: str

    def deliver(self) -> int:
        return deliver_callbacks_now()

    def prompts(self) -> list[StkPrompt]:
        return list(StkPrompt.objects.order_by("created_at", "pk"))

    def prompt(self, checkout_request_id: str) -> StkPrompt:
        return StkPrompt.objects.get(checkout_request_id=checkout_request_id)

    def answer(self, checkout_request_id: str, answer: str) -> StkPrompt:
        """As a person on the virtual phone: "pay", "cancel", "wrong_pin" or "ignore"."""
        return services.answer_prompt(checkout_request_id=checkout_request_id, answer=answer)

    def send_c2b(self, *, amount: int | Decimal, shortcode: str | None = None, phone: str = "254708374149",
                 account: str = "", **names) -> Payment:
        """A customer pays from the M-Pesa menu (default: the configured paybill or till);
        validation and confirmation are queued for deliver()."""
        if shortcode is None:
            till = str(getattr(settings, "MPESA_TILL_NUMBER", ""))
            is_till = getattr(settings, "MPESA_SHORTCODE_TYPE", "paybill") == "till" and till
            shortcode = till if is_till else str(settings.MPESA_SHORTCODE)
        return services.pay_c2b(shortcode=shortcode, amount=amount, phone=phone, account=account, **names)

    def deliveries(self) -> list[Delivery]:
        return list(Delivery.objects.order_by("pk"))

    def traffic(self) -> list[TrafficEntry]:
        return list(TrafficEntry.objects.order_by("pk"))


@pytest.fixture
def daraja_sim(live_server, transactional_db, settings):
    if "mpesa.simulator" not in settings.INSTALLED_APPS:
        pytest.skip("the Daraja simulator runs only with MPESA_ENVIRONMENT=simulator")
    settings.MPESA_BASE_URL = live_server.url + "/daraja-sim"
    settings.MPESA_CALLBACK_BASE_URL = live_server.url
    settings.DARAJA_SIM_DELIVERY = "queued"
    # The simulator's callbacks are applied before they are answered, so a test finds a callback
    # applied once the simulator's post returns (in production the answer comes first).
    settings.MPESA_CALLBACK_ANSWER_FIRST = False
    # A token cached by an earlier test names a row this test's database no longer has.
    cache.clear()
    yield DarajaSim(base_url=settings.MPESA_BASE_URL)
