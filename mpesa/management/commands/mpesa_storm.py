from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

ZERO_FIGURES = ("lost", "double-counted", "stuck pending", "answered without a raw row", "invariant violations",
                "unexpected outcomes")


class Command(BaseCommand):
    help = (
        "Storm test: ring up M-Pesa sales through the till's HTTP endpoints on gunicorn (started here, on "
        "--port and --port+1 for the simulator) and deliver their callbacks duplicated, in bursts, out of "
        "order, lost, with wrong amounts and repeated as C2B; then sweep and check the books. Exits non-zero "
        "unless lost, double-counted, stuck, missing raw rows, invariant violations and unexpected outcomes "
        "are all zero. Needs PostgreSQL and MPESA_ENVIRONMENT=simulator with DEBUG=True; use a scratch database."
    )

    def add_arguments(self, parser):
        parser.add_argument("--callbacks", type=int, default=100, help="callbacks to send (default %(default)s)")
        parser.add_argument("--wave", type=int, default=40, help="sales rung up per wave (default %(default)s)")
        parser.add_argument("--clients", type=int, default=4, help="tills ringing up at once (default %(default)s)")
        parser.add_argument("--senders", type=int, default=8,
                            help="callbacks in flight at once, besides bursts (default %(default)s)")
        parser.add_argument("--mix", default="", help="fractions of sales per scenario, e.g. "
                            "duplicate=0.1,burst=0.02,lost=0.06,wrong_amount=0.03,c2b_repeat=0.08,failed=0.04,"
                            "scarce=0.08 (these are the defaults)")
        parser.add_argument("--seed", type=int, default=8, help="random seed (default %(default)s)")
        parser.add_argument("--port", type=int, default=8460, help="shop's gunicorn port; the simulator's is +1")
        parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server (4 threads each)")
        parser.add_argument("--fault", default="", help="a shell command run once, in the background, during "
                            "the storm (e.g. restart PostgreSQL); non-200 answers are then allowed")
        parser.add_argument("--fault-at", type=float, default=0.3,
                            help="when to run --fault: the fraction of --callbacks sent (default %(default)s)")

    def handle(self, *args, **options):
        if "mpesa.simulator" not in settings.INSTALLED_APPS:
            raise CommandError("The storm needs the Daraja simulator: run it with MPESA_ENVIRONMENT=simulator and "
                               "DEBUG=True, on a scratch PostgreSQL database.")
        # The simulator's models exist only when it is installed.
        from mpesa.simulator.storm import Storm, StormError, parse_mix

        try:
            storm = Storm(
                callbacks=options["callbacks"], wave=options["wave"], clients=options["clients"],
                senders=options["senders"], mix=parse_mix(options["mix"]), seed=options["seed"],
                port=options["port"], workers=options["workers"], fault=options["fault"],
                fault_at=options["fault_at"], out=self.stdout,
            )
            figures = storm.run()
        except StormError as error:
            raise CommandError(str(error)) from error
        wrong = [name for name in ZERO_FIGURES if figures[name]]
        if figures["non-200 answers"] and not options["fault"]:
            wrong.append("non-200 answers")
        if wrong:
            raise CommandError(f"The books did not survive the storm: {', '.join(wrong)} not zero (see above).")
        self.stdout.write(self.style.SUCCESS(
            f"OK: {figures['callbacks sent']:,} callbacks, nothing lost, nothing counted twice, nothing stuck."))
