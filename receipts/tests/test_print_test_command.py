"""manage.py print_test: a test page on a named printer or an address; errors in words, non-zero exit."""

import pytest
from django.core.management import CommandError, call_command

from receipts.tests.factories import PrinterFactory
from receipts.tests.fake_printer import DEAD_PORT, PRINTER_PORT, STUCK_PORT, FakePrinter


def test_prints_a_test_page_on_an_address(capsys):
    with FakePrinter(PRINTER_PORT) as printer:
        call_command("print_test", f"tcp://127.0.0.1:{PRINTER_PORT}", "--width", "58", "--profile", "POS-5890")
    assert f"Test page sent to tcp://127.0.0.1:{PRINTER_PORT}." in capsys.readouterr().out
    [page] = printer.jobs
    assert page.startswith(b"\x1b@") and b"Printer test page" in page
    assert b"12345678901234567890123456789012\n" in page and b"123456789012345678901234567890123" not in page
    assert b'Cafe - "quotes" - KSh 1,234.00 ?' in page
    assert page.endswith(b"\x1bd\x06")  # POS-5890 has no cutter


def test_prints_on_a_printer_by_its_name(till, capsys):
    PrinterFactory(till=till, name="Counter", profile="default", port=PRINTER_PORT)
    with FakePrinter(PRINTER_PORT) as printer:
        call_command("print_test", "Counter")
    assert f"on Counter (tcp://127.0.0.1:{PRINTER_PORT}, 80 mm, profile default)" in capsys.readouterr().out
    assert len(printer.jobs) == 1


def test_writes_a_test_page_to_a_file(tmp_path):
    call_command("print_test", f"file://{tmp_path}/out")
    [written] = (tmp_path / "out").iterdir()
    assert written.name.startswith("test-") and written.read_bytes().startswith(b"\x1b@")


@pytest.mark.parametrize("address,message", [
    (f"tcp://127.0.0.1:{DEAD_PORT}",
     f"The printer is not answering at 127.0.0.1:{DEAD_PORT}: check it is on and connected"),
    ("tcp://printer.invalid:9100", "no computer is called 'printer.invalid' on this network"),
    ("ipp://10.0.0.5", "unknown kind of printer 'ipp'"),
    ("usb://04b8", "write a USB printer as usb://VENDOR:PRODUCT"),
    ("Back office", "No printer is called 'Back office'"),
], ids=["refused", "unknown-host", "unknown-kind", "bad-usb-ids", "unknown-name"])
def test_explains_what_went_wrong_and_fails(db, address, message):
    with pytest.raises(CommandError) as error:
        call_command("print_test", address)
    assert message in str(error.value)


def test_a_printer_that_never_reads_is_reported(settings):
    settings.RECEIPTS_WRITE_TIMEOUT = 0.3
    with FakePrinter(STUCK_PORT, reads=False), pytest.raises(CommandError) as error:
        call_command("print_test", f"tcp://127.0.0.1:{STUCK_PORT}")
    assert "took the connection but not the receipt within 0.3 s" in str(error.value)
