"""A printer that is off or stalled while M-Pesa pays a sale: Safaricom still gets its answer at
once, the sale completes, and the worker prints the receipt once the printer is back: once.

As in production, printing runs in the background (RECEIPTS_PRINT_IN_BACKGROUND) after the
callback's transaction commits. The printer's own failure modes, one call at a time, are in
test_print_sale_receipt.py (refused, accepts but never reads, backoff, giving up, abandoned jobs).
"""

import time

import pytest
from django.core.management import call_command

from mpesa.invariants import check_books
from mpesa.tests.factories import StkRequestFactory, make_pending_sale, stk_success
from pos.models import Sale
from receipts.models import PrintJob
from receipts.tests.factories import PrinterFactory
from receipts.tests.fake_printer import DEAD_PORT, STUCK_PORT, FakePrinter

pytestmark = pytest.mark.django_db(transaction=True)
WRITE_TIMEOUT = 5.0


class NoPrinter:
    """Nothing listens: the connection is refused."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def wait_for(condition, seconds=15.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("port, down", [
    (DEAD_PORT, NoPrinter), (STUCK_PORT, lambda: FakePrinter(STUCK_PORT, reads=False)),
], ids=["unreachable", "stalled"])
def test_an_mpesa_sale_completes_with_the_printer_down_and_its_receipt_prints_once_when_it_is_back(
        client, cashier, till, product, settings, port, down):
    settings.RECEIPTS_PRINT_IN_BACKGROUND = True
    settings.RECEIPTS_CONNECT_TIMEOUT = settings.RECEIPTS_WRITE_TIMEOUT = WRITE_TIMEOUT
    settings.RECEIPTS_RETRY_BACKOFF = 0
    settings.POS_WORKER_TASKS = ["receipts.services.retry_failed_print_jobs"]
    PrinterFactory(till=till, port=port)
    sale = make_pending_sale(cashier=cashier, till=till, product=product)
    stk = StkRequestFactory(sale=sale, amount=116)

    with down():
        started = time.monotonic()
        response = client.post("/mpesa/stk/callback", data=stk_success(stk.checkout_request_id, amount=116,
                                                                       receipt="NLJPRINT01"),
                               content_type="application/json")
        assert time.monotonic() - started < WRITE_TIMEOUT  # Safaricom does not wait for the printer
        assert response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
        assert Sale.objects.get(pk=sale.pk).status == Sale.Status.COMPLETED
        wait_for(lambda: PrintJob.objects.filter(sale=sale, status=PrintJob.Status.FAILED).exists())

    with FakePrinter(port) as printer:
        call_command("pos_worker", "--once")
        call_command("pos_worker", "--once")  # a second round finds nothing left to print

    job = PrintJob.objects.get(sale=sale)
    assert job.status == PrintJob.Status.DONE and job.attempts == 2
    assert printer.jobs == [bytes(job.data)]
    assert check_books() == []
