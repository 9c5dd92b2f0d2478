"""The worker (`manage.py pos_worker`) killed with SIGKILL in the middle of a sweep, then started
again: the work resumes and nothing is done twice.

A real worker process against the test database; Daraja is the simulator behind a proxy that
makes each STK Query take a second, so the kill lands while a batch of claimed prompts is half
asked about. Callbacks stored raw but never applied (a crash between the two steps) wait for it too.
"""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from inventory.models import StockMovement
from mpesa.invariants import check_books
from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.services import start_stk_payment
from mpesa.simulator.services import decide_due_prompts
from mpesa.simulator.storm import database_url
from mpesa.tests.factories import StkRequestFactory, make_pending_sale, stk_success
from mpesa.tests.fault_servers import SlowDaraja
from pos.models import Payment, Sale

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="a worker process shares the database")
QUERY = "/mpesa/stkpushquery/v1/query"
LOST, STORED = 6, 3


def start_worker(daraja_url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url(), "DEBUG": "True", "MPESA_ENVIRONMENT": "simulator",
           "MPESA_BASE_URL": daraja_url, "MPESA_SWEEP_AFTER": "0", "MPESA_SWEEP_REQUERY_EVERY": "2",
           "POS_WORKER_TASKS": "mpesa.services.sweep_mpesa", "POS_SALE_COMPLETED_HOOKS": "",
           "CACHE_URL": "locmemcache://", "LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "manage.py", "pos_worker", "--interval", "0.2"],
                            cwd=django_settings.BASE_DIR, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(condition, seconds: float, worker: subprocess.Popen, log: Path):
    deadline = time.monotonic() + seconds
    while not condition():
        assert worker.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def paid() -> int:
    return StkRequest.objects.filter(status=StkRequest.Status.PAID).count()


def test_a_worker_killed_mid_sweep_resumes_when_restarted_and_applies_each_payment_once(
        daraja_sim, cashier, till, product, settings, tmp_path):
    settings.POS_SALE_COMPLETED_HOOKS = []
    for number in range(LOST):  # paid, but the callbacks are lost: only STK Query can tell
        start_stk_payment(sale=make_pending_sale(cashier=cashier, till=till, product=product),
                          phone=f"2547110000{number:02d}")
    decide_due_prompts(ignore_delays=True)
    for number in range(STORED):  # stored raw, never applied
        stk = StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product), amount=116)
        body = stk_success(stk.checkout_request_id, amount=116, receipt=f"NLJKILL{number:03d}")
        stored = CallbackLog.objects.create(kind=CallbackLog.Kind.STK, path="/mpesa/stk/callback", body=body,
                                            source_ip="127.0.0.1")
        # Older than the sweep's settling time, as a callback left behind by a crash is.
        CallbackLog.objects.filter(pk=stored.pk).update(received_at=stored.received_at - timedelta(seconds=10))
    slow = SlowDaraja(daraja_sim.base_url, delays={QUERY: 1.0})
    log = tmp_path / "worker.log"
    try:
        worker = start_worker(slow.url, log)
        wait_for(lambda: paid() > STORED, 60, worker, log)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        halfway = paid()
        assert STORED < halfway < STORED + LOST, "the kill should land in the middle of the batch"
        assert Sale.objects.filter(status=Sale.Status.COMPLETED).count() == halfway

        worker = start_worker(slow.url, log)
        wait_for(lambda: paid() == STORED + LOST, 60, worker, log)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(10)
    finally:
        slow.close()

    assert Sale.objects.filter(status=Sale.Status.COMPLETED).count() == LOST + STORED
    assert set(CallbackLog.objects.values_list("status", flat=True)) == {CallbackLog.Status.PROCESSED}
    for sale in Sale.objects.all():
        assert sale.payments.count() == 1 and StockMovement.objects.filter(sale=sale).count() == 1, sale
    assert MpesaTransaction.objects.count() == Payment.objects.count() == LOST + STORED
    assert check_books() == []
