"""`manage.py check --deploy` with the production configuration from the README reports nothing."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent.parent
PRODUCTION = {
    "DEBUG": "False",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "pos.example.co.ke",
    "CSRF_TRUSTED_ORIGINS": "https://pos.example.co.ke",
    "MPESA_ENVIRONMENT": "sandbox",
    "MPESA_CONSUMER_KEY": "sandbox-consumer-key",
    "MPESA_CONSUMER_SECRET": "sandbox-consumer-secret",
    "MPESA_CALLBACK_BASE_URL": "https://pos.example.co.ke",
    "MPESA_CALLBACK_PREFIX": "hooks",
    "MPESA_CALLBACK_TOKEN": secrets.token_urlsafe(24),
    "MPESA_TRUSTED_PROXY_COUNT": "1",
}
# After go-live: Safaricom's production keys, shortcode and passkey (never the sandbox's).
GO_LIVE = {
    "MPESA_ENVIRONMENT": "production",
    "MPESA_SHORTCODE": "5123456",
    "MPESA_PASSKEY": secrets.token_hex(32),
    "MPESA_INITIATOR_NAME": "comolor-api",
    "MPESA_SECURITY_CREDENTIAL": secrets.token_urlsafe(128),
}


def run_check(**overrides):
    # A separate process: settings are read once, and production settings must not see pytest.
    # The settings module is named: an inherited DJANGO_SETTINGS_MODULE (pytest --ds) must not stand in.
    env = {**os.environ, **PRODUCTION, "DJANGO_SETTINGS_MODULE": "comolor.settings", **overrides}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("stage", [{}, GO_LIVE], ids=["sandbox", "production"])
def test_the_production_configuration_passes_the_deployment_checks(stage):
    result = run_check(**stage)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_deployment_checks_do_fail_on_a_weak_configuration():
    result = run_check(SECRET_KEY="short", SECURE_HSTS_SECONDS="0")
    assert result.returncode != 0
    assert "security.W009" in result.stderr and "security.W004" in result.stderr


def test_the_checks_ran_with_the_production_settings_not_the_test_ones():
    # Only settings with DEBUG off and outside pytest refuse the simulator: proof of what was checked.
    result = run_check(MPESA_ENVIRONMENT="simulator")
    assert result.returncode != 0
    assert "The Daraja simulator runs only with DEBUG=True" in result.stderr
