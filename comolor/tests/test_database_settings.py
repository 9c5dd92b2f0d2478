"""PostgreSQL connections prepare the statements they repeat (DATABASE_PREPARED_STATEMENTS)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from pos.models import Sale

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def database_options(**env) -> dict:
    # A separate process: settings are read once.
    shown = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                               "print(__import__('json').dumps(settings.DATABASES['default'].get('OPTIONS', {})))"],
        cwd=BASE_DIR, env={**os.environ, "DJANGO_SETTINGS_MODULE": "comolor.settings", "DEBUG": "True", **env},
        capture_output=True, text=True, check=True,
    )
    return json.loads(shown.stdout)


def test_postgresql_connections_bind_parameters_on_the_server_and_prepare_repeated_statements():
    options = database_options(DATABASE_URL="postgres://comolor@127.0.0.1:5432/comolor")

    assert options["server_side_binding"] is True and options["prepare_threshold"] == 5


def test_prepared_statements_can_be_turned_off_for_a_pooler_that_cannot_keep_them():
    options = database_options(DATABASE_URL="postgres://comolor@127.0.0.1:5432/comolor",
                               DATABASE_PREPARED_STATEMENTS="False")

    assert "server_side_binding" not in options and "prepare_threshold" not in options


@pytest.mark.django_db
def test_a_statement_run_five_times_is_prepared_on_the_server():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    for _ in range(6):
        Sale.objects.filter(pk=0).exists()

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ['%FROM "pos_sale"%'])
        assert cursor.fetchone()[0] >= 1
