import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.utils.module_loading import import_string

logger = logging.getLogger("pos.worker")


class Command(BaseCommand):
    help = (
        "The background worker: runs each task in POS_WORKER_TASKS (M-Pesa sweeps, print retries…) "
        "every --interval seconds until stopped. Several workers may run at once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=settings.POS_WORKER_INTERVAL,
                            help="seconds between rounds (default %(default)s)")
        parser.add_argument("--once", action="store_true", help="run one round and exit")

    def handle(self, *args, interval, once, **options):
        tasks = [(path, import_string(path)) for path in settings.POS_WORKER_TASKS]
        self.stdout.write(f"pos_worker: {len(tasks)} task(s) every {interval:g}s: "
                          + ", ".join(path for path, _ in tasks))
        failed = False
        while True:
            for path, task in tasks:
                close_old_connections()
                try:
                    done = task()
                    if done:
                        logger.info("%s: %s", path, done)
                except Exception:
                    failed = True
                    logger.exception("worker task %s failed; it runs again next round", path)
            if once:
                break
            time.sleep(interval)
        if once and failed:
            raise SystemExit(1)
