"""Issue 7 bench: the back office on a chain-sized database (1,000,000 sales and M-Pesa payments).

    .venv/bin/python bench/bench_admin.py [--fresh] [--sales 1000000] [--repeat 15] [--json PATH]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres). Builds the database `comolor_big` once with
`seed_demo --shops 4 --products 20000 --sales N` (timed; --fresh builds it again) and reuses it after
that. Then, in-process through Django's test client with DEBUG off (server time, query count):
every admin change list (first page, and a filtered page), each at 20 and at 100 rows per page, as
the owner (whole chain) and as the DEMO shop's manager; the admin index with its reconciliation
queues and each queue's list; the daily settlement for one shop and day; the sales dashboard.
Prints a table of medians, p95s and query counts; asserts nothing. Beside each wall-clock median it
prints this process's CPU time and the time spent in SQL, since on a busy shared machine the wall
clock mostly measures waiting for a core. Targets (issue 7): change lists
and queues ≤ 300 ms median with a query count that does not grow with the page size; the
settlement ≤ 500 ms; the dashboard ≤ 1 s.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from figures import Figures, add_report_arguments
from server_env import production_env, seed_env

BASE_DIR = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"
DB_NAME = "comolor_big"
PYTHON = sys.executable
SERVER_ENV = production_env(f"{PG}/{DB_NAME}", log_level="ERROR")
SEED_ENV = seed_env(SERVER_ENV)
# A filtered page per change list ({shop}: the DEMO shop's id, {day}: yesterday, {year}/{month}: now).
FILTERED = {
    "pos.sale": "status__exact=completed&shop__id__exact={shop}",
    "pos.saleline": "",
    "pos.payment": "method__exact=mpesa",
    "pos.shift": "status__exact=closed",
    "pos.manageraction": "",
    "inventory.stocklevel": "stock=low&shop__id__exact={shop}",
    "inventory.stockmovement": "kind__exact=sale&shop__id__exact={shop}",
    "inventory.product": "q=Generated+item+0012",
    "mpesa.mpesatransaction": "match_status__exact=unmatched&shop__id__exact={shop}",
    "mpesa.stkrequest": "status__exact=unknown",
    "mpesa.callbacklog": "kind__exact=c2b_confirmation",
    "mpesa.darajacall": "",
}
# A search per big list, for a code a manager has in hand ({receipt}, {code}, {barcode}: real ones).
SEARCHES = {
    "pos.sale": "q={receipt}",
    "mpesa.mpesatransaction": "q={code}",
    "mpesa.stkrequest": "q={receipt}",
    "mpesa.callbacklog": "q={code}",
    "inventory.stockmovement": "q={barcode}",
    "inventory.stocklevel": "q=sugar",
    "receipts.salereceipt": "q={receipt}",
}
DRILL_DOWN = "{field}__year={year}&{field}__month={month}"  # a date_hierarchy month


def manage(*args) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env={**os.environ, **SEED_ENV}, check=True)


def build(args) -> float | None:
    """Create and fill the database unless it is there already; the seed's seconds, or None if reused."""
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if exists and args.fresh:
            conn.execute(f"DROP DATABASE {DB_NAME} WITH (FORCE)")
        if not exists or args.fresh:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
    manage("migrate", "--noinput", "-v0")
    with psycopg.connect(f"{PG}/{DB_NAME}") as conn:
        sales = conn.execute("SELECT count(*) FROM pos_sale").fetchone()[0]
    if sales >= args.sales:
        print(f"Reusing {DB_NAME}: {sales:,} sales already there (--fresh builds it again).")
        return None
    print(f"Building {DB_NAME}: seed_demo --shops 4 --products 20000 --sales {args.sales}", flush=True)
    started = time.monotonic()
    manage("seed_demo", "--shops", "4", "--products", "20000", "--sales", str(args.sales))
    seconds = time.monotonic() - started
    print(f"Seeded in {seconds:,.0f} s (load average now {os.getloadavg()[0]:.1f}).", flush=True)
    with psycopg.connect(f"{PG}/{DB_NAME}", autocommit=True) as conn:
        # A database that grew over months has been vacuumed: visibility maps let counts use indexes.
        conn.execute("VACUUM ANALYZE")
    return seconds


def settings_storages() -> dict:
    from django.conf import settings

    return settings.STORAGES


class Bench:
    def __init__(self, repeat: int):
        os.environ.update(SERVER_ENV)
        os.environ["DJANGO_SETTINGS_MODULE"] = "comolor.settings"
        sys.path.insert(0, str(BASE_DIR))
        import django

        django.setup()
        from django.test.utils import override_settings

        # Production serves hashed names from collectstatic's manifest; this in-process bench does not
        # build one, so it asks for the plain names (a dictionary lookup either way).
        override_settings(STORAGES={**settings_storages(), "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}).enable()
        from django.contrib import admin
        from django.contrib.auth import get_user_model
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        self.admin, self.connection, self.capture, self.repeat = admin, connection, CaptureQueriesContext, repeat
        User = get_user_model()
        self.clients = {}
        for role, username in (("owner", "admin"), ("manager", "manager")):
            client = Client()
            client.force_login(User.objects.get(username=username))
            self.clients[role] = client
        self.rows = []

    def get(self, role: str, url: str) -> tuple[float, int, object, float, float]:
        """(wall ms, queries, the queries, this process's CPU ms, ms spent waiting on SQL)."""
        with self.capture(self.connection) as queries:
            start, cpu = time.perf_counter(), time.process_time()
            response = self.clients[role].get(url)
            if getattr(response, "streaming", False):
                b"".join(response.streaming_content)
            elapsed, cpu = (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000
        if response.status_code != 200:
            raise SystemExit(f"GET {url} as {role} answered {response.status_code}: {response.content[:300]!r}")
        sql = sum(float(query["time"]) for query in queries.captured_queries) * 1000
        return elapsed, len(queries), queries.captured_queries, cpu, sql

    def measure(self, label: str, role: str, url: str, *, target: float, per_page: tuple | None = None) -> dict:
        """Median and p95 over `repeat` requests after two warm-ups; with per_page=(model_admin,),
        the query count at 20 and at 100 rows per page as well."""
        counts = {}
        if per_page:
            model_admin = per_page[0]
            saved = model_admin.list_per_page
            for size in (20, 100):
                model_admin.list_per_page = size
                counts[size] = self.get(role, url)[1]
            model_admin.list_per_page = saved
        for _ in range(2):
            self.get(role, url)
        runs = [self.get(role, url) for _ in range(self.repeat)]
        millis = sorted(run[0] for run in runs)
        row = {
            "label": label, "role": role, "url": url, "median": statistics.median(millis),
            "p95": statistics.quantiles(millis, n=20)[-1] if len(millis) >= 20 else millis[-1],
            "queries": runs[-1][1], "q20": counts.get(20), "q100": counts.get(100), "target": target,
            "cpu": statistics.median(run[3] for run in runs), "sql": statistics.median(run[4] for run in runs),
            "slowest": max(runs[-1][2], key=lambda q: float(q["time"])),
        }
        self.rows.append(row)
        ok = row["median"] <= target and (not counts or counts[20] == counts[100])
        grow = f"  q@20/100 {counts[20]}/{counts[100]}" if counts else ""
        print(f"  {'ok  ' if ok else 'MISS'} {label:<46} {role:<8} median {row['median']:6.0f} ms  p95 {row['p95']:6.0f}"
              f"  (CPU {row['cpu']:4.0f}, SQL {row['sql']:4.0f})  queries {row['queries']:2d}{grow}", flush=True)
        return row

    def change_lists(self, shop_id: int) -> None:
        from django.urls import reverse
        from django.utils import timezone

        from mpesa.models import MpesaTransaction
        from pos.models import Sale

        sale = Sale.objects.filter(shop_id=shop_id, status="completed").order_by("-id").first()
        self.codes = {
            "receipt": sale.receipt_number,
            "code": MpesaTransaction.objects.filter(shop_id=shop_id).order_by("-id").first().receipt_number,
            "barcode": sale.lines.first().product.barcode,
        }

        now = timezone.localtime()
        for model, model_admin in sorted(self.admin.site._registry.items(), key=lambda item: item[0]._meta.label):
            label = model._meta.label_lower
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
            for role in ("owner", "manager"):
                if not model_admin.has_view_permission(self._request(role)):
                    continue
                self.measure(f"{label} list", role, url, target=300, per_page=(model_admin,))
                query = FILTERED.get(label, "").format(shop=shop_id, year=now.year, month=now.month)
                if query:
                    self.measure(f"{label} list, filtered", role, f"{url}?{query}", target=300,
                                 per_page=(model_admin,))
                if label in SEARCHES:
                    self.measure(f"{label} list, search", role, f"{url}?{SEARCHES[label].format(**self.codes)}",
                                 target=300, per_page=(model_admin,))
                if model_admin.date_hierarchy:
                    self.measure(f"{label} list, one month", role,
                                 f"{url}?{DRILL_DOWN.format(field=model_admin.date_hierarchy, year=now.year, month=now.month)}",
                                 target=300,
                                 per_page=(model_admin,))

    def _request(self, role: str):
        from django.test import RequestFactory

        from django.contrib.auth import get_user_model

        request = RequestFactory().get("/admin/")
        request.user = get_user_model().objects.get(username={"owner": "admin", "manager": "manager"}[role])
        return request

    def queues(self) -> None:
        from django.urls import reverse

        for role in ("owner", "manager"):
            self.measure("admin index with the reconciliation queues", role, reverse("admin:index"), target=300)
        page = self.clients["owner"].get(reverse("admin:index")).content.decode()
        for url in sorted({part.split('"')[0] for part in page.split('href="')[1:] if "?queue=" in part.split('"')[0]}):
            self.measure(f"queue {url.split('?queue=')[1]}", "owner", url.replace("&amp;", "&"), target=300)

    def settlement(self, shop_id: int) -> None:
        from django.urls import NoReverseMatch, reverse
        from django.utils import timezone

        try:
            url = reverse("admin:mpesa_mpesatransaction_settlement")
        except NoReverseMatch:
            print("  (no daily settlement page yet: skipped)")
            return
        day = timezone.localdate() - timedelta(days=1)
        for role in ("owner", "manager"):
            self.measure("daily settlement, one shop and day", role, f"{url}?shop={shop_id}&date={day:%Y-%m-%d}",
                         target=500)

    def dashboard(self, shop_id: int) -> None:
        from django.urls import reverse

        url = reverse("admin:pos_sale_dashboard")
        self.measure("sales dashboard, all shops", "owner", url, target=1000)
        self.measure("sales dashboard, one shop", "owner", f"{url}?shop={shop_id}", target=1000)
        self.measure("sales dashboard, manager's shop", "manager", url, target=1000)

    def exports(self, shop_id: int) -> None:
        from django.urls import reverse
        from django.utils import timezone

        today = timezone.localdate()
        url = (reverse("admin:pos_sale_export") + f"?shop={shop_id}&date_from={today - timedelta(days=6):%Y-%m-%d}"
               f"&date_to={today:%Y-%m-%d}")
        self.measure("sales CSV, one shop, 7 days (streamed)", "owner", url, target=5000)
        self.measure("stock CSV, one shop (streamed)", "owner",
                     reverse("admin:inventory_stocklevel_export") + f"?shop={shop_id}", target=5000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help=f"drop and rebuild the {DB_NAME} database")
    parser.add_argument("--sales", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per page")
    parser.add_argument("--only", default="", help="measure only pages whose label contains this")
    add_report_arguments(parser)
    args = parser.parse_args()
    print("Load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f} on {} CPUs".format(*os.getloadavg(), os.cpu_count()))
    figures = Figures("bench_admin", issue=7)
    seed_seconds = build(args)

    bench = Bench(args.repeat)
    from pos.models import Sale, Shop
    from mpesa.models import MpesaTransaction

    shop_id = Shop.objects.get(code="DEMO").pk
    print(f"\n{Sale.objects.count():,} sales, {MpesaTransaction.objects.count():,} M-Pesa ledger rows "
          f"(PostgreSQL, DEBUG off), {args.repeat} timed requests per page:")
    stages = [("change lists", lambda: bench.change_lists(shop_id)), ("queues", bench.queues),
              ("settlement", lambda: bench.settlement(shop_id)), ("dashboard", lambda: bench.dashboard(shop_id)),
              ("exports", lambda: bench.exports(shop_id))]
    for name, stage in stages:
        if not args.only or args.only in name:
            print(f"\n{name.capitalize()}:")
            stage()
    report(bench.rows, seed_seconds, args, figures)


def report(rows, seed_seconds, args, figures) -> None:
    misses = [row for row in rows if row["median"] > row["target"] or (row["q20"] is not None and row["q20"] != row["q100"])]
    print(f"\n{len(rows)} pages measured, {len(misses)} missing their target.")
    for row in misses:
        print(f"  {row['label']} ({row['role']}): median {row['median']:.0f} ms, target {row['target']} ms; "
              f"slowest query {float(row['slowest']['time']) * 1000:.0f} ms: {row['slowest']['sql'][:300]}")
    if seed_seconds is not None:
        figures.add(f"seed_demo --sales {args.sales:,} (4 shops, 20,000 products)", round(seed_seconds), "s",
                    at_most=600)
    else:
        figures.note(f"The {DB_NAME} database was reused: the seed was not timed in this run (--fresh times it).")
    groups = [("change list", lambda r: "list" in r["label"] or r["label"].startswith("queue")
               or r["label"].startswith("admin index"), 300),
              ("daily settlement", lambda r: "settlement" in r["label"], 500),
              ("dashboard", lambda r: "dashboard" in r["label"], 1000)]
    for name, belongs, target in groups:
        chosen = [row for row in rows if belongs(row)]
        if chosen:
            worst = max(chosen, key=lambda r: r["median"])
            figures.add(f"slowest {name} page, median ({worst['label']}, {worst['role']})", round(worst["median"], 1),
                        "ms", at_most=target, detail=f"p95 {worst['p95']:.1f} ms, {len(chosen)} pages measured")
    growing = [row for row in rows if row["q20"] is not None and row["q20"] != row["q100"]]
    figures.add("change lists whose query count grows from 20 to 100 rows per page", len(growing), "pages", at_most=0,
                detail=", ".join(row["label"] for row in growing))
    figures.write(args.json)


if __name__ == "__main__":
    main()
