from django.core.management.base import BaseCommand

from mpesa.services import sweep_mpesa


class Command(BaseCommand):
    help = (
        "One round of M-Pesa recovery: re-run stored callbacks that were never applied, ask Daraja "
        "(STK Query) about prompts with no answer, and give up on those past the prompt lifetime. "
        "Safe to run in several processes at once; `manage.py pos_worker` runs it in a loop."
    )

    def handle(self, *args, **options):
        summary = sweep_mpesa()
        self.stdout.write(summary or "Nothing to do: no stale prompts or unprocessed callbacks.")
