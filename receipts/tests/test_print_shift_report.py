"""X and Z reports on the receipt printer (a real TCP listener on loopback), at 80 and 58 mm, and
as the browser prints them."""

from decimal import Decimal

import pytest
from django.urls import reverse

from pos.services import ItemRequest, close_shift, record_cash_movement, sell_for_cash
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory
from receipts.models import Printer
from receipts.printing import PrintError
from receipts.services import print_shift_report
from receipts.tests.factories import PrinterFactory
from receipts.tests.fake_printer import DEAD_PORT, PRINTER_PORT, FakePrinter

pytestmark = pytest.mark.django_db


@pytest.fixture
def shift(till, cashier, product):
    """Till 1's shift: a cash sale of 116 paid with 200, a pay-out of 50 for airtime."""
    shift = till.shifts.get()
    sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, sku=product.sku)],
                  tendered=Decimal("200"))
    record_cash_movement(shift_id=shift.pk, kind="pay_out", amount="50", reason="airtime for the shop phone",
                         user=cashier)
    return shift


def printed_lines(job: bytes) -> list[str]:
    """The text lines of an ESC/POS job, without the commands around them."""
    text = job.decode("ascii", errors="replace")
    lines = []
    for raw in text.split("\n"):
        # Commands precede the text on a line: ESC/GS sequences of 2-3 bytes.
        while raw and raw[0] in "\x1b\x1d":
            raw = raw[3:] if raw[1] in "!aE" else raw[2:]
        lines.append(raw)
    return lines


@pytest.mark.parametrize("paper_width, profile, columns", [(80, "TM-T20II", 48), (58, "default", 32)])
def test_the_z_report_prints_on_the_tills_network_printer(till, cashier, shift, paper_width, profile, columns):
    PrinterFactory(till=till, port=PRINTER_PORT, paper_width=paper_width, profile=profile)
    close_shift(shift_id=shift.pk, counted_cash="216", user=cashier, note="a coin fell behind the drawer")

    with FakePrinter(PRINTER_PORT) as printer:
        where = print_shift_report(shift.pk)

    assert where == f"tcp://127.0.0.1:{PRINTER_PORT}"
    [job] = printer.jobs
    assert job.startswith(b"\x1b@") and job.endswith(b"\x1dV\x01")  # reset first, partial cut last
    lines = printed_lines(job)
    body = "\n".join(lines)
    assert "Z REPORT" in body and "Shift #" in body and "Till 1" in body
    # 0 float + 200 handed over − 84 change − 50 paid out = 66 expected; 216 counted: 150 over.
    assert any(line.startswith("Expected in the drawer") and line.endswith("66.00") for line in lines)
    assert any(line.startswith("Counted") and line.endswith("216.00") for line in lines)
    assert any(line.startswith("Difference") and line.endswith("OVER +150.00") for line in lines)
    assert "airtime for the shop" in body and "a coin fell behind" in body and "Cash is KES 150.00 over." in body
    assert "Cashier" in body and "Manager" in body  # signature lines on the Z report
    assert max(len(line) for line in lines if "\x1d" not in line and "\x1b" not in line) <= columns


def test_a_cashiers_x_report_print_is_blind(till, cashier, shift):
    PrinterFactory(till=till, port=PRINTER_PORT)

    with FakePrinter(PRINTER_PORT) as printer:
        print_shift_report(shift.pk, user=cashier)

    body = printer.jobs[0].decode("ascii", errors="replace")
    assert "X REPORT" in body and "Shift still open" in body and "Blind count" in body
    assert "Expected in the drawer" not in body and "66.00" not in body and "116.00" not in body


def test_a_managers_x_report_print_has_the_expected_cash(till, shift):
    PrinterFactory(till=till, port=PRINTER_PORT)

    with FakePrinter(PRINTER_PORT) as printer:
        print_shift_report(shift.pk)

    body = printer.jobs[0].decode("ascii", errors="replace")
    assert "X REPORT" in body and "Expected in the drawer" in body and "66.00" in body


def test_a_printer_that_is_off_is_explained_in_words(till, shift):
    PrinterFactory(till=till, port=DEAD_PORT)

    with pytest.raises(PrintError, match=f"^Till 1 printer is not answering at 127.0.0.1:{DEAD_PORT}: check it is on"):
        print_shift_report(shift.pk)


def test_a_till_that_prints_from_the_browser_sends_nothing(till, shift):
    Printer.objects.create(till=till, name="Browser", kind=Printer.Kind.BROWSER)

    assert print_shift_report(shift.pk) is None


def test_the_print_button_prints_and_says_so_on_the_page(cashier_client, till, shift):
    PrinterFactory(till=till, port=PRINTER_PORT)
    back = reverse("pos:shift")

    with FakePrinter(PRINTER_PORT) as printer:
        response = cashier_client.post(reverse("receipts:shift-print", args=[shift.pk]), {"next": back}, follow=True)

    assert response.redirect_chain == [(back, 302)]
    assert "The report was sent to the receipt printer." in response.content.decode()
    assert len(printer.jobs) == 1


def test_a_failed_print_is_told_on_the_page_and_the_report_stays(cashier_client, till, shift):
    PrinterFactory(till=till, port=DEAD_PORT)

    response = cashier_client.post(reverse("receipts:shift-print", args=[shift.pk]), follow=True)

    assert response.redirect_chain == [(reverse("pos:shift-report", args=[shift.pk]), 302)]
    page = response.content.decode()
    assert "is not answering at 127.0.0.1" in page and "The report is not lost: print it again" in page


def test_the_print_button_never_sends_the_cashier_to_another_site(cashier_client, till, shift):
    Printer.objects.create(till=till, name="Browser", kind=Printer.Kind.BROWSER)

    response = cashier_client.post(reverse("receipts:shift-print", args=[shift.pk]),
                                   {"next": "https://evil.example.com/"})

    assert response.url == reverse("pos:shift-report", args=[shift.pk])


def test_the_browser_slip_is_laid_out_as_the_printer_prints_it(cashier_client, cashier, shift):
    close_shift(shift_id=shift.pk, counted_cash="66", user=cashier)

    page = cashier_client.get(reverse("receipts:shift-slip", args=[shift.pk]) + "?width=58&print=1").content.decode()

    assert "width: 32ch" in page and "window.print()" in page
    assert "Z REPORT" in page and "Expected in the drawer" in page


def test_another_shop_can_neither_print_nor_see_the_slip(client, shift):
    other = ShopFactory(code="MSA", name="Mombasa Duka")
    client.force_login(StaffFactory(shop=other, default_till=TillFactory(shop=other)).user)

    assert client.get(reverse("receipts:shift-slip", args=[shift.pk])).status_code == 404
    assert client.post(reverse("receipts:shift-print", args=[shift.pk])).status_code == 404
