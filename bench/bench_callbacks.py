"""Issue 4 bench: STK callbacks per second and their p99, a trivial JSON view (/healthz) in the same
run for comparison, and the till's status poll, over HTTP against gunicorn on PostgreSQL, DEBUG off.

    .venv/bin/python bench/bench_callbacks.py [--seconds 15] [--rate 300] [--json] [--help]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres), Redis on 127.0.0.1:6379 (the production cache:
sessions and rate limits) and `wrk` (Debian package). It rebuilds the database `--database`
(migrate), seeds one pending one-item sale with an open STK request per callback to be sent,
starts gunicorn with comolor/gunicorn.conf.py (MPESA_ENVIRONMENT=sandbox with dummy credentials:
a callback never calls Daraja; Safaricom's address allowlist plus this machine) and measures, each
phase for `--seconds`:

  1. GET /healthz, closed loop (wrk, `--connections` keep-alive connections): the ceiling of this
     machine, server and load generator for a request that does nothing;
  2. POST /hooks/stk/callback/<token>, closed loop (wrk): the most callbacks per second it
     sustains. Every callback is a distinct success that completes its sale, records the payment
     and moves stock;
  3. the same, open loop at `--rate` per second (asyncio, latency counted from when each request
     was due, so a slow server cannot hide its queue): the issue's target;
  4. the same again while the tills poll those sales at `--poll-rate` per second;
  5. the status poll (GET /cashier/check-mpesa-payment/<id>, logged-in session) alone, open loop
     at `--poll-rate`, then closed loop (wrk).

Safaricom gets its answer once the raw callback is stored, and the sale is completed right after
(mpesa.views). So after each callback phase the bench waits until every callback is applied and
reports how many sales were completed per second and the lag from receipt to sale completed (from
the rows' own timestamps); at the end it checks the books (one payment, ledger row and stock
movement per callback).

On a shared machine absolute rates are noisy; compare within one run: callbacks/s ÷ healthz/s, and
CPU milliseconds per request of the gunicorn processes, the PostgreSQL backends serving them and
the load generator (from /proc), which other load distorts less. Before the server starts, one
request at a time in this process: statements and Python function calls per callback, poll and
/healthz (exact), and their CPU time and their PostgreSQL backend's.
Sale-completed hooks (receipt printing) are off: this measures the payment pipeline.

`--json` prints one JSON document with all of it instead of the text report.
Targets (issue 4): ≥ 300 callbacks/s sustained with p99 ≤ 100 ms; poll p99 ≤ 20 ms.
"""

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

BASE_DIR = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"
HOST = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")
ENV = {
    "DEBUG": "False",
    "SECRET_KEY": "bench-" + "x" * 60,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "MPESA_ENVIRONMENT": "sandbox",
    "MPESA_CONSUMER_KEY": "bench-key",
    "MPESA_CONSUMER_SECRET": "bench-secret",
    "MPESA_CALLBACK_BASE_URL": "https://bench.invalid",
    "MPESA_CALLBACK_PREFIX": "hooks",
    "POS_SALE_COMPLETED_HOOKS": "",
    "SECURE_SSL_REDIRECT": "False",
    "SESSION_COOKIE_SECURE": "False",
    "CSRF_COOKIE_SECURE": "False",
    "LOG_LEVEL": "WARNING",
}
CHECKOUT_ID = "ws_CO_BENCH%010d"
# Each push carries its own token in its CallBackURL (mpesa.conf.callback_url), as in production.
CALLBACK_PATH = "/hooks/stk/callback/bench-token-%010d"
# Daraja's success callback (docs/daraja.md §4.3), a printf template for Python and wrk's Lua alike:
# the first %d makes its CheckoutRequestID (the seeded prompt n), the second its receipt number.
CALLBACK_TEMPLATE = (
    '{"Body": {"stkCallback": {"MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": "ws_CO_BENCH%010d", '
    '"ResultCode": 0, "ResultDesc": "The service request is processed successfully.", "CallbackMetadata": '
    '{"Item": [{"Name": "Amount", "Value": 116.00}, {"Name": "MpesaReceiptNumber", "Value": "RB%08d"}, '
    '{"Name": "Balance"}, {"Name": "TransactionDate", "Value": 20261128102115}, '
    '{"Name": "PhoneNumber", "Value": 254708374149}]}}}}'
)


def callback_body(n: int) -> bytes:
    return (CALLBACK_TEMPLATE % (n, n)).encode()


# --- Set-up ----------------------------------------------------------------------------------------

def rebuild_database(args) -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=BASE_DIR,
                   env={**os.environ, **ENV}, check=True)


def seed(count: int, products: int) -> tuple[list[int], str, int]:
    """`count` pending sales of one item each (spread over `products` products, as a shop's baskets
    are), each with an open prompt n = 0…count-1 → (sale ids, session key, cashier id)."""
    os.environ.update(ENV)
    os.environ["DJANGO_SETTINGS_MODULE"] = "comolor.settings"
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from decimal import Decimal

    from django.conf import settings

    # Safaricom's published addresses, as in production, and this machine, where the load comes from.
    allowed = [*settings.MPESA_CALLBACK_ALLOWED_IPS, "127.0.0.1"]
    settings.MPESA_CALLBACK_ALLOWED_IPS = allowed
    ENV["MPESA_CALLBACK_ALLOWED_IPS"] = ",".join(allowed)

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.cached_db import SessionStore

    from inventory.services import receive_stock
    from inventory.tests.factories import ProductFactory
    from mpesa.models import StkRequest
    from pos.models import Sale, SaleLine
    from pos.services import add_staff, open_shift
    from pos.tests.factories import ShopFactory, TillFactory, UserFactory

    shop = ShopFactory(code="BNCH", name="Bench Duka")
    till = TillFactory(shop=shop, name="Till 1")
    cashier = UserFactory(username="bench-cashier")
    add_staff(cashier, shop, "cashier", default_till=till)
    shift = open_shift(till=till, user=cashier, opening_float=Decimal("0"))
    catalogue = [ProductFactory(price=Decimal("116.00")) for _ in range(products)]
    for product in catalogue:
        receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=count)
    sales = Sale.objects.bulk_create([
        Sale(receipt_number=f"BNCH-{n:07d}", shop=shop, till=till, cashier=cashier, shift=shift,
             total=Decimal("116.00"), vat_total=Decimal("16.00"))
        for n in range(count)
    ], batch_size=2000)
    SaleLine.objects.bulk_create([
        SaleLine(sale=sale, product=product, name=product.name, quantity=1, unit_price=product.price,
                 tax_band=product.tax_band, tax_rate=Decimal("16"), line_total=Decimal("116.00"),
                 vat_amount=Decimal("16.00"))
        for sale, product in ((sale, catalogue[n % products]) for n, sale in enumerate(sales))
    ], batch_size=2000)
    StkRequest.objects.bulk_create([
        StkRequest(sale=sale, shop=shop, phone=f"2547{n:08d}", amount=116, account_reference=sale.receipt_number,
                   merchant_request_id=f"29115-{n}-1", checkout_request_id=CHECKOUT_ID % n,
                   callback_token=f"bench-token-{n:010d}", status=StkRequest.Status.PENDING)
        for n, sale in enumerate(sales)
    ], batch_size=2000)
    session = SessionStore()
    session[SESSION_KEY], session[BACKEND_SESSION_KEY] = str(cashier.pk), settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = cashier.get_session_auth_hash()
    session.save()
    return [sale.pk for sale in sales], session.session_key, cashier.pk


IN_PROCESS_RUNS = 50


def count_in_process(first: int, sale_id: int, session_key: str) -> dict:
    """Costs measured in this process, one request at a time through Django's test client, for a
    callback (each a fresh sale: callbacks n = first…), a poll and /healthz: statements and Python
    function calls for one request (exact), and CPU milliseconds per request over IN_PROCESS_RUNS,
    of this process and of the PostgreSQL backend serving it (less disturbed by other load than
    throughput is)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST=HOST)
    poller = Client(HTTP_HOST=HOST)
    poller.cookies["sessionid"] = session_key
    numbers = iter(range(first, first + 3 * (IN_PROCESS_RUNS + 3)))
    requests = {
        "callback": lambda: client.post(CALLBACK_PATH % (n := next(numbers)), data=callback_body(n),
                                        content_type="application/json"),
        "poll": lambda: poller.get(f"/cashier/check-mpesa-payment/{sale_id}"),
        "healthz": lambda: client.get("/healthz"),
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    counts = {}
    for name, send in requests.items():
        assert send().status_code == 200  # warm: imports, caches, the connection
        with CaptureQueriesContext(connection) as queries:
            send()
        statements = len(queries)
        profile = cProfile.Profile()
        profile.enable()
        send()
        profile.disable()
        started, database = time.process_time(), _cpu_seconds(backend)
        for _ in range(IN_PROCESS_RUNS):
            send()
        counts[name] = {
            "statements": statements, "python_calls": pstats.Stats(profile).total_calls,
            "cpu_ms": (time.process_time() - started) * 1000 / IN_PROCESS_RUNS,
            "database_cpu_ms": (_cpu_seconds(backend) - database) * 1000 / IN_PROCESS_RUNS,
        }
    return counts


# --- The server and its CPU ------------------------------------------------------------------------

def start_gunicorn(args) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("gunicorn")), "comolor.wsgi", "-c", "comolor/gunicorn.conf.py",
               "--bind", f"{HOST}:{args.port}", "--log-level", "warning"]
    for option in ("workers", "threads", "worker_class"):
        if getattr(args, option) is not None:
            command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    server = subprocess.Popen(command, cwd=BASE_DIR, env={**os.environ, **ENV}, start_new_session=True)
    for _ in range(150):
        try:
            status, _ = asyncio.run(_get_once(args.port, "/healthz"))
            if status == 200:
                return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"gunicorn did not start on port {args.port}")


async def _get_once(port: int, path: str):
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1]), data


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


class CpuMeter:
    """CPU seconds of the gunicorn master and workers, the PostgreSQL backends connected to the
    bench database, and this process's children (wrk) and threads (the asyncio generator)."""

    def __init__(self, server: subprocess.Popen, database: str):
        self.server, self.database = server, database
        self.conn = psycopg.connect(f"{PG}/postgres", autocommit=True)

    def sample(self) -> dict:
        backends = [row[0] for row in self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'",
            [self.database])]
        return {
            "server": {pid: _cpu_seconds(pid) for pid in [self.server.pid, *_children(self.server.pid)]},
            "database": {pid: _cpu_seconds(pid) for pid in backends},
            "generator": sum(getattr(resource.getrusage(who), field)
                             for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                             for field in ("ru_utime", "ru_stime")),
        }

    @staticmethod
    def spent(before: dict, after: dict) -> dict:
        def delta(kind):
            return sum(seconds - before[kind].get(pid, 0.0) for pid, seconds in after[kind].items())
        return {"server": delta("server"), "database": delta("database"),
                "generator": after["generator"] - before["generator"]}


# --- Load generators -------------------------------------------------------------------------------

WRK_DONE = """
function done(summary, latency, requests)
  io.write(string.format('WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"errors": %d, "non_2xx": %d}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), latency.max, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.errors.status))
end
"""
# Each wrk thread sends its own slice of the seeded callbacks (n = first + thread + threads × k).
WRK_CALLBACKS = """
threads_seen = 0
local first, last, nthreads, k
function setup(thread) thread:set("tid", threads_seen); threads_seen = threads_seen + 1 end
function init(args) first, last, nthreads, k = tonumber(args[1]), tonumber(args[2]), tonumber(args[3]), 0 end
local template = [[TEMPLATE]]
function request()
  local n = first + tid + nthreads * k
  k = k + 1
  if n >= last then n = last - 1 end
  return wrk.format("POST", string.format("PATH", n), {["Content-Type"] = "application/json"},
                    string.format(template, n, n))
end
"""
WRK_POLL = """
local first, count, k = 0, 1, 0
function init(args) first, count = tonumber(args[1]), tonumber(args[2]) end
function request()
  k = k + 1
  return wrk.format("GET", "/cashier/check-mpesa-payment/" .. (first + k % count), {["Cookie"] = "sessionid=SESSION"})
end
"""


def wrk(args, script: str, path: str, script_args: list = ()) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script + WRK_DONE)
    try:
        command = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{args.seconds}s", "--timeout", "30s",
                   "-s", lua.name,
                   f"http://{HOST}:{args.port}{path}"]
        if script_args:
            command += ["--", *map(str, script_args)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"wrk failed: {done.stdout}{done.stderr}")
        output = done.stdout
    finally:
        os.unlink(lua.name)
    found = json.loads(re.search(r"^WRK (\{.*\})$", output, re.M).group(1))
    seconds = found["duration_us"] / 1e6
    return {"requests": found["requests"], "rps": found["requests"] / seconds, "seconds": seconds,
            "p50_ms": found["p50_us"] / 1000, "p99_ms": found["p99_us"] / 1000, "max_ms": found["max_us"] / 1000,
            "errors": found["errors"], "non_2xx": found["non_2xx"]}


IDLE_LIMIT = 4.0  # seconds, less than comolor/gunicorn.conf.py's keepalive


class OpenLoop:
    """Requests due at a fixed rate over keep-alive connections; each latency counts from when the
    request was due, so a server that falls behind shows its queue (no coordinated omission)."""

    def __init__(self, port: int, max_connections: int = 64):
        self.port, self.idle, self.open, self.max = port, [], 0, max_connections
        self.available = None

    async def _connection(self):
        while not self.idle and self.open >= self.max:
            await self.available.wait()
            self.available.clear()
        clock = asyncio.get_running_loop()
        while self.idle:
            reader, writer, used = self.idle.pop()
            if clock.time() - used < IDLE_LIMIT:
                return reader, writer
            # gunicorn closes a connection idle for its keepalive (5 s): a request sent on it just
            # then would be lost, as with any HTTP client that keeps connections past the server's limit.
            writer.close()
            self.open -= 1
        self.open += 1
        return await asyncio.open_connection(HOST, self.port)

    async def _send(self, raw: bytes) -> int:
        reader, writer = await self._connection()
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"\r\ncontent-length: *(\d+)", head, re.I).group(1))
            await reader.readexactly(length)
            if re.search(rb"\r\nconnection: *close", head, re.I):
                raise ConnectionResetError
            self.idle.append((reader, writer, asyncio.get_running_loop().time()))
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            writer.close()
            self.open -= 1
            raise
        finally:
            self.available.set()
        return status

    async def run(self, streams: list[tuple[float, object]], seconds: float) -> list[dict]:
        """streams: (rate, make(i) → raw request bytes); all run at once for `seconds`. Requests still
        unanswered `seconds` (at least 10 s) after the last was due are given up: counted as
        errors, with the latency they had reached."""
        self.available = asyncio.Event()
        start = asyncio.get_running_loop().time() + 0.2
        results = [{"latencies": [], "statuses": {}} for _ in streams]
        drain = max(10.0, seconds)

        async def one(due, raw, result):
            try:
                status = await self._send(raw)
            except (OSError, asyncio.IncompleteReadError):
                status = 0
            result["latencies"].append((asyncio.get_running_loop().time() - due) * 1000)
            result["statuses"][status] = result["statuses"].get(status, 0) + 1

        async def stream(rate, make, result):
            tasks, clock = [], asyncio.get_running_loop()
            for i in range(int(rate * seconds)):
                due = start + i / rate
                if due > clock.time():
                    await asyncio.sleep(due - clock.time())
                tasks.append((due, asyncio.create_task(one(due, make(i), result))))
            _, late = await asyncio.wait([task for _, task in tasks], timeout=drain)
            for due, task in tasks:
                if task in late:
                    task.cancel()
                    result["latencies"].append((clock.time() - due) * 1000)
                    result["statuses"][0] = result["statuses"].get(0, 0) + 1
            await asyncio.gather(*late, return_exceptions=True)

        await asyncio.gather(*(stream(rate, make, result) for (rate, make), result in zip(streams, results)))
        elapsed = asyncio.get_running_loop().time() - start
        figures = []
        for result in results:
            ordered = sorted(result["latencies"])
            pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
            figures.append({"requests": len(ordered), "rps": len(ordered) / elapsed, "seconds": elapsed,
                            "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": ordered[-1],
                            "errors": result["statuses"].get(0, 0),
                            "non_2xx": sum(c for s, c in result["statuses"].items() if s and not 200 <= s < 300)})
        return figures


def http_post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def http_get(path: str, cookie: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nCookie: sessionid={cookie}\r\n\r\n".encode()


# --- Processing: what happened after Safaricom got its answer --------------------------------------

def last_callback_id(database: str) -> int:
    with psycopg.connect(f"{PG}/{database}") as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM mpesa_callbacklog").fetchone()[0]


def processing(database: str, after_id: int, timeout: float = 120) -> dict:
    """Wait until no callback is left unprocessed; then, for the callbacks stored after `after_id`
    (this phase's), the rate their sales were completed at and the lag from receipt to completion."""
    with psycopg.connect(f"{PG}/{database}", autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while conn.execute("SELECT count(*) FROM mpesa_callbacklog WHERE status = 'received'").fetchone()[0]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        row = conn.execute("""
            SELECT count(*), count(*) FILTER (WHERE s.status = 'completed'),
                   extract(epoch FROM max(s.completed_at) - min(l.received_at)),
                   percentile_cont(array[0.5, 0.99]) WITHIN GROUP (
                       ORDER BY extract(epoch FROM s.completed_at - l.received_at) * 1000),
                   max(extract(epoch FROM s.completed_at - l.received_at) * 1000),
                   count(*) FILTER (WHERE l.status <> 'processed')
            FROM mpesa_callbacklog l
            LEFT JOIN mpesa_stkrequest r ON r.checkout_request_id = l.checkout_request_id
            LEFT JOIN pos_sale s ON s.id = r.sale_id
            WHERE l.kind = 'stk' AND l.id > %s
        """, [after_id]).fetchone()
    received, completed, span, lags, lag_max, unprocessed = row
    lag50, lag99 = lags or (0, 0)
    return {"received": received, "completed": completed,
            "completed_per_s": completed / float(span) if span else 0.0,
            "lag_p50_ms": lag50 or 0, "lag_p99_ms": lag99 or 0, "lag_max_ms": lag_max or 0,
            "unprocessed": unprocessed}


def check_books(database: str) -> dict:
    with psycopg.connect(f"{PG}/{database}") as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM mpesa_callbacklog WHERE kind = 'stk'),"
            " (SELECT count(*) FROM mpesa_callbacklog WHERE kind = 'stk' AND status = 'processed'),"
            " (SELECT count(*) FROM pos_sale WHERE status = 'completed'), (SELECT count(*) FROM pos_payment),"
            " (SELECT count(*) FROM mpesa_mpesatransaction WHERE payment_id IS NOT NULL),"
            " (SELECT count(*) FROM inventory_stockmovement WHERE kind = 'sale'),"
            " (SELECT count(*) FROM (SELECT sale_id FROM pos_payment GROUP BY sale_id HAVING count(*) > 1) twice)"
        ).fetchone()
    names = ["callbacks", "processed", "completed_sales", "payments", "ledger_rows_applied", "sale_stock_movements",
             "sales_paid_twice"]
    books = dict(zip(names, row))
    books["ok"] = (books["processed"] == books["callbacks"] == books["completed_sales"] == books["payments"]
                   == books["ledger_rows_applied"] == books["sale_stock_movements"] and not books["sales_paid_twice"])
    return books


# --- The run ---------------------------------------------------------------------------------------

def measured(meter: CpuMeter, run, count_of=lambda result: result["requests"]):
    with psycopg.connect(f"{PG}/{meter.database}", autocommit=True) as conn:
        # The previous phase's thousands of updated rows are vacuumed now, not by autovacuum in the
        # middle of this phase, where they would weigh on this phase's figures.
        conn.execute("VACUUM ANALYZE")
    before = meter.sample()
    result = run()
    spent = CpuMeter.spent(before, meter.sample())
    requests = count_of(result) or 1
    result["cpu_ms_per_request"] = {kind: seconds * 1000 / requests for kind, seconds in spent.items()}
    result["cpu_ms_per_request"]["server_and_database"] = (spent["server"] + spent["database"]) * 1000 / requests
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Targets (issue 4): ≥ 300 "
                                     "callbacks/s with p99 ≤ 100 ms; poll p99 ≤ 20 ms.")
    parser.add_argument("--seconds", type=int, default=15, help="length of each phase (default 15)")
    parser.add_argument("--rate", type=float, default=300, help="open-loop callbacks per second (default 300)")
    parser.add_argument("--poll-rate", type=float, default=100,
                        help="open-loop status polls per second: tills waiting at once, one poll a second each")
    parser.add_argument("--connections", type=int, default=16, help="wrk's keep-alive connections (closed loops)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1 keeps a core for the server)")
    parser.add_argument("--workers", type=int, help="override the gunicorn config's workers")
    parser.add_argument("--threads", type=int, help="override the gunicorn config's threads per worker")
    parser.add_argument("--worker-class", help="override the gunicorn config's worker class (sync, gthread)")
    parser.add_argument("--products", type=int, default=50,
                        help="products the sales are spread over (1: every completion queues on one stock row)")
    parser.add_argument("--database", default="bench_callbacks", help="database to rebuild (default bench_callbacks)")
    parser.add_argument("--port", type=int, default=8113, help="port for gunicorn (default 8113)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9", help="CACHE_URL for the server")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the server, e.g. MPESA_CALLBACK_ANSWER_FIRST=False (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args()
    if args.rate <= 0 or args.poll_rate <= 0:
        parser.error("--rate and --poll-rate must be more than 0")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: sudo apt-get install wrk")
    ENV["DATABASE_URL"] = f"{PG}/{args.database}"
    ENV["CACHE_URL"] = args.redis
    ENV.update(pair.split("=", 1) for pair in args.server_env)
    say = (lambda *a, **k: None) if args.json else (lambda *a, **k: print(*a, **k, flush=True))

    # Room for the closed loop at up to 2,000 callbacks/s, the open loop, and the in-process counts.
    closed_room, open_room = int(args.seconds * 2000), int(args.rate * args.seconds) + 10
    in_process_room = 3 * (IN_PROCESS_RUNS + 3)
    count = closed_room + 2 * open_room + in_process_room
    say(f"Rebuilding database {args.database} and seeding {count} pending sales with open prompts…")
    rebuild_database(args)
    sale_ids, session_key, _ = seed(count, args.products)
    with psycopg.connect(f"{PG}/{args.database}", autocommit=True) as conn:
        # Statistics for the seeded rows now, not from autovacuum in the middle of a phase.
        conn.execute("VACUUM ANALYZE")
    in_process = count_in_process(count - in_process_room, sale_ids[0], session_key)
    server = start_gunicorn(args)
    meter = CpuMeter(server, args.database)
    report = {
        "machine": {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()[0]},
        "server": {"config": "comolor/gunicorn.conf.py",
                   **{k: getattr(args, k) for k in ("workers", "threads", "worker_class") if getattr(args, k)},
                   **dict(pair.split("=", 1) for pair in args.server_env)},
        "in_process": in_process,
    }
    say(f"gunicorn ({report['server']}) on {HOST}:{args.port}, DEBUG off, PostgreSQL, Redis cache, "
        f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.1f}")
    try:
        report["healthz"] = measured(meter, lambda: wrk(args, "", "/healthz"))

        def closed():
            before = last_callback_id(args.database)
            result = wrk(args, WRK_CALLBACKS.replace("TEMPLATE", CALLBACK_TEMPLATE).replace("PATH", CALLBACK_PATH),
                         CALLBACK_PATH % 0, [0, closed_room, args.wrk_threads])
            result["processing"] = processing(args.database, before)
            return result

        # Per callback stored (wrk does not count the requests still in flight when it stops).
        report["callbacks_closed"] = measured(meter, closed, lambda r: r["processing"]["received"])
        def open_loop(first: int, poll_rate: float):
            # The tills whose sales these callbacks pay poll them meanwhile.
            paying = [sale_ids[n] for n in range(first, first + open_room)]
            streams = [(args.rate, lambda i: http_post(CALLBACK_PATH % (first + i), callback_body(first + i)))]
            if poll_rate:
                streams.append((poll_rate, lambda i: http_get(
                    f"/cashier/check-mpesa-payment/{paying[i % len(paying)]}", session_key)))
            before = last_callback_id(args.database)
            callbacks, *polls = asyncio.run(OpenLoop(args.port).run(streams, args.seconds))
            if polls:
                callbacks["polls_meanwhile"] = polls[0]
            callbacks["processing"] = processing(args.database, before)
            return callbacks

        report["callbacks_open"] = measured(meter, lambda: open_loop(closed_room, 0),
                                            lambda r: r["processing"]["received"])
        report["callbacks_open"]["rate"] = args.rate
        report["callbacks_polled"] = measured(
            meter, lambda: open_loop(closed_room + open_room, args.poll_rate),
            lambda r: r["processing"]["received"] + r["polls_meanwhile"]["requests"])
        report["callbacks_polled"]["rate"] = args.rate
        report["poll_open"] = measured(meter, lambda: asyncio.run(OpenLoop(args.port).run([
            (args.poll_rate, lambda i: http_get(f"/cashier/check-mpesa-payment/{sale_ids[i % len(sale_ids)]}",
                                                session_key))], args.seconds))[0])
        report["poll_open"]["rate"] = args.poll_rate
        report["poll_closed"] = measured(meter, lambda: wrk(
            args, WRK_POLL.replace("SESSION", session_key), "/cashier/check-mpesa-payment/0",
            [sale_ids[0], len(sale_ids)]))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)
    report["books"] = check_books(args.database)
    report["ratio_callbacks_to_healthz"] = report["callbacks_closed"]["rps"] / report["healthz"]["rps"]
    report["machine"]["load_average_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        show(report)


def show(report: dict) -> None:
    def line(label, r):
        cpu = r["cpu_ms_per_request"]
        print(f"  {label:<44} {r['rps']:7.1f}/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
              f"max {r['max_ms']:7.1f} ms  n={r['requests']}  errors {r['errors'] + r['non_2xx']}  | CPU ms/req: "
              f"server {cpu['server']:.2f}  PostgreSQL {cpu['database']:.2f}  generator {cpu['generator']:.2f}")

    def lag(r):
        p = r["processing"]
        print(f"  {'':<44} {p['received']} stored, {p['completed']} sales completed at {p['completed_per_s']:.1f}/s, "
              f"lag received → completed p50 {p['lag_p50_ms']:.1f} ms, p99 {p['lag_p99_ms']:.1f} ms, "
              f"max {p['lag_max_ms']:.1f} ms, unprocessed {p['unprocessed']}")

    line("GET /healthz (closed loop, wrk)", report["healthz"])
    line("POST stk callback (closed loop, wrk)", report["callbacks_closed"])
    lag(report["callbacks_closed"])
    line(f"POST stk callback (open loop {report['callbacks_open']['rate']:g}/s)", report["callbacks_open"])
    lag(report["callbacks_open"])
    line(f"POST stk callback (open loop {report['callbacks_polled']['rate']:g}/s, polled; CPU: with the polls)",
         report["callbacks_polled"])
    lag(report["callbacks_polled"])
    polls = report["callbacks_polled"]["polls_meanwhile"]
    print(f"  {'  … polls meanwhile':<44} {polls['rps']:7.1f}/s  p50 {polls['p50_ms']:6.1f} ms  "
          f"p99 {polls['p99_ms']:6.1f} ms  max {polls['max_ms']:7.1f} ms  n={polls['requests']}")
    line(f"GET status poll (open loop {report['poll_open']['rate']:g}/s)", report["poll_open"])
    line("GET status poll (closed loop, wrk)", report["poll_closed"])
    counts = report["in_process"]
    print(f"  ratio callbacks/s ÷ healthz/s: {report['ratio_callbacks_to_healthz']:.3f}")
    print("  per request, in-process, one at a time: " + "; ".join(
        f"{name} {c['statements']} statements, {c['python_calls']} Python calls, CPU {c['cpu_ms']:.2f} ms + "
        f"PostgreSQL {c['database_cpu_ms']:.2f} ms" for name, c in counts.items())
        + " (Django adds a connection health check to each request that uses the database: CONN_HEALTH_CHECKS)")
    print(f"  books: {report['books']}")
    print(f"  load average before {report['machine']['load_average_before']:.1f}, "
          f"after {report['machine']['load_average_after']:.1f}")


if __name__ == "__main__":
    main()
