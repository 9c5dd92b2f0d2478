"""Issue 4 bench: STK callbacks per second and their p99, a trivial JSON view for comparison, and
the till's status poll, over HTTP against gunicorn on PostgreSQL with DEBUG off.

    .venv/bin/python bench/bench_callbacks.py [--seconds 20] [--rate 300] [--workers 3] [--clients 8]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres). Rebuilds the database `h_stk` (migrate), seeds
one pending sale with an open STK request per callback to be sent, starts gunicorn on port 8113
(MPESA_ENVIRONMENT=sandbox with dummy credentials: posting callbacks never calls Daraja), then:

  1. /healthz and STK callbacks, closed loop: `--clients` connections send back to back (maximum
     sustained rate); every callback is a distinct success that completes its sale, records the
     payment and moves stock;
  2. STK callbacks, open loop at `--rate` per second for `--seconds`: latency is measured from each
     request's scheduled start, so a slow server cannot hide its queue (no coordinated omission);
  3. the status poll (GET /cashier/check-mpesa-payment/<id>) with a logged-in session, closed loop.

Sale-completed hooks (receipt printing) are switched off: this measures the payment pipeline.
Prints figures and checks the database afterwards (one payment per sale); asserts no target.
Targets (issue 4): ≥ 300 callbacks/s with p99 ≤ 100 ms; poll p99 ≤ 20 ms.
"""

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

BASE_DIR = Path(__file__).resolve().parent.parent
DB_NAME = "h_stk"
PG = "postgres://postgres@127.0.0.1:5432"
HOST, PORT = "127.0.0.1", 8113
ENV = {
    "DATABASE_URL": f"{PG}/{DB_NAME}",
    "DEBUG": "False",
    "SECRET_KEY": "bench-" + "x" * 60,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "MPESA_ENVIRONMENT": "sandbox",
    "MPESA_CONSUMER_KEY": "bench-key",
    "MPESA_CONSUMER_SECRET": "bench-secret",
    "MPESA_CALLBACK_BASE_URL": "https://bench.invalid",
    # The load comes from this machine: let loopback through the callback allowlist.
    "MPESA_CALLBACK_ALLOWED_IPS": "127.0.0.1",
    "POS_SALE_COMPLETED_HOOKS": "",
    "SECURE_SSL_REDIRECT": "False",
    "SESSION_COOKIE_SECURE": "False",
    "CSRF_COOKIE_SECURE": "False",
    "LOG_LEVEL": "WARNING",
}


def rebuild_database() -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=BASE_DIR,
                   env={**os.environ, **ENV}, check=True)


def seed(count: int, products: int) -> tuple[list[str], list[int], str]:
    """`count` pending sales of one item each (spread over `products` products, as a shop's baskets
    are) with an open prompt each → (checkout ids, sale ids, session cookie)."""
    os.environ.update(ENV)
    os.environ["DJANGO_SETTINGS_MODULE"] = "comolor.settings"
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from decimal import Decimal

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from inventory.services import receive_stock
    from inventory.tests.factories import ProductFactory
    from mpesa.models import StkRequest
    from pos.models import Sale, SaleLine
    from pos.services import add_staff
    from pos.tests.factories import ShopFactory, TillFactory, UserFactory

    shop = ShopFactory(code="BNCH", name="Bench Duka")
    till = TillFactory(shop=shop, name="Till 1")
    cashier = UserFactory(username="bench-cashier")
    add_staff(cashier, shop, "cashier", default_till=till)
    catalogue = [ProductFactory(price=Decimal("116.00")) for _ in range(products)]
    for product in catalogue:
        receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=count)
    sales = Sale.objects.bulk_create([
        Sale(receipt_number=f"BNCH-{n:07d}", shop=shop, till=till, cashier=cashier, total=Decimal("116.00"),
             vat_total=Decimal("16.00"))
        for n in range(count)
    ], batch_size=2000)
    SaleLine.objects.bulk_create([
        SaleLine(sale=sale, product=product, name=product.name, quantity=1, unit_price=product.price,
                 tax_band=product.tax_band, tax_rate=Decimal("16"), line_total=Decimal("116.00"),
                 vat_amount=Decimal("16.00"))
        for sale, product in ((sale, catalogue[n % products]) for n, sale in enumerate(sales))
    ], batch_size=2000)
    requests = StkRequest.objects.bulk_create([
        StkRequest(sale=sale, shop=shop, phone=f"2547{n:08d}", amount=116, account_reference=sale.receipt_number,
                   merchant_request_id=f"29115-{n}-1", checkout_request_id=f"ws_CO_BENCH{n:010d}",
                   callback_token=f"bench-token-{n:010d}", status=StkRequest.Status.PENDING)
        for n, sale in enumerate(sales)
    ], batch_size=2000)
    session = SessionStore()
    from django.conf import settings

    session[SESSION_KEY], session[BACKEND_SESSION_KEY] = str(cashier.pk), settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = cashier.get_session_auth_hash()
    session.save()
    return [r.checkout_request_id for r in requests], [s.pk for s in sales], session.session_key


def stk_success(checkout_request_id: str, receipt: str) -> bytes:
    return json.dumps({"Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": checkout_request_id, "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 116.00}, {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "Balance"}, {"Name": "TransactionDate", "Value": 20261128102115},
            {"Name": "PhoneNumber", "Value": 254708374149}]}}}}).encode()


class Work:
    """A shared queue of requests (method, path, body, headers), handed out one at a time."""

    def __init__(self, make, total=None):
        self.make, self.total, self.next, self.lock = make, total, 0, threading.Lock()

    def take(self):
        with self.lock:
            if self.total is not None and self.next >= self.total:
                return None
            self.next += 1
            return self.make(self.next - 1)


def send(conn_holder, request) -> int:
    method, path, body, headers = request
    for attempt in (1, 2):
        conn = conn_holder.get("conn") or http.client.HTTPConnection(HOST, PORT, timeout=30)
        conn_holder["conn"] = conn
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn_holder["conn"] = None
            return response.status
        except (ConnectionError, http.client.HTTPException):
            conn.close()
            conn_holder["conn"] = None
            if attempt == 2:
                raise
    return 0


def closed_loop(work: Work, clients: int, seconds: float) -> dict:
    latencies, statuses, stop = [], {}, time.monotonic() + seconds
    lock = threading.Lock()

    def client():
        holder, mine = {}, []
        while time.monotonic() < stop:
            request = work.take()
            if request is None:
                break
            started = time.perf_counter()
            status = send(holder, request)
            mine.append(((time.perf_counter() - started) * 1000, status))
        with lock:
            for millis, status in mine:
                latencies.append(millis)
                statuses[status] = statuses.get(status, 0) + 1

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return figures(latencies, statuses, time.monotonic() - started)


def open_loop(work: Work, rate: float, seconds: float, clients: int = 64) -> dict:
    """Requests are due at a fixed rate; each latency counts from when it was due."""
    total = int(rate * seconds)
    begin = time.perf_counter() + 0.2
    latencies, statuses, lock, counter = [], {}, threading.Lock(), iter(range(total))

    def client():
        holder, mine = {}, []
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            due = begin + index / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            status = send(holder, work.take())
            mine.append(((time.perf_counter() - due) * 1000, status))
        with lock:
            for millis, status in mine:
                latencies.append(millis)
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return figures(latencies, statuses, time.perf_counter() - begin)


def figures(latencies: list[float], statuses: dict, elapsed: float) -> dict:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "rps": len(ordered) / elapsed, "p50": statistics.median(ordered), "p99": pick(0.99),
            "max": ordered[-1], "statuses": statuses}


def show(label: str, result: dict) -> None:
    print(f"  {label:<48} {result['rps']:7.1f} req/s   p50 {result['p50']:6.1f} ms   p99 {result['p99']:6.1f} ms"
          f"   max {result['max']:7.1f} ms   n={result['n']}   HTTP {result['statuses']}", flush=True)


def start_gunicorn(workers: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "comolor.wsgi", "--bind", f"{HOST}:{PORT}",
         "--workers", str(workers), "--worker-class", "sync", "--log-level", "warning"],
        cwd=BASE_DIR, env={**os.environ, **ENV}, start_new_session=True,
    )
    for _ in range(100):
        try:
            if send({}, ("GET", "/healthz", None, {})) == 200:
                return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("gunicorn did not start on port 8113")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=300, help="open-loop callbacks per second")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers (3 did best on 2 CPUs)")
    parser.add_argument("--clients", type=int, default=8, help="connections in the closed-loop runs")
    parser.add_argument("--unix-socket", action="store_true",
                        help="reach PostgreSQL over its Unix socket (same machine) instead of TCP 127.0.0.1")
    parser.add_argument("--products", type=int, default=50,
                        help="products the sales are spread over (1: every completion queues on one stock row)")
    args = parser.parse_args()
    if args.unix_socket:
        ENV["DATABASE_URL"] = f"postgres://postgres@/{DB_NAME}"  # no host: libpq's default socket

    # Enough prompts for both callback runs at up to 1,000 callbacks/s, plus the open-loop run.
    count = int(args.seconds * 1000 + args.rate * args.seconds) + 1000
    print(f"Rebuilding database {DB_NAME} and seeding {count} pending sales with open prompts…", flush=True)
    rebuild_database()
    checkout_ids, sale_ids, session_key = seed(count, args.products)
    server = start_gunicorn(args.workers)
    print(f"gunicorn: {args.workers} sync workers on {HOST}:{PORT}, DEBUG off, PostgreSQL, {os.cpu_count()} CPUs, "
          f"sales spread over {args.products} products, PostgreSQL over {'Unix socket' if args.unix_socket else 'TCP'}; "
          f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    try:
        json_headers = {"Content-Type": "application/json"}
        callbacks = Work(lambda n: ("POST", "/mpesa/stk/callback",
                                    stk_success(checkout_ids[n], f"RB{n:08d}"), json_headers), total=count)
        show("GET /healthz (closed loop)",
             closed_loop(Work(lambda n: ("GET", "/healthz", None, {})), args.clients, args.seconds))
        show("POST /mpesa/stk/callback (closed loop)", closed_loop(callbacks, args.clients, args.seconds))
        show(f"POST /mpesa/stk/callback (open loop, {args.rate:g}/s)", open_loop(callbacks, args.rate, args.seconds))
        cookie = {"Cookie": f"sessionid={session_key}"}
        show("GET /cashier/check-mpesa-payment/<id> (closed loop)", closed_loop(
            Work(lambda n: ("GET", f"/cashier/check-mpesa-payment/{sale_ids[n % len(sale_ids)]}", None, cookie)),
            args.clients, args.seconds))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)
    with psycopg.connect(f"{PG}/{DB_NAME}") as conn:
        sent = callbacks.next
        paid, payments, moves, logs = conn.execute(
            "SELECT (SELECT count(*) FROM pos_sale WHERE status = 'completed'),"
            " (SELECT count(*) FROM pos_payment), (SELECT count(*) FROM inventory_stockmovement WHERE kind = 'sale'),"
            " (SELECT count(*) FROM mpesa_callbacklog WHERE status = 'processed')").fetchone()
    print(f"  check: {sent} callbacks sent → {logs} processed logs, {paid} completed sales, {payments} payments, "
          f"{moves} sale stock movements", flush=True)


if __name__ == "__main__":
    main()
