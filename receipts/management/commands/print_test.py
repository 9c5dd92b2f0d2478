from django.core.management.base import BaseCommand, CommandError

from receipts.printing import PrintError
from receipts.services import print_test_page, resolve_printer


class Command(BaseCommand):
    help = (
        "Print a test page on a configured printer (its name in the admin) or on an address: "
        "tcp://192.168.1.50:9100, usb://04b8:0e15, serial:///dev/ttyUSB0, file:///path, lp://queue."
    )

    def add_arguments(self, parser):
        parser.add_argument("printer", help="a printer's name, or an address such as tcp://127.0.0.1:9100")
        parser.add_argument("--width", type=int, choices=[58, 80], help="paper width in mm for an address (default 80)")
        parser.add_argument("--profile", help="python-escpos profile for an address (default: default)")

    def handle(self, *args, printer, width, profile, **options):
        try:
            target = resolve_printer(printer, paper_width=width, profile=profile)
            named = f"{target.name} ({target.address}, " if target.name else f"{target.address} ("
            self.stdout.write(f"Printing a test page on {named}{target.paper_width} mm, profile {target.profile})…")
            where = print_test_page(target)
        except PrintError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(self.style.SUCCESS(f"Test page sent to {where}."))
