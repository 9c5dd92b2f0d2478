from django.core.management.base import BaseCommand, CommandError
from django.urls import NoReverseMatch

from mpesa.conf import callback_url, callback_url_problems, mpesa_config
from mpesa.daraja import DarajaError, get_client
from mpesa.models import MpesaAccount
from pos.models import Shop

ONE_TIME_RULE = (
    "In production Safaricom registers C2B URLs ONCE per shortcode: registering again fails with "
    "'Urls are already registered'. To change them later, delete them on the M-PESA Org portal "
    "(Self Services > URL Management, approved by two Business Manager/Administrator operators) or "
    "ask apisupport@safaricom.co.ke, then register again."
)


class Command(BaseCommand):
    help = (
        "Register the C2B confirmation and validation URLs (built from MPESA_CALLBACK_BASE_URL) with "
        "Daraja for every active shop M-Pesa account, and for MPESA_SHORTCODE if a shop has no account of its own. "
        "Refuses URLs Safaricom would refuse. In production registration is one-time: see --yes."
    )

    def add_arguments(self, parser):
        parser.add_argument("--shortcode", action="append", help="register only this shortcode (repeatable)")
        parser.add_argument("--response-type", choices=["Completed", "Cancelled"],
                            help="what M-Pesa does when our validation URL does not answer "
                                 "(default MPESA_C2B_RESPONSE_TYPE)")
        parser.add_argument("--c2b-version", choices=["v1", "v2"],
                            help="C2B API version (default MPESA_C2B_VERSION)")
        parser.add_argument("--yes", action="store_true",
                            help="in production: confirm you have checked the URLs (registration is one-time)")

    def handle(self, *args, shortcode, response_type, c2b_version, yes, **options):
        config = mpesa_config()
        try:
            confirmation_url = callback_url("c2b-confirmation")
            validation_url = callback_url("c2b-validation")
        except NoReverseMatch as exc:
            raise CommandError(
                "The C2B callback URLs are not routed (mpesa:c2b-confirmation, mpesa:c2b-validation)."
            ) from exc
        problems = [
            problem for url in (confirmation_url, validation_url)
            for problem in callback_url_problems(url, config.environment)
        ]
        if problems:
            raise CommandError("Safaricom would refuse these URLs, so nothing was registered:\n  "
                               + "\n  ".join(dict.fromkeys(problems)))
        shortcodes = shortcode or list(dict.fromkeys(
            MpesaAccount.objects.filter(is_active=True).order_by("shortcode").values_list("shortcode", flat=True)
        ))
        if not shortcode and config.shortcode not in shortcodes and (
                not shortcodes or Shop.objects.filter(mpesa_account__isnull=True).exists()):
            # Shops without an account of their own are paid through the configured one.
            shortcodes.append(config.shortcode)

        self.stdout.write(f"Confirmation URL: {confirmation_url}\nValidation URL:   {validation_url}")
        if config.environment == "production" and not yes:
            raise CommandError(f"{ONE_TIME_RULE}\nCheck the URLs above, then run again with --yes.")
        if config.environment == "production":
            self.stdout.write(ONE_TIME_RULE)

        failed = 0
        for code in shortcodes:
            try:
                result = get_client().register_c2b_urls(
                    shortcode=code, confirmation_url=confirmation_url, validation_url=validation_url,
                    response_type=response_type, version=c2b_version,
                )
            except DarajaError as error:
                failed += 1
                self.stdout.write(self.style.ERROR(f"{code}: not registered: {error.message}"))
            else:
                self.stdout.write(self.style.SUCCESS(f"{code}: registered ({result.response_description})."))
        if failed:
            raise CommandError(f"{failed} of {len(shortcodes)} shortcode(s) not registered; see above.")
