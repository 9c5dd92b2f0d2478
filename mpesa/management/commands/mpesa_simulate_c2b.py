from django.core.management.base import BaseCommand, CommandError

from mpesa.conf import BUY_GOODS_ONLINE, PAYBILL_ONLINE, mpesa_config
from mpesa.daraja import DarajaError, get_client


class Command(BaseCommand):
    help = (
        "Make a pretend customer payment to the paybill or till (C2B simulate; sandbox and simulator "
        "only). The confirmation arrives at the registered C2B URLs: run mpesa_register_urls first."
    )

    def add_arguments(self, parser):
        parser.add_argument("amount", type=int, help="whole shillings")
        parser.add_argument("--phone", default="254708374149", help="the paying phone (default %(default)s)")
        parser.add_argument("--account", default="", help="the account number the customer types (paybill only)")
        parser.add_argument("--shortcode", help="paybill to pay (default MPESA_SHORTCODE)")
        parser.add_argument("--till", help="pay this Buy Goods till instead (default MPESA_TILL_NUMBER when "
                                           "MPESA_SHORTCODE_TYPE=till)")

    def handle(self, *args, amount, phone, account, shortcode, till, **options):
        config = mpesa_config()
        till = till or (config.till_number if config.is_till and not shortcode else None)
        try:
            result = get_client().c2b_simulate(
                amount=amount, phone=phone, bill_ref_number=account, shortcode=till or shortcode,
                command_id=BUY_GOODS_ONLINE if till else PAYBILL_ONLINE,
            )
        except DarajaError as error:
            raise CommandError(error.message) from error
        if till:
            target = f"till {till}"
        else:
            target = f"paybill {shortcode or config.shortcode}" + (f" account {account}" if account else "")
        self.stdout.write(self.style.SUCCESS(
            f"Daraja accepted a KES {amount} payment to {target} ({result.response_description}; "
            f"OriginatorConversationID {result.originator_conversation_id or '-'})."
        ))
