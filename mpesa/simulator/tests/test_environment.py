"""The simulator exists only in simulator mode, and simulator mode only with DEBUG."""

import os
import subprocess
import sys

from django.conf import settings

PROBE = """
import django
django.setup()
from django.conf import settings
from django.urls import Resolver404, resolve
try:
    resolve("/daraja-sim/oauth/v1/generate")
    print("routed")
except Resolver404:
    print("not routed")
print("installed" if "mpesa.simulator" in settings.INSTALLED_APPS else "not installed")
"""


def _run(**env):
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "comolor.settings", **env}
    return subprocess.run([sys.executable, "-c", PROBE], cwd=settings.BASE_DIR, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_sandbox_mode_neither_installs_nor_routes_the_simulator():
    result = _run(MPESA_ENVIRONMENT="sandbox", DEBUG="False")
    assert result.stdout.split("\n")[:2] == ["not routed", "not installed"], result.stderr


def test_simulator_mode_routes_it_in_development():
    result = _run(MPESA_ENVIRONMENT="simulator", DEBUG="True")
    assert result.stdout.split("\n")[:2] == ["routed", "installed"], result.stderr


def test_simulator_mode_without_debug_refuses_to_start():
    result = _run(MPESA_ENVIRONMENT="simulator", DEBUG="False")
    assert result.returncode != 0
    assert "The Daraja simulator runs only with DEBUG=True" in result.stderr
