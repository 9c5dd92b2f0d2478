"""Several workers share the print queue: a job another worker holds is skipped, not waited for."""

import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from pos.tests.factories import SaleFactory
from receipts.models import PrintJob
from receipts.services import retry_failed_print_jobs

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="SKIP LOCKED needs PostgreSQL")


@pytest.mark.django_db(transaction=True)
def test_worker_skips_a_job_another_worker_has_locked():
    due = {"status": PrintJob.Status.FAILED, "next_attempt_at": timezone.now(), "attempts": 1, "data": b"x\n"}
    held, free = PrintJob.objects.create(sale=SaleFactory(), **due), PrintJob.objects.create(sale=SaleFactory(), **due)
    locked, release = threading.Event(), threading.Event()

    def other_worker():
        with transaction.atomic():
            PrintJob.objects.select_for_update().get(pk=held.pk)
            locked.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert locked.wait(10)
        assert retry_failed_print_jobs() == "print retries: 1 printed, 0 still failing"
    finally:
        release.set()
        thread.join()
    held.refresh_from_db()
    free.refresh_from_db()
    assert (held.status, held.attempts) == (PrintJob.Status.FAILED, 1)
    assert (free.status, free.attempts) == (PrintJob.Status.DONE, 2)
