"""One benchmark report: run every script in bench/ and write docs/performance.md.

    .venv/bin/python bench/report.py [--only till,callbacks] [--quick] [--output docs/performance.md]

Each script runs as its own process with `--json PATH` (see bench/figures.py) and its usual options
(bench_callbacks.py's `--json` prints a document of its own, converted here by `callback_figures`);
its printed output goes to bench/out/<name>.log. The report gives every figure an issue asked for with
its target and pass/miss, the command that measured it, and the machine: CPU, cores, memory, Python,
PostgreSQL, date. Before each script the machine's CPU use is sampled for a few seconds with nothing
of ours running; if other work was using it, the report says so at the top.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and the scripts' own requirements (see each --help).
A script that is missing, or writes no --json figures, is listed as not measured with the reason.
`--port-base` and `--db-prefix` keep a run apart from other people's on a shared machine.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"
OUT_DIR = BASE_DIR / "bench" / "out"
# CPU busy with something else above this share (sampled with nothing of ours running): "under load".
BUSY = 0.15
NAIROBI = datetime.timezone(datetime.timedelta(hours=3), "EAT")

# Every bench, in the order they run. `full` and `quick` are its options; `isolate(port, db)` the options
# that give it its own port and database; `asks` is what its issue wants, shown when it is not measured.
BENCHES = [
    {
        "name": "till", "script": "bench_till.py", "issue": 2, "title": "Till: product lookup and a cash sale",
        "full": ["--fresh"],
        "quick": ["--fresh", "--products", "5000", "--sales", "10000", "--requests", "100", "--sale-requests", "20"],
        "isolate": lambda port, db: ["--port", str(port), "--db-name", db or "bench_till"],
        "asks": "50,000 products and 100,000 past sales: lookup ≤ 10 ms median and ≤ 2 queries; a 10-line cash "
                "sale ≤ 40 ms median, queries not growing with past data; one gunicorn worker ≤ 150 MB.",
    },
    {
        "name": "callbacks", "script": "bench_callbacks.py", "issue": 4,
        "title": "M-Pesa callbacks and the status poll",
        "full": [], "quick": ["--seconds", "5"],
        "isolate": lambda port, db: ["--port", str(port), "--database", db or "bench_callbacks",
                                     "--redis", "redis://127.0.0.1:6379/13"],
        # This script's --json is a switch: one JSON document of its own shape on standard output.
        "stdout_json": lambda report: callback_figures(report),
        "asks": "Under gunicorn on PostgreSQL: ≥ 300 STK callbacks/s sustained with p99 ≤ 100 ms, a trivial JSON "
                "view in the same run; status poll p99 ≤ 20 ms.",
    },
    {
        "name": "receipts", "script": "bench_receipts.py", "issue": 6, "title": "Receipt rendering",
        "full": [], "quick": ["--runs", "50"],
        "isolate": lambda port, db: ["--database-url", f"{PG}/{db or 'h_rcpt'}"],
        "asks": "A 30-line receipt: build + ESC/POS ≤ 20 ms median; PNG preview ≤ 150 ms.",
    },
    {
        "name": "admin", "script": "bench_admin.py", "issue": 7, "title": "Back office at 1,000,000 sales",
        "full": [], "quick": [], "isolate": None,
        "asks": "seed_demo --sales 1000000 in under 10 minutes; with 1,000,000 sales and M-Pesa transactions: admin "
                "change lists and reconciliation queues ≤ 300 ms median with queries not growing with page size; "
                "daily settlement ≤ 500 ms; dashboard ≤ 1 s.",
    },
    {
        "name": "storm", "script": "bench_storm.py", "issue": 8, "title": "Callback storm",
        "full": [], "quick": [], "isolate": None,
        "asks": "10,000 callbacks through gunicorn and the simulator: lost, double-counted, stuck all zero.",
    },
]


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    cores = set()
    for chunk in cpuinfo.split("\n\n"):
        fields = {key.strip(): text.strip() for key, text in (line.split(":", 1) for line in chunk.splitlines()
                                                              if ":" in line)}
        if "core id" in fields:
            cores.add((fields.get("physical id"), fields["core id"]))
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    return {
        "CPU": model,
        "cores": f"{os.cpu_count()} logical" + (f", {len(cores)} physical" if cores else ""),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GB",
        "operating system": platform.platform(),
        "Python": platform.python_version(),
        "PostgreSQL": postgres_version(),
        "Django, gunicorn": library_versions(),
    }


def postgres_version() -> str:
    try:
        import psycopg

        with psycopg.connect(f"{PG}/postgres", connect_timeout=5) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except Exception as error:  # the report still says what it could not find out
        return f"unknown ({error})"


def library_versions() -> str:
    code = "import django, gunicorn; print(django.get_version(), gunicorn.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return ", ".join(result.stdout.split()) or "unknown"


def revision() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=BASE_DIR,
                           capture_output=True, text=True)
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def busy_share(seconds: float = 5.0) -> float:
    """How much of all CPUs' time went to work other than idling over `seconds` (from /proc/stat)."""
    def sample():
        fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total, idle = sample()
    time.sleep(seconds)
    total2, idle2 = sample()
    return 1 - (idle2 - idle) / max(total2 - total, 1)


def script_options(bench: dict, args) -> list[str]:
    options = list(bench["quick"] if args.quick else bench["full"])
    if args.port_base is not None or args.db_prefix:
        port = (args.port_base or 0) + BENCHES.index(bench) * 2
        db = f"{args.db_prefix}{bench['name']}" if args.db_prefix else None
        if bench["isolate"]:
            options += bench["isolate"](port, db)
        else:
            # Scripts written since: pass what their --help offers.
            offered = subprocess.run([sys.executable, str(BASE_DIR / "bench" / bench["script"]), "--help"],
                                     cwd=BASE_DIR, capture_output=True, text=True).stdout
            if args.port_base is not None and "--port" in offered:
                options += ["--port", str(port)]
            if db and "--db-name" in offered:
                options += ["--db-name", db]
    return options


def run(bench: dict, args) -> dict:
    script = BASE_DIR / "bench" / bench["script"]
    result = {**bench, "command": None, "figures": None, "why_not": None, "busy": None, "log": None}
    if not script.exists():
        result["why_not"] = f"`bench/{bench['script']}` does not exist yet."
        return result
    options = script_options(bench, args)
    result["command"] = shlex.join([".venv/bin/python", f"bench/{bench['script']}", *options])
    result["busy"] = busy_share()
    OUT_DIR.mkdir(exist_ok=True)
    log = OUT_DIR / f"{bench['name']}.log"
    result["log"] = log.relative_to(BASE_DIR)
    print(f"== {bench['name']}: {result['command']} (machine busy {result['busy']:.0%} before; log {log})", flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as out, log.open("w") as log_file:
        to_stdout = "stdout_json" in bench
        command = [sys.executable, str(script), *options, *(["--json"] if to_stdout else ["--json", out.name])]
        started = time.monotonic()
        try:
            finished = subprocess.run(command, cwd=BASE_DIR, stdout=out if to_stdout else log_file,
                                      stderr=log_file if to_stdout else subprocess.STDOUT, timeout=args.timeout)
            code = finished.returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {args.timeout} s"
        result["seconds"] = time.monotonic() - started
        text = Path(out.name).read_text()
    if text.strip():
        result["figures"] = json.loads(text)
        if to_stdout:
            log.write_text(log.read_text() + "\n" + text)
            result["figures"] = bench["stdout_json"](result["figures"])
        if result["figures"].get("skipped"):
            result["why_not"] = result["figures"]["skipped"]
    if code != 0:
        result["why_not"] = f"the script failed (exit {code}); see `{result['log']}`."
    elif not text.strip():
        result["why_not"] = f"the script wrote no `--json` figures; its output is in `{result['log']}`."
    print(f"   {'done' if not result['why_not'] else result['why_not']} in {result['seconds']:.0f} s", flush=True)
    return result


def callback_figures(report: dict) -> dict:
    """bench_callbacks.py's own JSON (one document per run) as figures with the targets of issue 4."""
    figures, missing = [], []

    def add(name, path, unit, at_most=None, at_least=None, detail=""):
        found = report
        for key in path:
            found = found.get(key) if isinstance(found, dict) else None
        if found is None:
            missing.append(".".join(path))
            return
        target, passed = None, None
        if at_most is not None:
            target, passed = f"≤ {at_most:g} {unit}", found <= at_most
        elif at_least is not None:
            target, passed = f"≥ {at_least:g} {unit}", found >= at_least
        figures.append({"name": name, "value": round(found, 2), "unit": unit, "target": target, "passed": passed,
                        "detail": detail})

    closed, paced = report.get("callbacks_closed", {}), report.get("callbacks_open", {})
    rate = paced.get("rate", 300)
    add("STK callbacks answered per second, most sustained (closed loop)", ["callbacks_closed", "rps"],
        "callbacks/s", at_least=300, detail=f"p99 {closed.get('p99_ms', 0):.1f} ms")
    add("sales completed per second behind them (closed loop)", ["callbacks_closed", "processing", "completed_per_s"],
        "sales/s", at_least=300, detail="callbacks are answered once stored and applied right after")
    add(f"STK callbacks answered per second, offered {rate:g}/s (open loop)", ["callbacks_open", "rps"],
        "callbacks/s", at_least=rate * 0.98)
    add(f"STK callback p99 at {rate:g}/s (open loop)", ["callbacks_open", "p99_ms"], "ms", at_most=100,
        detail=f"p50 {paced.get('p50_ms', 0):.1f} ms, max {paced.get('max_ms', 0):.1f} ms")
    add(f"received → sale completed, p99 at {rate:g}/s", ["callbacks_open", "processing", "lag_p99_ms"], "ms")
    add("trivial JSON view (GET /healthz), same run, closed loop", ["healthz", "rps"], "requests/s",
        detail=f"p99 {report.get('healthz', {}).get('p99_ms', 0):.1f} ms")
    add("callbacks/s ÷ healthz/s", ["ratio_callbacks_to_healthz"], "")
    add(f"status poll p99 (open loop, {report.get('poll_open', {}).get('rate', 0):g}/s)", ["poll_open", "p99_ms"],
        "ms", at_most=20)
    polled = report.get("callbacks_polled", {})
    add(f"STK callback p99 at {rate:g}/s while the tills poll", ["callbacks_polled", "p99_ms"], "ms",
        detail=f"{polled.get('polls_meanwhile', {}).get('rps', 0):.0f} polls/s; answered "
               f"{polled.get('rps', 0):.0f} callbacks/s")
    add("status poll p99 while the callbacks arrive", ["callbacks_polled", "polls_meanwhile", "p99_ms"], "ms")
    books = report.get("books", {})
    figures.append({"name": "books after the run: one payment, ledger row and stock movement per callback",
                    "value": int(bool(books.get("ok"))), "unit": "(1 = right)", "target": "= 1",
                    "passed": bool(books.get("ok")), "detail": ", ".join(f"{k} {v}" for k, v in books.items())})
    server = report.get("server", {})
    notes = ["gunicorn: " + ", ".join(f"{key} {setting}" for key, setting in server.items()) + "; receipt printing off."]
    if missing:
        notes.append("Not in the script's output (renamed?): " + ", ".join(missing) + ".")
    return {"bench": "bench_callbacks", "issue": 4, "figures": figures, "notes": notes, "skipped": None,
            "load_average_before": report.get("machine", {}).get("load_average_before", 0),
            "load_average_after": report.get("machine", {}).get("load_average_after", 0)}


def verdict(figure: dict) -> str:
    if figure["passed"] is None:
        return "–"
    return "**pass**" if figure["passed"] else "**MISS**"


def value(figure: dict) -> str:
    number = figure["value"]
    text = f"{number:,}" if isinstance(number, int) else f"{number:,.2f}".rstrip("0").rstrip(".")
    return f"{text} {figure['unit']}"


def write_report(results: list[dict], args, about: dict, started: datetime.datetime) -> str:
    measured = [r for r in results if r["figures"] and not r["why_not"]]
    busy = [r for r in results if r["busy"] is not None and r["busy"] > BUSY]
    lines = [
        "# Performance",
        "",
        f"Generated by `.venv/bin/python bench/report.py{' ' + ' '.join(args.argv) if args.argv else ''}` on "
        f"{started:%Y-%m-%d %H:%M} (Nairobi time) from commit {about['revision']}; "
        f"{(datetime.datetime.now(NAIROBI) - started).total_seconds() / 60:.0f} minutes in all. "
        "Each section gives the command that measured its figures; `--json` output is what this page is built from.",
        "",
    ]
    if busy:
        worst = max(r["busy"] for r in busy)
        lines += [
            f"> **Taken under load.** Other work was using up to {worst:.0%} of the CPUs just before "
            + ", ".join(f"{r['name']} ({r['busy']:.0%})" for r in busy)
            + " started, so these figures are pessimistic. Regenerate on a quiet machine: "
              "`.venv/bin/python bench/report.py`.",
            "",
        ]
    if args.quick:
        lines += ["> **Quick run** (`--quick`): smaller data sets and shorter runs than the issues set; "
                  "a smoke test of the benches, not the figures to quote.", ""]
    lines += ["## Summary", "", "| issue | figure | measured | target | |", "|---|---|---|---|---|"]
    for result in measured:
        for figure in result["figures"]["figures"]:
            if figure["target"]:
                lines.append(f"| {result['issue']} | {figure['name']} | {value(figure)} | {figure['target']} | "
                             f"{verdict(figure)} |")
    for result in results:
        if result["why_not"]:
            lines.append(f"| {result['issue']} | {result['title']}: not measured | – | see below | – |")
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {text} |" for key, text in about["machine"].items()]
    lines += [f"| date | {started:%Y-%m-%d %H:%M %Z} |", ""]
    for result in results:
        lines += [f"## {result['title']} (issue {result['issue']})", ""]
        if result["command"]:
            lines += [f"Command: `{result['command']}`", ""]
        if result["why_not"]:
            lines += [f"Not measured: {result['why_not']}", "", f"The issue asks: {result['asks']}", ""]
        if not result["figures"]:
            continue
        document = result["figures"]
        lines += ["| figure | measured | target | | detail |", "|---|---|---|---|---|"]
        for figure in document["figures"]:
            lines.append(f"| {figure['name']} | {value(figure)} | {figure['target'] or '–'} | {verdict(figure)} | "
                         f"{figure['detail'] or ''} |")
        lines.append("")
        for note in document["notes"]:
            lines.append(f"- {note}")
        lines.append(f"- Took {result['seconds']:.0f} s; CPUs {result['busy']:.0%} busy with other work just before; "
                     f"load average {document.get('load_average_before', 0):.1f} at its start, "
                     f"{document.get('load_average_after', 0):.1f} at its end (its own work included). "
                     f"Full output: `{result['log']}` (not kept in git).")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated benches to run: " + ", ".join(b["name"] for b in BENCHES))
    parser.add_argument("--quick", action="store_true", help="small data sets and short runs: a smoke test")
    parser.add_argument("--output", default=str(BASE_DIR / "docs" / "performance.md"))
    parser.add_argument("--port-base", type=int, help="give the benches ports from here up (default: their own)")
    parser.add_argument("--db-prefix", default="", help="prefix for the benches' database names")
    parser.add_argument("--timeout", type=int, default=3 * 3600, help="seconds one bench may take")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    chosen = set(args.only.split(",")) if args.only else {b["name"] for b in BENCHES}
    unknown = chosen - {b["name"] for b in BENCHES}
    if unknown:
        parser.error(f"unknown bench {', '.join(sorted(unknown))}")
    started = datetime.datetime.now(NAIROBI)
    about = {"machine": machine(), "revision": revision()}
    results = [run(bench, args) for bench in BENCHES if bench["name"] in chosen]
    Path(args.output).write_text(write_report(results, args, about, started))
    print(f"wrote {args.output}")
    failed = [r["name"] for r in results if r["why_not"] and r["command"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
