"""The delivery thread: one per process, alive only while prompts or deliveries are pending.

It sleeps until the next due time (or until woken by new work), runs
`services.run_due_work`, and exits when nothing is left, closing its database connection,
so an idle dev server holds no thread and no connection. State is in the database, so
work left by a restarted server is picked up by the next simulator request that wakes it.
"""

import logging
import threading
from datetime import timedelta

from django.db import close_old_connections, connection
from django.utils import timezone

logger = logging.getLogger("mpesa.simulator")

_lock = threading.Lock()
_woken = threading.Event()
_thread: threading.Thread | None = None
# Bounds how stale the thread's view of due times may get when another process adds work.
_LONGEST_SLEEP = 5.0


def wake_delivery_thread() -> None:
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            _woken.set()
            return
        _thread = threading.Thread(target=_run, name="daraja-sim-delivery", daemon=True)
        _thread.start()


def wait_until_idle(timeout: float) -> bool:
    """For tests of the threaded mode: True once the thread has finished its work and exited."""
    thread = _thread
    if thread is not None:
        thread.join(timeout)
        return not thread.is_alive()
    return True


def _run() -> None:
    global _thread
    from .services import next_due_at, run_due_work

    try:
        while True:
            _woken.clear()
            close_old_connections()
            try:
                run_due_work()
                due = next_due_at()
            except Exception:
                logger.exception("simulator delivery round failed; retrying shortly")
                due = timezone.now() + timedelta(seconds=1)
            if due is None:
                with _lock:
                    # Checked under the lock so a wake-up that raced with this decision is not lost.
                    if not _woken.is_set():
                        _thread = None
                        return
                continue
            wait = (due - timezone.now()).total_seconds()
            _woken.wait(timeout=min(max(wait, 0.05), _LONGEST_SLEEP))
    finally:
        connection.close()
