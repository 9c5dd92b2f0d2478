"""`manage.py mpesa_check`: configuration and credentials explained in words."""

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from mpesa.management.commands.mpesa_check import Command
from mpesa.models import DarajaCall, MpesaAccount

PROJECT_DIR = Path(__file__).resolve().parents[2]


def run(*args):
    out = StringIO()
    call_command("mpesa_check", *args, stdout=out)
    return out.getvalue()


def fails(*args):
    out = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("mpesa_check", *args, stdout=out)
    return out.getvalue(), str(failed.value)


class _RefusesCredentials(BaseHTTPRequestHandler):
    """Daraja's answer to a wrong key or secret: HTTP 400 with an empty body."""

    def do_GET(self):
        self.send_response(400, "Bad Request: Invalid Credentials")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_help_says_what_it_checks():
    assert "till vs paybill" in Command().create_parser("manage.py", "mpesa_check").format_help()


def test_a_good_simulator_set_up_passes_and_gets_a_token(daraja_sim):
    output = run()
    assert "Environment:  simulator" in output
    assert "accepted the consumer key and secret" in output
    assert "looks right" in output
    assert DarajaCall.objects.filter(endpoint="/oauth/v1/generate", status_code=200).count() == 1


def test_wrong_credentials_are_explained_and_exit_non_zero(settings, db):
    server = HTTPServer(("127.0.0.1", 0), _RefusesCredentials)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    settings.MPESA_BASE_URL = f"http://127.0.0.1:{server.server_port}"
    try:
        output, error = fails()
    finally:
        server.shutdown()
        server.server_close()
    assert "Daraja refused the consumer key and secret" in output
    assert "sandbox keys do not work on production" in output
    assert "1 M-Pesa problem" in error


def test_a_base_url_with_no_daraja_behind_it_is_an_environment_problem(daraja_sim, settings, live_server):
    settings.MPESA_BASE_URL = live_server.url + "/not-daraja"
    output, _ = fails()
    assert "check MPESA_BASE_URL and MPESA_ENVIRONMENT" in output


def test_till_vs_paybill_settings_are_explained_without_calling_daraja(settings, db):
    settings.MPESA_SHORTCODE_TYPE = "till"
    output, _ = fails("--no-token")
    assert "mpesa.E004" in output and "MPESA_TILL_NUMBER is not set" in output
    assert not DarajaCall.objects.exists()


def test_production_callback_problems_are_errors(settings, db):
    settings.MPESA_ENVIRONMENT = "production"
    settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET = "live-key", "live-secret"
    settings.MPESA_SHORTCODE, settings.MPESA_PASSKEY = "888880", "live-passkey"
    settings.MPESA_CALLBACK_BASE_URL = "http://pos.duka.co.ke"
    output, _ = fails("--no-token")
    assert "uses http" in output
    assert "'mpesa'" in output and "MPESA_CALLBACK_PREFIX" in output


def test_shop_accounts_mixing_till_and_paybill_are_reported(shop):
    MpesaAccount.objects.create(shop=shop, kind=MpesaAccount.Kind.TILL, shortcode="300300")
    output, _ = fails("--no-token")
    assert "DEMO's M-Pesa account is a till but has no till number" in output


def test_missing_sandbox_credentials_are_reported_even_though_the_system_check_fails(tmp_path):
    # A real `manage.py` run: unlike call_command, it runs the system checks first.
    environment = dict(os.environ, MPESA_ENVIRONMENT="sandbox", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    environment.pop("MPESA_CONSUMER_KEY", None)
    environment.pop("MPESA_CONSUMER_SECRET", None)
    finished = subprocess.run([sys.executable, "manage.py", "mpesa_check"], cwd=PROJECT_DIR, env=environment,
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1
    assert "MPESA_CONSUMER_KEY, MPESA_CONSUMER_SECRET are not set" in finished.stdout
    assert "Not asking Daraja for a token" in finished.stdout
    assert "SystemCheckError" not in finished.stderr
