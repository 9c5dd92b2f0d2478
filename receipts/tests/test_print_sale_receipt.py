"""Printing after the sale commits, through a real TCP listener standing in for a network printer."""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from pos.models import Sale
from pos.services import ItemRequest, sell_for_cash
from receipts.models import Printer, PrintJob
from receipts.rendering import render_escpos
from receipts.services import (build_receipt, describe_print_status, print_sale_receipt, reprint_receipt,
                               retry_failed_print_jobs, retry_sale_print)
from receipts.tests.factories import PrinterFactory
from receipts.tests.fake_printer import DEAD_PORT, PRINTER_PORT, STUCK_PORT, FakePrinter


def _network_printer(till, port):
    return PrinterFactory(till=till, port=port, cash_drawer=True)


def _sell(cashier, till, product, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        sale, _ = sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku=product.sku)],
                                tendered=Decimal("200"))
    return sale


def test_completed_sale_prints_its_receipt_on_the_network_printer(
        cashier, till, product, django_capture_on_commit_callbacks):
    _network_printer(till, PRINTER_PORT)
    with FakePrinter(PRINTER_PORT) as printer:
        sale = _sell(cashier, till, product, django_capture_on_commit_callbacks)
    job = PrintJob.objects.get(sale=sale)
    assert job.status == PrintJob.Status.DONE and job.attempts == 1 and not job.is_copy
    expected = render_escpos(build_receipt(sale.pk), paper_width=80, profile="TM-T20II", cash_drawer=True)
    assert printer.jobs == [expected] == [bytes(job.data)]
    assert printer.jobs[0].startswith(b"\x1b@\x1bp\x00")
    assert describe_print_status(sale.pk)["message"] == "The receipt was printed on Till 1 printer."


def test_refused_connection_fails_the_job_in_words_and_the_sale_stays_completed(
        cashier, till, product, django_capture_on_commit_callbacks):
    _network_printer(till, DEAD_PORT)
    started = time.monotonic()
    sale = _sell(cashier, till, product, django_capture_on_commit_callbacks)
    assert time.monotonic() - started < 3
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED
    job = PrintJob.objects.get(sale=sale)
    assert job.status == PrintJob.Status.FAILED and job.attempts == 1
    assert job.last_error.startswith(f"Till 1 printer is not answering at 127.0.0.1:{DEAD_PORT}: "
                                     "check it is on and connected")
    status = describe_print_status(sale.pk)
    assert status["status"] == "failed" and "Trying again by itself (1 of 5 tries)" in status["message"]


def test_printer_that_accepts_but_never_reads_fails_within_the_write_timeout(
        settings, cashier, till, product, django_capture_on_commit_callbacks):
    settings.RECEIPTS_WRITE_TIMEOUT = 0.5
    _network_printer(till, STUCK_PORT)
    with FakePrinter(STUCK_PORT, reads=False):
        started = time.monotonic()
        sale = _sell(cashier, till, product, django_capture_on_commit_callbacks)
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 2
    assert Sale.objects.get(pk=sale.pk).status == Sale.Status.COMPLETED
    job = PrintJob.objects.get(sale=sale)
    assert job.status == PrintJob.Status.FAILED
    assert "took the connection but not the receipt within 0.5 s: check it has paper" in job.last_error


def test_worker_retry_prints_once_the_printer_is_back(settings, cashier, till, product,
                                                     django_capture_on_commit_callbacks):
    settings.RECEIPTS_RETRY_BACKOFF = 0
    _network_printer(till, DEAD_PORT)
    sale = _sell(cashier, till, product, django_capture_on_commit_callbacks)
    assert retry_failed_print_jobs() == "print retries: 0 printed, 1 still failing"
    with FakePrinter(DEAD_PORT) as printer:
        assert retry_failed_print_jobs() == "print retries: 1 printed, 0 still failing"
    job = PrintJob.objects.get(sale=sale)
    assert job.status == PrintJob.Status.DONE and job.attempts == 3 and job.last_error == ""
    assert printer.jobs == [bytes(job.data)]
    assert retry_failed_print_jobs() == ""


def test_worker_waits_for_the_backoff_and_gives_up_after_the_last_try(settings, cashier, till, product,
                                                                      django_capture_on_commit_callbacks):
    settings.RECEIPTS_PRINT_MAX_ATTEMPTS = 2
    _network_printer(till, DEAD_PORT)
    sale = _sell(cashier, till, product, django_capture_on_commit_callbacks)
    job = PrintJob.objects.get(sale=sale)
    assert job.next_attempt_at > timezone.now() + timedelta(seconds=5)
    assert retry_failed_print_jobs() == ""
    PrintJob.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now())
    assert retry_failed_print_jobs() == "print retries: 0 printed, 1 still failing"
    PrintJob.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now())
    assert retry_failed_print_jobs() == ""
    assert "Gave up after 2 tries: press Retry print, or Print in browser." in describe_print_status(sale.pk)["message"]


def test_retry_print_button_resends_a_job_the_worker_gave_up_on(settings, cashier, till, product,
                                                               django_capture_on_commit_callbacks):
    settings.RECEIPTS_PRINT_MAX_ATTEMPTS = 1
    _network_printer(till, DEAD_PORT)
    sale = _sell(cashier, till, product, django_capture_on_commit_callbacks)
    with FakePrinter(DEAD_PORT) as printer:
        job = retry_sale_print(sale.pk)
    assert job.status == PrintJob.Status.DONE and job.attempts == 2
    assert len(printer.jobs) == 1


def test_job_abandoned_mid_print_is_picked_up_by_the_worker(cashier, till, product):
    _network_printer(till, PRINTER_PORT)
    sale, _ = sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku=product.sku)],
                            tendered=Decimal("116"))
    job = PrintJob.objects.create(sale=sale, printer=till.printers.get(), data=b"\x1b@hello\n",
                                  status=PrintJob.Status.PRINTING, attempts=1)
    PrintJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    with FakePrinter(PRINTER_PORT) as printer:
        assert retry_failed_print_jobs() == "print retries: 1 printed, 0 still failing"
    assert printer.jobs == [b"\x1b@hello\n"]


def test_till_without_a_printer_uses_the_default_file_printer(settings, tmp_path, cash_sale):
    job = print_sale_receipt(cash_sale.pk)
    assert job.status == PrintJob.Status.DONE and job.printer is None
    written = tmp_path / "receipts" / f"DEMO-0000001-{job.pk}.bin"
    assert written.read_bytes() == bytes(job.data)
    assert job.destination == f"file://{written}"


def test_receipt_is_printed_once_however_often_the_hook_runs(cash_sale):
    first = print_sale_receipt(cash_sale.pk)
    assert print_sale_receipt(cash_sale.pk) == first
    assert PrintJob.objects.filter(sale=cash_sale).count() == 1


def test_reprint_sends_a_copy(till, cash_sale):
    _network_printer(till, PRINTER_PORT)
    with FakePrinter(PRINTER_PORT) as printer:
        print_sale_receipt(cash_sale.pk)
        copy = reprint_receipt(cash_sale.pk)
    assert copy.is_copy and copy.status == PrintJob.Status.DONE
    assert b"COPY - REPRINT" not in printer.jobs[0] and b"COPY - REPRINT" in printer.jobs[1]
    assert describe_print_status(cash_sale.pk)["message"] == "The copy was printed on Till 1 printer."


def test_browser_till_queues_no_job(till, cash_sale):
    Printer.objects.create(till=till, name="Browser", kind=Printer.Kind.BROWSER)
    assert print_sale_receipt(cash_sale.pk) is None
    assert describe_print_status(cash_sale.pk)["status"] == "browser"


@pytest.mark.django_db(transaction=True)
def test_in_production_the_sale_does_not_wait_for_a_stuck_printer(settings, cashier, till, product):
    settings.RECEIPTS_PRINT_IN_BACKGROUND = True
    settings.RECEIPTS_WRITE_TIMEOUT = 0.5
    _network_printer(till, STUCK_PORT)
    with FakePrinter(STUCK_PORT, reads=False):
        started = time.monotonic()
        sale, _ = sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku=product.sku)],
                                tendered=Decimal("200"))  # not in a test transaction: the hook runs on commit
        assert time.monotonic() - started < 0.5
        job = PrintJob.objects.get(sale=sale)
        deadline = time.monotonic() + 5
        while job.status != PrintJob.Status.FAILED and time.monotonic() < deadline:
            time.sleep(0.05)
            job.refresh_from_db()
    assert job.status == PrintJob.Status.FAILED and "took the connection but not the receipt" in job.last_error
    assert Sale.objects.get(pk=sale.pk).status == Sale.Status.COMPLETED


def test_without_waiting_for_the_close_a_job_counts_as_printed_once_handed_over(settings, till, cash_sale):
    settings.RECEIPTS_NETWORK_WAIT_FOR_CLOSE = False
    _network_printer(till, STUCK_PORT)
    with FakePrinter(STUCK_PORT, reads=False):
        job = print_sale_receipt(cash_sale.pk)
    assert job.status == PrintJob.Status.DONE


@pytest.mark.django_db(transaction=True)
def test_in_the_background_the_sender_renders_and_prints_after_the_request(settings, tmp_path, cashier, till,
                                                                          goods):
    settings.POS_SALE_COMPLETED_HOOKS = []  # called by hand below, to see what the request itself did
    cash_sale, _ = sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku="SUG1KG")],
                                 tendered=Decimal("200"))
    settings.RECEIPTS_PRINT_IN_BACKGROUND = True

    job = print_sale_receipt(cash_sale.pk)

    # The cashier's request only queued the job; the bytes are made by the sending thread.
    assert bytes(job.data) == b""
    deadline = time.monotonic() + 10
    while PrintJob.objects.get(pk=job.pk).status != PrintJob.Status.DONE and time.monotonic() < deadline:
        time.sleep(0.05)
    job.refresh_from_db()
    assert job.status == PrintJob.Status.DONE
    assert bytes(job.data) == render_escpos(build_receipt(cash_sale.pk), paper_width=80, profile="default")
    assert (tmp_path / "receipts" / f"DEMO-0000001-{job.pk}.bin").read_bytes() == bytes(job.data)
