"""Real concurrency for tests on PostgreSQL: calls in their own threads and connections, released
together by a barrier, so row locks and constraints (not luck) decide who wins."""

import threading

from django.db import connection

from pos.services import SaleError


def run_at_once(calls, *, timeout: float = 60) -> list:
    """Each call's result, or the exception it raised, in the order of `calls`."""
    barrier = threading.Barrier(len(calls))
    outcomes = [None] * len(calls)

    def worker(i, call):
        try:
            barrier.wait(timeout=10)
            outcomes[i] = call()
        except Exception as error:  # the outcome under test, kept for the assertions
            outcomes[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread hung: deadlock?"
    return outcomes


def at_once(*calls) -> list[tuple[str, object]]:
    """run_at_once for workflows that refuse in words: ("ok", result) or ("refused", message);
    any other exception is a bug and is raised."""
    outcomes = []
    for outcome in run_at_once(calls):
        if isinstance(outcome, SaleError):
            outcomes.append(("refused", str(outcome)))
        elif isinstance(outcome, Exception):
            raise outcome
        else:
            outcomes.append(("ok", outcome))
    return outcomes
