"""Issue 2 bench: the till's product lookup and a 10-line cash sale on a chain-sized database.

    .venv/bin/python bench/bench_till.py [--fresh] [--products 50000] [--sales 100000] [--requests 200]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, as CI has). Builds the database `bench_till` with
`seed_demo --products/--sales` (a fresh build first measures with no past sales), then measures
through the real views: in-process with Django's test client (server time, query count) and over
HTTP against one gunicorn worker on port 8115 with DEBUG off (latency, the worker's resident memory).
Prints figures; asserts nothing. Targets (issue 2): lookup ≤ 10 ms and ≤ 2 queries; a 10-line
cash sale ≤ 40 ms, not growing with past sales; one worker ≤ 150 MB.
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import requests
from figures import Figures, add_report_arguments
from server_env import production_env, seed_env

BASE_DIR = Path(__file__).resolve().parent.parent
DB_NAME = "bench_till"
PG = "postgres://postgres@127.0.0.1:5432"
PORT = 8115
# Each summary line's figures by label, for --json.
MEASURED = {}
PYTHON = sys.executable
SERVER_ENV = production_env(f"{PG}/{DB_NAME}")
SEED_ENV = seed_env(SERVER_ENV)


def manage(*args, env):
    subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env={**os.environ, **env}, check=True)


def prepare_database(fresh: bool) -> bool:
    """Create bench_till if missing (or again with --fresh); True when it starts empty."""
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if exists and fresh:
            conn.execute(f"DROP DATABASE {DB_NAME} WITH (FORCE)")
        if not exists or fresh:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
    manage("migrate", "--noinput", "-v0", env=SEED_ENV)
    with psycopg.connect(f"{PG}/{DB_NAME}") as conn:
        return conn.execute("SELECT count(*) FROM pos_sale").fetchone()[0] == 0


def analyze() -> None:
    """Fresh planner statistics, as autovacuum would have on a database that grew over months."""
    with psycopg.connect(f"{PG}/{DB_NAME}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def summary(label: str, millis: list[float], queries: list[int] | None = None) -> None:
    p95 = statistics.quantiles(millis, n=20)[-1] if len(millis) >= 20 else max(millis)
    line = f"  {label:<44} median {statistics.median(millis):7.2f} ms   p95 {p95:7.2f} ms   n={len(millis)}"
    if queries is not None:
        line += f"   queries median {statistics.median(queries):g} (max {max(queries)})"
    print(line, flush=True)
    MEASURED[label] = {"median": statistics.median(millis), "p95": p95, "n": len(millis),
                       "queries": max(queries) if queries is not None else None}


class InProcess:
    """The real URL → middleware → view → database path, timed inside this process."""

    def __init__(self):
        os.environ.update(SERVER_ENV)
        os.environ["DJANGO_SETTINGS_MODULE"] = "comolor.settings"
        sys.path.insert(0, str(BASE_DIR))
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        from pos.services import find_open_shift, open_shift

        self.connection, self.capture = connection, CaptureQueriesContext
        cashier = get_user_model().objects.select_related("staff__default_till").get(username="cashier")
        till = cashier.staff.default_till
        if find_open_shift(till_id=till.pk) is None:  # sales are rung up in a shift
            open_shift(till=till, user=cashier, opening_float=0)
        self.client = Client()
        self.client.force_login(cashier)

    def barcodes(self, count: int, rng: random.Random) -> list[str]:
        from inventory.models import StockLevel

        codes = list(StockLevel.objects.filter(shop__code="DEMO", on_hand__gte=20)
                     .values_list("product__barcode", flat=True))
        return rng.sample(codes, min(count, len(codes)))

    def timed(self, method: str, path: str, body: dict | None = None) -> tuple[float, int, object]:
        with self.capture(self.connection) as queries:
            start = time.perf_counter()
            if method == "GET":
                response = self.client.get(path)
            else:
                response = self.client.post(path, json.dumps(body), content_type="application/json")
            elapsed = (time.perf_counter() - start) * 1000
        if response.status_code not in (200, 201):
            raise SystemExit(f"{method} {path} answered {response.status_code}: {response.content[:300]!r}")
        return elapsed, len(queries), list(queries.captured_queries)

    def lookups(self, barcodes: list[str]) -> None:
        for code in barcodes[:20]:  # warm-up: connection, caches, imports
            self.timed("GET", f"/cashier/products?q={code}")
        results = [self.timed("GET", f"/cashier/products?q={code}") for code in barcodes]
        summary("product lookup by barcode (in-process)", [r[0] for r in results], [r[1] for r in results])
        return results[-1][2]

    def sales(self, barcodes: list[str], count: int, rng: random.Random, label: str, hooks: bool = True):
        from django.test import override_settings

        results = []
        with override_settings(**({} if hooks else {"POS_SALE_COMPLETED_HOOKS": []})):
            for i in range(count + 5):
                items = [{"barcode": code, "quantity": rng.randint(1, 2)} for code in rng.sample(barcodes, 10)]
                body = {"items": items, "payment_method": "cash", "amount_tendered": "100000"}
                result = self.timed("POST", "/cashier/create-sale", body)
                if i >= 5:  # the first few warm up
                    results.append(result)
        summary(label, [r[0] for r in results], [r[1] for r in results])
        return results[-1][2]

    def session_cookie(self) -> str:
        return self.client.cookies["sessionid"].value


def gunicorn_phase(session_id: str, barcodes: list[str], count: int, rng: random.Random) -> None:
    server = subprocess.Popen(
        [str(BASE_DIR / ".venv/bin/gunicorn"), "comolor.wsgi", "--workers", "1", "--bind", f"127.0.0.1:{PORT}",
         "--log-level", "warning"],
        cwd=BASE_DIR, env={**os.environ, **SERVER_ENV}, start_new_session=True,
    )
    try:
        http = requests.Session()
        # The CSRF cookie holds a secret the client may choose; the header repeats it (DRF checks both).
        csrf = "b" * 32
        http.cookies.set("sessionid", session_id)
        http.cookies.set("csrftoken", csrf)
        base = f"http://127.0.0.1:{PORT}"
        for _ in range(100):
            try:
                http.get(f"{base}/cashier/products?q=x", timeout=30)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        lookups, sales = [], []
        for code in barcodes:
            start = time.perf_counter()
            response = http.get(f"{base}/cashier/products", params={"q": code}, timeout=10)
            lookups.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
        for _ in range(count):
            items = [{"barcode": code, "quantity": 1} for code in rng.sample(barcodes, 10)]
            start = time.perf_counter()
            response = http.post(f"{base}/cashier/create-sale", timeout=10, headers={"X-CSRFToken": csrf},
                                 json={"items": items, "payment_method": "cash", "amount_tendered": "100000"})
            sales.append((time.perf_counter() - start) * 1000)
            if response.status_code != 201:
                raise SystemExit(f"create-sale over HTTP answered {response.status_code}: {response.text[:300]}")
        summary("product lookup over HTTP (gunicorn, 1 worker)", lookups)
        summary("10-line cash sale over HTTP (gunicorn)", sales)
        workers = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
        for pid in workers:
            rss = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS"))
            kb = int(rss.split()[1])
            MEASURED["worker MB"] = max(MEASURED.get("worker MB", 0), kb / 1024)
            print(f"  gunicorn worker {pid} resident memory after {len(lookups) + len(sales)} requests: "
                  f"{kb / 1024:.1f} MB", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="drop and rebuild the bench_till database")
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--sales", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="lookups per measurement")
    parser.add_argument("--sale-requests", type=int, default=50, help="sales per measurement")
    parser.add_argument("--port", type=int, default=PORT, help="port of the gunicorn worker it starts")
    parser.add_argument("--db-name", default=DB_NAME, help="PostgreSQL database it builds (and reuses)")
    add_report_arguments(parser)
    args = parser.parse_args()
    set_target(args.db_name, args.port)
    rng = random.Random(115)
    print("Load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f} on {} CPUs".format(*os.getloadavg(), os.cpu_count()))

    empty = prepare_database(args.fresh)
    print(f"Building {DB_NAME}: {args.products:,} products" + ("" if empty else " (database already had sales)"),
          flush=True)
    manage("seed_demo", "--products", str(args.products), env=SEED_ENV)
    analyze()
    bench = InProcess()
    barcodes = bench.barcodes(args.requests, rng)
    if empty:
        print("\nWith no past sales:")
        bench.sales(barcodes, args.sale_requests, rng, "10-line cash sale (in-process, 0 past sales)")
    else:
        print("\n(0-past-sales figure skipped: the database already has sales; run with --fresh)")

    print(f"\nAdding past sales up to {args.sales:,}:", flush=True)
    bench.connection.close()
    manage("seed_demo", "--sales", str(args.sales), env=SEED_ENV)
    analyze()
    print(f"\nWith {args.sales:,} past sales and {args.products:,} products (PostgreSQL, DEBUG off):")
    lookup_sql = bench.lookups(barcodes)
    sale_sql = bench.sales(barcodes, args.sale_requests, rng, "10-line cash sale (in-process)")
    bench.sales(barcodes, args.sale_requests, rng, "10-line cash sale, no sale-completed hooks", hooks=False)
    print("\n  Queries of one lookup:")
    for query in lookup_sql:
        print(f"    {query['time']}s  {query['sql'][:150]}")
    print(f"\n  The slowest of the {len(sale_sql)} queries of one sale:")
    for query in sorted(sale_sql, key=lambda q: -float(q["time"]))[:5]:
        print(f"    {query['time']}s  {query['sql'][:150]}")
    bench.connection.close()

    print(f"\nOver HTTP, one gunicorn worker on port {PORT}:")
    gunicorn_phase(bench.session_cookie(), barcodes, args.sale_requests, rng)
    write_figures(args)


def set_target(db_name: str, port: int) -> None:
    global DB_NAME, PORT
    DB_NAME, PORT = db_name, port
    SERVER_ENV["DATABASE_URL"] = SEED_ENV["DATABASE_URL"] = f"{PG}/{DB_NAME}"


def write_figures(args) -> None:
    figures = Figures("bench_till", issue=2)
    lookup, sale = MEASURED["product lookup by barcode (in-process)"], MEASURED["10-line cash sale (in-process)"]
    figures.add("product lookup by barcode, median server time", lookup["median"], "ms", at_most=10,
                detail=f"p95 {lookup['p95']:.2f} ms, n={lookup['n']}")
    figures.add("queries per product lookup (most)", lookup["queries"], "queries", at_most=2)
    figures.add(f"10-line cash sale, median server time, {args.sales:,} past sales", sale["median"], "ms",
                at_most=40, detail=f"p95 {sale['p95']:.2f} ms, receipt hook on")
    fresh = MEASURED.get("10-line cash sale (in-process, 0 past sales)")
    if fresh:
        figures.add("queries per 10-line cash sale: growth from 0 to {:,} past sales".format(args.sales),
                    sale["queries"] - fresh["queries"], "queries", at_most=0,
                    detail=f"{fresh['queries']} with none, {sale['queries']} with {args.sales:,}; median "
                           f"{fresh['median']:.2f} ms with none")
    else:
        figures.note("The 0-past-sales sale was not measured (the database already had sales; run with --fresh).")
    quiet = MEASURED["10-line cash sale, no sale-completed hooks"]
    figures.add("10-line cash sale without the receipt hook, median", quiet["median"], "ms")
    figures.add("product lookup over HTTP (gunicorn, 1 worker), median", MEASURED[
        "product lookup over HTTP (gunicorn, 1 worker)"]["median"], "ms")
    figures.add("10-line cash sale over HTTP (gunicorn), median", MEASURED[
        "10-line cash sale over HTTP (gunicorn)"]["median"], "ms")
    figures.add("gunicorn worker resident memory", round(MEASURED["worker MB"], 1), "MB", at_most=150)
    figures.note(f"{args.products:,} products, {args.sales:,} past sales, PostgreSQL, DEBUG off.")
    figures.write(args.json)


if __name__ == "__main__":
    main()
