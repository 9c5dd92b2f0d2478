from django.core.management.base import BaseCommand, CommandError

from mpesa.services import describe_pull, pull_transactions
from pos.models import Shop


class Command(BaseCommand):
    help = (
        "Fetch the last hours of C2B payments from Daraja's Pull Transactions for every active shop "
        "M-Pesa account (or one shop's) and add the ones missing from the ledger, matched to sales as "
        "their confirmation would have been. Nothing already in the ledger changes. Daraja keeps 48 hours; "
        "the shortcode must be registered for Pull once (production only, with Safaricom)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=float, default=24,
                            help="how far back to look, at most 48 (default %(default)s)")
        parser.add_argument("--shop", help="only this shop's account (its code, e.g. DEMO)")

    def handle(self, *args, hours, shop, **options):
        if not 0 < hours <= 48:
            raise CommandError(f"--hours {hours:g}: Daraja keeps the last 48 hours; give a number from 1 to 48.")
        shop_id = None
        if shop:
            shop_id = Shop.objects.filter(code=shop.strip().upper()).values_list("pk", flat=True).first()
            if shop_id is None:
                raise CommandError(f"No shop with code {shop!r}. The codes are in the admin, under Shops.")
        self.stdout.write(f"Pulling the last {hours:g} hour(s) of M-Pesa payments from Daraja…")
        counts = pull_transactions(hours=hours, shop_id=shop_id, progress=self.stdout.write)
        if not counts["shortcodes"]:
            raise CommandError("No active M-Pesa account to pull for: the account(s) are switched off (inactive).")
        summary = describe_pull(counts)
        if counts["failed"]:
            raise CommandError(f"Not every shortcode could be pulled: {summary} Run it again once Daraja answers.")
        self.stdout.write(self.style.SUCCESS(f"Done: {summary}"))
