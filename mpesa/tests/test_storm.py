"""The storm at CI size: about 100 callbacks through gunicorn, the simulator and PostgreSQL, with
every scenario of the mix (manage.py mpesa_storm; the 10,000-callback run is in the report)."""

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the storm runs gunicorn against PostgreSQL"),
]


def test_a_storm_of_duplicated_lost_reordered_and_competing_callbacks_loses_and_double_counts_nothing(settings):
    if "mpesa.simulator" not in settings.INSTALLED_APPS:
        pytest.skip("the storm drives the Daraja simulator (MPESA_ENVIRONMENT=simulator)")
    out = StringIO()
    try:
        call_command("mpesa_storm", callbacks=100, port=8462, stdout=out)
    except CommandError as error:
        pytest.fail(f"{error}\n{out.getvalue()}")
    report = out.getvalue()
    print(report)  # the figures, for `pytest -s`
    sent = int(re.search(r"([\d,]+) callbacks in", report).group(1).replace(",", ""))
    assert sent >= 100
    assert f"answers: {sent:,} × 200" in report
    for scenario in ("normal", "duplicate", "burst", "lost", "wrong_amount", "c2b_repeat", "failed", "scarce",
                     "early", "lost_sim"):
        assert re.search(rf"\d+ {scenario}\b", report), (scenario, report)
    assert ("non-200 answers: 0   lost: 0   double-counted: 0   stuck pending: 0   answered without a raw row: 0"
            "   invariant violations: 0   unexpected outcomes: 0") in report
