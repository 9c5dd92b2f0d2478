"""Figures in a form bench/report.py reads: every bench script takes `--json PATH` and writes there
what it measured, each figure with the target its issue set, beside its usual printed output.

    from figures import Figures, add_report_arguments

    add_report_arguments(parser)                       # --json PATH
    figures = Figures("bench_till", issue=2)
    figures.add("product lookup by barcode, median server time", 3.1, "ms", at_most=10, detail="p95 4.0 ms")
    figures.add("queries per lookup (max)", 2, "queries", at_most=2)
    figures.add("lookup over HTTP, median", 5.2, "ms")  # no target: shown for comparison
    figures.note("The database already had sales: the 0-past-sales figure was not measured.")
    figures.write(args.json)                           # does nothing when --json was not given

A script that cannot measure (a data set or a service missing) calls `figures.skip(reason)` and writes
anyway, so the report says why instead of guessing.
"""

import json
import os
import time
from pathlib import Path


def add_report_arguments(parser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH (for bench/report.py)")


class Figures:
    def __init__(self, bench: str, *, issue: int):
        self.document = {"bench": bench, "issue": issue, "figures": [], "notes": [], "skipped": None,
                         "load_average_before": os.getloadavg()[0], "started": time.time()}

    def add(self, name: str, value: float | int, unit: str, *, at_most: float | None = None,
            at_least: float | None = None, detail: str = "") -> None:
        target, passed = None, None
        if at_most is not None:
            target, passed = f"≤ {at_most:g} {unit}", value <= at_most
        elif at_least is not None:
            target, passed = f"≥ {at_least:g} {unit}", value >= at_least
        self.document["figures"].append({"name": name, "value": value, "unit": unit, "target": target,
                                         "passed": passed, "detail": detail})

    def note(self, text: str) -> None:
        self.document["notes"].append(text)

    def skip(self, reason: str) -> None:
        self.document["skipped"] = reason

    def write(self, path: str | None) -> None:
        if not path:
            return
        self.document["load_average_after"] = os.getloadavg()[0]
        self.document["seconds"] = round(time.time() - self.document["started"], 1)
        Path(path).write_text(json.dumps(self.document, indent=2, default=str))
