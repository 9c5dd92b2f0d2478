from django.core.management.base import BaseCommand, CommandError
from django.urls import NoReverseMatch

from comolor.logging import mask_phone
from mpesa.conf import BUY_GOODS_ONLINE, PAYBILL_ONLINE, callback_url, mpesa_config
from mpesa.daraja import DarajaError, DarajaUnavailable, get_client
from mpesa.phone import normalise_phone


class Command(BaseCommand):
    help = (
        "Send one STK push (the M-Pesa prompt) to a phone, outside any sale, and print its "
        "CheckoutRequestID. For testing a set-up: the result arrives at the STK callback URL and "
        "can be read with mpesa_stk_query."
    )

    def add_arguments(self, parser):
        parser.add_argument("phone", help="the customer's phone, e.g. 0712345678 or 254712345678")
        parser.add_argument("amount", type=int, help="whole shillings, 1 to 250000")
        parser.add_argument("reference", help="account reference shown on the phone (12 characters at most)")
        parser.add_argument("--description", default="Payment", help="13 characters at most (default %(default)s)")
        parser.add_argument("--shortcode", help="paybill, or a till's store number (default MPESA_SHORTCODE)")
        parser.add_argument("--till", help="push to this Buy Goods till (default MPESA_TILL_NUMBER when "
                                           "MPESA_SHORTCODE_TYPE=till)")
        parser.add_argument("--callback-url", help="where Daraja posts the result (default: the STK callback URL "
                                                   "built from MPESA_CALLBACK_BASE_URL)")

    def handle(self, *args, phone, amount, reference, description, shortcode, till, callback_url, **options):
        config = mpesa_config()
        till = till or (config.till_number if config.is_till and not shortcode else None)
        try:
            result = get_client().stk_push(
                phone=phone, amount=amount, account_reference=reference, description=description,
                callback_url=callback_url or _stk_callback_url(), shortcode=shortcode, party_b=till,
                transaction_type=BUY_GOODS_ONLINE if till else PAYBILL_ONLINE,
            )
        except DarajaUnavailable as error:
            raise CommandError(
                f"{error.message} The prompt may still have reached the phone: do not push again before "
                "checking the phone or the callback log."
            ) from error
        except DarajaError as error:
            raise CommandError(error.message) from error
        self.stdout.write(f"Prompt sent to {mask_phone(normalise_phone(phone))} for KES {amount}: "
                          f"{result.customer_message}")
        self.stdout.write(f"CheckoutRequestID: {result.checkout_request_id}")
        self.stdout.write(f"Follow it with: manage.py mpesa_stk_query {result.checkout_request_id}")


def _stk_callback_url() -> str:
    try:
        return callback_url("stk-callback")
    except NoReverseMatch as exc:
        raise CommandError("The STK callback URL cannot be built from settings here: pass --callback-url.") from exc
