"""The back office: receipt preview on the sale's receipt page, print jobs, printers."""

import pytest
from django.urls import reverse

from pos.services import add_staff
from pos.tests.factories import ShopFactory, UserFactory
from receipts.models import PrintJob
from receipts.tests.factories import PrinterFactory
from receipts.tests.fake_printer import DEAD_PORT, PRINTER_PORT, FakePrinter


def test_sale_receipt_page_shows_the_png_preview(admin_client, cash_sale):
    page = admin_client.get(reverse("admin:receipts_salereceipt_change", args=[cash_sale.pk])).content.decode()
    preview_url = reverse("admin:receipts_salereceipt_preview", args=[cash_sale.pk])
    assert f'<img src="{preview_url}" alt="Receipt DEMO-0000001"' in page
    response = admin_client.get(preview_url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")


def test_another_shops_manager_cannot_preview_the_receipt(client, cash_sale):
    manager = UserFactory(username="boss")
    add_staff(manager, ShopFactory(code="OTHR"), "manager")
    client.force_login(manager)
    assert client.get(reverse("admin:receipts_salereceipt_preview", args=[cash_sale.pk])).status_code == 404


def test_reprint_action_on_sales_sends_a_copy(admin_client, cash_sale):
    response = admin_client.post(reverse("admin:receipts_salereceipt_changelist"),
                                 {"action": "reprint", "_selected_action": [cash_sale.pk]}, follow=True)
    assert "The copy was printed on the default printer." in response.content.decode()
    assert PrintJob.objects.get(sale=cash_sale).is_copy


def test_print_jobs_list_filters_by_status_and_retries(admin_client, till, cash_sale):
    PrinterFactory(till=till, name="Counter", profile="default", port=DEAD_PORT)
    job = PrintJob.objects.create(sale=cash_sale, printer=till.printers.get(), data=b"\x1b@hi\n",
                                  status=PrintJob.Status.FAILED, attempts=5, last_error="off")
    changelist = reverse("admin:receipts_printjob_changelist")
    assert "DEMO-0000001" in admin_client.get(changelist, {"status__exact": "failed"}).content.decode()
    assert "DEMO-0000001" not in admin_client.get(changelist, {"status__exact": "done"}).content.decode()
    assert admin_client.get(reverse("admin:receipts_printjob_change", args=[job.pk])).status_code == 200
    with FakePrinter(DEAD_PORT) as printer:
        admin_client.post(changelist, {"action": "retry_jobs", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == PrintJob.Status.DONE and printer.jobs == [b"\x1b@hi\n"]


def test_print_jobs_cannot_be_edited(admin_client, cash_sale):
    job = PrintJob.objects.create(sale=cash_sale, data=b"x")
    page = admin_client.get(reverse("admin:receipts_printjob_change", args=[job.pk])).content.decode()
    assert 'name="status"' not in page
    assert admin_client.get(reverse("admin:receipts_printjob_add")).status_code == 403


@pytest.mark.parametrize("port,message", [
    (PRINTER_PORT, f"Test page sent to Counter (tcp://127.0.0.1:{PRINTER_PORT})."),
    (DEAD_PORT, f"Printer Counter is not answering at 127.0.0.1:{DEAD_PORT}"),
], ids=["printer-on", "printer-off"])
def test_printer_test_print_action(admin_client, till, port, message):
    printer = PrinterFactory(till=till, name="Counter", profile="default", port=port)
    with FakePrinter(PRINTER_PORT) as listener:
        response = admin_client.post(reverse("admin:receipts_printer_changelist"),
                                     {"action": "print_test_page", "_selected_action": [printer.pk]}, follow=True)
    assert message in response.content.decode()
    assert len(listener.jobs) == (1 if port == PRINTER_PORT else 0)


def test_printer_form_explains_what_a_kind_needs(admin_client, till):
    response = admin_client.post(reverse("admin:receipts_printer_add"), {
        "till": till.pk, "name": "Front", "kind": "usb", "port": 9100, "usb_vendor_id": "04zz",
        "paper_width": 58, "profile": "POS-9999", "is_active": "on",
    })
    form = response.context["adminform"].form
    assert form.errors["usb_vendor_id"] == ["4 hex digits, as lsusb shows them (e.g. 04b8)."]
    assert form.errors["usb_product_id"] == ["Needed for this kind of printer."]
    assert "Unknown profile" in form.errors["profile"][0]


def test_shops_manager_sees_the_receipts_pages(client, shop, till, cash_sale):
    manager = UserFactory(username="boss")
    add_staff(manager, shop, "manager")
    client.force_login(manager)
    PrinterFactory(till=till)
    PrintJob.objects.create(sale=cash_sale, data=b"x", status=PrintJob.Status.DONE)
    for name in ("receipts_salereceipt_changelist", "receipts_printjob_changelist", "receipts_printer_changelist"):
        response = client.get(reverse(f"admin:{name}"))
        assert response.status_code == 200, name
    assert "DEMO-0000001" in client.get(reverse("admin:receipts_salereceipt_changelist")).content.decode()
    assert client.get(reverse("admin:receipts_salereceipt_preview", args=[cash_sale.pk])).status_code == 200
