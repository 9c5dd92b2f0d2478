from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from mpesa.conf import account_problems, configuration_problems, mpesa_config
from mpesa.daraja import DarajaError, get_client
from mpesa.models import MpesaAccount


class Command(BaseCommand):
    help = (
        "Diagnose the M-Pesa (Daraja) set-up: reads the MPESA_* settings and each shop's M-Pesa account, "
        "says in words what is wrong (credentials, environment, till vs paybill, callback URLs), then "
        "asks Daraja for an access token. Exits non-zero when something must be fixed."
    )
    # It reports the M-Pesa system check's findings itself, in more detail, instead of stopping on them.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--no-token", action="store_true", help="only read the configuration; do not call Daraja")

    def handle(self, *args, no_token, **options):
        config = mpesa_config()
        account = (f"store {config.shortcode}, till {config.till_number or '(not set)'}" if config.is_till
                   else f"paybill {config.shortcode or '(not set)'}")
        self.stdout.write(
            f"Environment:  {config.environment}\n"
            f"Daraja:       {config.base_url}{' (MPESA_BASE_URL)' if config.base_url_overridden else ''}\n"
            f"Account:      {account}\n"
            f"Callbacks to: {config.callback_base_url}\n"
            f"C2B version:  {config.c2b_version}, ResponseType {config.c2b_response_type}\n"
            f"Timeouts:     connect {config.connect_timeout:g} s, read {config.read_timeout:g} s"
        )
        failures = 0
        problems = configuration_problems(config)
        for problem in problems:
            failures += problem.is_error
            style = self.style.ERROR if problem.is_error else self.style.WARNING
            self.stdout.write(style(f"{'ERROR' if problem.is_error else 'WARNING'} {problem.id}: {problem.message}"))
            if problem.hint:
                self.stdout.write(f"    {problem.hint}")
        try:
            accounts = list(MpesaAccount.objects.filter(is_active=True).select_related("shop").order_by("shop__code"))
        except DatabaseError as exc:
            failures += 1
            accounts = []
            self.stdout.write(self.style.ERROR(f"ERROR: cannot read the shops' M-Pesa accounts ({exc}); "
                                               "has `manage.py migrate` run?"))
        for shop_account in accounts:
            for message in account_problems(shop_account):
                failures += 1
                self.stdout.write(self.style.ERROR(f"ERROR: {message}"))

        if any(problem.id == "mpesa.E001" for problem in problems):
            self.stdout.write("Not asking Daraja for a token until the credentials are set.")
        elif not no_token:
            try:
                get_client().access_token(fresh=True)
            except DarajaError as error:
                failures += 1
                self.stdout.write(self.style.ERROR(f"ERROR: no access token from {config.base_url}: {error.message}"))
            else:
                self.stdout.write(self.style.SUCCESS(f"OK: {config.base_url} accepted the consumer key and secret."))
        if failures:
            raise CommandError(f"{failures} M-Pesa problem(s) to fix; see above.")
        self.stdout.write(self.style.SUCCESS("M-Pesa configuration looks right."))
