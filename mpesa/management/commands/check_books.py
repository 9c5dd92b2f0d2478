from django.core.management.base import BaseCommand, CommandError

from mpesa.invariants import check_books
from pos.models import Shop


class Command(BaseCommand):
    help = (
        "Prove the books are right: every callback kept raw, every M-Pesa payment one ledger row, every "
        "completed sale paid with its stock moved once, stock equal to its ledger. Lists each problem in "
        "words and exits non-zero if there is one."
    )

    def add_arguments(self, parser):
        parser.add_argument("--shop", metavar="CODE", help="check one shop (its code, e.g. DEMO); default: all")

    def handle(self, *args, shop=None, **options):
        shop_id = None
        if shop:
            shop_id = Shop.objects.filter(code=shop.upper()).values_list("pk", flat=True).first()
            if shop_id is None:
                raise CommandError(f"No shop has the code {shop!r}. Give a code as in the admin, e.g. DEMO.")
        problems = check_books(shop_id=shop_id)
        where = f"shop {shop.upper()}" if shop else "all shops"
        if not problems:
            self.stdout.write(self.style.SUCCESS(f"OK: the books of {where} are right."))
            return
        for problem in problems:
            self.stdout.write(f"- {problem}")
        raise CommandError(f"{len(problems)} problem(s) in the books of {where}; each line above names the rows.")
