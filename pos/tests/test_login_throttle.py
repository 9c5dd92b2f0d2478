"""S5: failed log-ins are counted per username and address in the cache; at the limit the login is
refused in words, on the till's form and the admin's alike, and a forged X-Forwarded-For changes nothing."""

import time

import pytest
from django.core.cache import cache
from django.core.cache.backends import locmem
from django.urls import reverse

from pos.tests.backoffice import manager  # noqa: F401

FORMS = [reverse("login"), reverse("admin:login")]


def _attempt(client, url, username, password, **headers):
    return client.post(url, {"username": username, "password": password}, **headers)


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_LOCKOUT_MINUTES = 15
    cache.clear()  # the local-memory cache outlives a test


@pytest.mark.parametrize("url", FORMS)
def test_after_the_limit_even_the_right_password_is_refused_in_words(client, manager, url):
    for _ in range(3):
        assert not _attempt(client, url, "akinyi", "wrong").context["user"].is_authenticated

    page = _attempt(client, url, "akinyi", "password")

    assert page.status_code == 200 and not page.context["user"].is_authenticated
    assert "Too many failed log-ins for akinyi from this device. Wait 15 minutes" in page.content.decode()


@pytest.mark.parametrize("url", FORMS)
def test_a_forged_forwarded_for_header_does_not_reset_the_count(client, manager, url):
    for n in range(3):
        _attempt(client, url, "akinyi", "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}")

    page = _attempt(client, url, "akinyi", "password", HTTP_X_FORWARDED_FOR="10.9.9.9")

    assert "Too many failed log-ins" in page.content.decode()


def test_behind_a_trusted_proxy_the_address_it_saw_is_counted(client, manager, settings):
    settings.MPESA_TRUSTED_PROXY_COUNT = 1
    url = reverse("login")
    for n in range(3):
        # The client wrote the left part; the proxy appended the address it saw.
        _attempt(client, url, "akinyi", "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 41.90.1.1")

    assert "Too many" in _attempt(client, url, "akinyi", "password",
                                  HTTP_X_FORWARDED_FOR="41.90.1.1").content.decode()
    elsewhere = _attempt(client, url, "akinyi", "password", HTTP_X_FORWARDED_FOR="41.90.2.2")
    assert elsewhere.status_code == 302


def test_other_users_and_other_addresses_are_not_locked(client, manager, cashier):
    url = reverse("login")
    for _ in range(3):
        _attempt(client, url, "akinyi", "wrong")

    assert _attempt(client, url, "wanjiru", "password").status_code == 302
    client.logout()
    assert _attempt(client, url, "akinyi", "password", REMOTE_ADDR="10.1.1.1").status_code == 302


def test_a_success_before_the_limit_clears_the_count(client, manager):
    url = reverse("login")
    for _ in range(2):
        _attempt(client, url, "akinyi", "wrong")
    assert _attempt(client, url, "akinyi", "password").status_code == 302
    client.logout()
    for _ in range(2):
        _attempt(client, url, "akinyi", "wrong")

    assert _attempt(client, url, "akinyi", "password").status_code == 302


def test_the_lock_lasts_the_lockout_time_from_the_last_failure(client, manager, monkeypatch):
    url = reverse("login")
    for _ in range(3):
        _attempt(client, url, "akinyi", "wrong")
    now = time.time()

    monkeypatch.setattr(locmem.time, "time", lambda: now + 14 * 60)
    assert "Too many" in _attempt(client, url, "akinyi", "password").content.decode()
    monkeypatch.setattr(locmem.time, "time", lambda: now + 15 * 60 + 1)
    assert _attempt(client, url, "akinyi", "password").status_code == 302


def test_a_wrong_password_still_reads_as_wrong_before_the_limit(client, manager):
    page = _attempt(client, reverse("login"), "akinyi", "wrong")

    assert "Wrong username or password" in page.content.decode()


def test_without_the_trusted_proxys_hop_every_attempt_counts_as_one_unknown_address(client, manager, settings):
    settings.MPESA_TRUSTED_PROXY_COUNT = 1  # but the request did not come through the proxy
    url = reverse("login")
    for n in range(3):
        _attempt(client, url, "akinyi", "wrong", REMOTE_ADDR=f"10.0.0.{n}")

    assert "Too many" in _attempt(client, url, "akinyi", "password", REMOTE_ADDR="10.0.0.9").content.decode()
