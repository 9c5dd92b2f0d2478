from django.core.management.base import BaseCommand, CommandError

from mpesa.daraja import DarajaError, get_client


class Command(BaseCommand):
    help = "Ask Daraja how an STK push ended (STK Query), by its CheckoutRequestID."

    def add_arguments(self, parser):
        parser.add_argument("checkout_request_id", help="e.g. ws_CO_21072024125243250722943992")
        parser.add_argument("--shortcode", help="the push's paybill or store number (default MPESA_SHORTCODE)")

    def handle(self, *args, checkout_request_id, shortcode, **options):
        try:
            result = get_client().stk_query(checkout_request_id=checkout_request_id, shortcode=shortcode)
        except DarajaError as error:
            raise CommandError(error.message) from error
        if result.pending:
            self.stdout.write(f"{checkout_request_id}: pending: the customer has not answered the prompt yet.")
        elif result.result_code == 0:
            self.stdout.write(self.style.SUCCESS(f"{checkout_request_id}: paid (ResultCode 0: {result.result_desc})."))
        else:
            code = result.raw.get("ResultCode") if result.result_code is None else result.result_code
            self.stdout.write(f"{checkout_request_id}: not paid (ResultCode {code}: {result.result_desc}).")
