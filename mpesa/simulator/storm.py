"""The storm (issue 8): many M-Pesa sales rung up through the till's real HTTP endpoints on
gunicorn and PostgreSQL, paid on the Daraja simulator, with the network between Safaricom and the
shop at its worst. Run by `manage.py mpesa_storm`.

The simulator (its own gunicorn, queued delivery) plays Safaricom and the customers; this module
plays the network: it takes the callbacks the simulator owes and delivers them late, twice, twenty
times at once, out of order, with a wrong amount, as a C2B confirmation as well, or not at all.
Two phone numbers of the simulator's own add a callback that beats the push response (254700009003)
and a payment whose callback never comes (254700009001). The background worker runs alongside,
and at the end the sweep runs until nothing is left to do. Then the books are checked against the
simulator's record of the money that really moved: nothing lost, nothing counted twice, nothing
left pending, no invariant broken (mpesa.invariants).
"""

import ctypes
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import InterfaceError, OperationalError, connection
from django.db.models import F
from django.test.utils import override_settings
from django.utils import timezone

from inventory.models import Product, StockLevel
from inventory.services import receive_stock
from mpesa.conf import callback_url
from mpesa.invariants import check_books
from mpesa.models import CallbackLog, MpesaAccount, MpesaTransaction, StkRequest
from mpesa.services import AWAITING, RETRYABLE_LOGS, sweep_mpesa
from pos import services as pos_services
from pos.models import Sale, Shop, Till

from . import services as sim
from .models import Delivery, Payment, StkPrompt

BASE_DIR = Path(settings.BASE_DIR)
EARLY_PHONE, LOST_PHONE = "254700009003", "254700009001"
BURST = 20
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Fractions of the sales; the rest are plain (one callback each).
DEFAULT_MIX = {
    "duplicate": 0.10,  # the callback three times in a row
    "burst": 0.02,  # the callback 20 times at the same instant
    "lost": 0.06,  # never delivered (half of them turn up after the sweep found the payment)
    "wrong_amount": 0.03,  # a callback whose Amount is not what was asked
    "c2b_repeat": 0.08,  # the same payment also as a C2B confirmation (same TransID), either order
    "failed": 0.04,  # the customer cancels the prompt; the cashier cancels the sale
    "scarce": 0.08,  # competing for the last units of a product
}
SCARCE_UNITS = 2
# A phone takes MPESA_STK_PROMPTS_PER_PHONE (3) prompts a minute: sales on the simulator's special
# phones are spaced out.
SPECIAL_PHONE_EVERY = 21
PASSWORD = "storm-cashier"
PBKDF2 = PBKDF2PasswordHasher()


class StormError(Exception):
    """The storm could not run (no PostgreSQL, no simulator, a server that would not start)."""


@dataclass
class StormSale:
    scenario: str
    phone: str
    items: list
    sale_id: int | None = None
    checkout_id: str | None = None
    error: str = ""


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    sales_planned: Counter = field(default_factory=Counter)
    sent: Counter = field(default_factory=Counter)  # callbacks POSTed by this driver, by kind
    answers: Counter = field(default_factory=Counter)  # HTTP status of each callback ("no answer" for none)
    till_errors: Counter = field(default_factory=Counter)  # refusals and failures at the till, by message
    waves: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, kind: str, status) -> None:
        with self.lock:
            self.sent[kind] += 1
            self.answers[status] += 1

    @property
    def callbacks(self) -> int:
        return sum(self.sent.values())


def retrying(work, *, patience: float = 180.0):
    """The driver's own database work, waiting out an outage (a fault the storm may inject)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return work()
        except (OperationalError, InterfaceError):
            if time.monotonic() > deadline:
                raise
            connection.close()
            time.sleep(0.5)


# --- Servers -----------------------------------------------------------------------------------

def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor != "postgresql":
        raise StormError("The storm needs PostgreSQL (set DATABASE_URL=postgres://…): it runs gunicorn "
                         "processes and a worker against one database.")
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


class Servers:
    """The shop's gunicorn, the simulator's gunicorn (Daraja is another server) and the worker."""

    def __init__(self, *, port: int, workers: int, folder: Path):
        self.app_url, self.sim_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
        self.port, self.workers, self.folder = port, workers, folder
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DEBUG": "True",  # simulator mode exists only with DEBUG
            "MPESA_ENVIRONMENT": "simulator",
            "MPESA_BASE_URL": self.sim_url + "/daraja-sim",
            "MPESA_CALLBACK_BASE_URL": self.app_url,
            "DARAJA_SIM_DELIVERY": "queued",
            "DARAJA_SIM_CALLBACK_DELAY": "0",
            # A storm's few tills ring up far faster than any cashier can: the per-cashier prompt limit
            # (T27, test_stk_prompt_limits.py) would refuse them. The per-phone limit stays.
            "MPESA_STK_PROMPTS_PER_CASHIER": "1000000",
            # The worker asks about a prompt once its callback is overdue (most arrive within a wave).
            "MPESA_SWEEP_AFTER": "15",
            "MPESA_SWEEP_REQUERY_EVERY": "5",
            "CACHE_URL": f"filecache://{folder / 'cache'}",
            "RECEIPTS_DEFAULT_PRINTER": f"file://{folder / 'receipts'}",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.processes: list[subprocess.Popen] = []
        self.worker: subprocess.Popen | None = None

    def start(self) -> None:
        for port in (self.port, self.port + 1):
            self._spawn([str(Path(sys.executable).with_name("gunicorn")), "comolor.wsgi", "--bind",
                         f"127.0.0.1:{port}", "--workers", str(self.workers), "--worker-class", "gthread",
                         "--threads", "4", "--timeout", "120", "--log-level", "warning"], f"gunicorn-{port}")
        for url in (self.app_url, self.sim_url):
            self._wait_for(url + "/healthz")
        self.worker = self._spawn([sys.executable, "manage.py", "pos_worker", "--interval", "1"], "worker")

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")
        process = subprocess.Popen(command, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_die_with_parent)
        self.processes.append(process)
        return process

    def _wait_for(self, url: str) -> None:
        for _ in range(300):
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise StormError(f"{url} did not answer within 30 s; see the logs in {self.folder}.")

    def stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            self.worker.wait(30)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child: stop when the storm's process dies without stopping its servers (killed, or its
    test timed out), instead of running on against a database that is about to go."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# --- The shop and its cashiers -----------------------------------------------------------------

@dataclass
class Shopfront:
    shop: Shop
    sessions: list
    catalogue: list
    scarce: object
    sweets: object


def set_up_shop(*, tills: int, app_url: str) -> Shopfront:
    code = next(f"S{n:03d}" for n in range(1000) if not Shop.objects.filter(code=f"S{n:03d}").exists())
    shop = Shop.objects.create(code=code, name=f"Storm {code}")
    # The shop's own paybill: C2B confirmations of its STK payments name it, and find its sales.
    MpesaAccount.objects.create(shop=shop, shortcode=settings.MPESA_SHORTCODE)
    catalogue = [Product.objects.create(sku=f"{code}-{price}", name=f"Storm goods at KES {price}", price=price)
                 for price in (35, 60, 116, 180, 250, 420, 999)]
    scarce = Product.objects.create(sku=f"{code}-LAST", name="Last loaves", price=150)
    sweets = Product.objects.create(sku=f"{code}-SWEET", name="Sweets", price=1)
    for product in catalogue + [sweets]:
        receive_stock(shop_id=shop.pk, product_id=product.pk, quantity=10_000_000)
    receive_stock(shop_id=shop.pk, product_id=scarce.pk, quantity=SCARCE_UNITS)
    usernames = []
    for number in range(tills):
        till = Till.objects.create(shop=shop, name=f"Till {number + 1}")
        # Hashed by a hasher every default configuration knows: the servers check it, not this process
        # (whose test settings may hash with MD5 only). Few iterations here; the first login re-hashes.
        user = get_user_model().objects.create(username=f"storm-{code.lower()}-{number + 1}",
                                               password=PBKDF2.encode(PASSWORD, PBKDF2.salt(), iterations=1000))
        pos_services.add_staff(user, shop, "cashier", default_till=till)
        pos_services.open_shift(till=till, user=user, opening_float=Decimal("0"))  # sales need one
        usernames.append(user.username)
    with ThreadPoolExecutor(4) as pool:
        sessions = list(pool.map(lambda username: _log_in(app_url, username), usernames))
    return Shopfront(shop, sessions, catalogue, scarce, sweets)


def _log_in(app_url: str, username: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{app_url}/accounts/login/", timeout=30)
    response = session.post(f"{app_url}/accounts/login/", data={
        "username": username, "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"],
    }, timeout=30, allow_redirects=False)
    if response.status_code != 302:
        raise StormError(f"Cashier {username} could not log in (HTTP {response.status_code}).")
    session.headers["X-CSRFToken"] = session.cookies["csrftoken"]
    return session


# --- One wave: ring up the sales, let the customers answer, deliver the callbacks ------------------

class Storm:
    def __init__(self, *, callbacks: int, wave: int, clients: int, senders: int, mix: dict, seed: int,
                 port: int, workers: int, fault: str = "", fault_at: float = 0.3, out=sys.stdout):
        self.target, self.wave_size, self.clients, self.senders = callbacks, wave, clients, senders
        self.mix, self.random, self.out = mix, random.Random(seed), out
        self.fault, self.fault_at, self.fault_thread = fault, fault_at, None
        self.folder = Path(tempfile.mkdtemp(prefix="mpesa-storm-"))
        self.servers = Servers(port=port, workers=workers, folder=self.folder)
        self.tally = Tally()
        self.sales: list[StormSale] = []
        self.late: list[tuple[str, str, bytes]] = []  # (checkout id, url, body) of lost callbacks
        self.phones = 0
        self.amounts = 0
        self.special_at: dict[str, float] = {}
        self.connections = threading.local()  # one keep-alive HTTP session per sending thread

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def run(self) -> dict:
        if "mpesa.simulator" not in settings.INSTALLED_APPS:
            raise StormError("The storm needs the Daraja simulator: MPESA_ENVIRONMENT=simulator with DEBUG=True.")
        database_url()
        self.servers.start()
        # The sweep run here logs each STK Query at INFO: thousands of lines that hide the report.
        daraja_log = logging.getLogger("mpesa.daraja")
        level = daraja_log.level
        daraja_log.setLevel(max(daraja_log.getEffectiveLevel(), logging.WARNING))
        try:
            with override_settings(
                MPESA_BASE_URL=self.servers.sim_url + "/daraja-sim", MPESA_CALLBACK_BASE_URL=self.servers.app_url,
                DARAJA_SIM_DELIVERY="queued", MPESA_SWEEP_AFTER=0, MPESA_SWEEP_REQUERY_EVERY=0,
            ):
                self.since = timezone.now()
                self.front = set_up_shop(tills=self.clients, app_url=self.servers.app_url)
                self.say(f"storm: shop {self.front.shop.code}, {len(self.front.sessions)} tills, target "
                         f"{self.target:,} callbacks, "
                         f"servers {self.servers.app_url} (shop) and {self.servers.sim_url} (Daraja), logs in "
                         f"{self.folder}")
                self.amounts = StkRequest.objects.filter(phone__in=[EARLY_PHONE, LOST_PHONE]).count()
                while self.tally.callbacks < self.target:
                    self.run_wave()
                self.servers.stop_worker()
                self.settle()
                return self.report()
        finally:
            daraja_log.setLevel(level)
            self.servers.stop()
            if self.fault_thread:
                self.fault_thread.join(120)

    def run_wave(self) -> None:
        self.tally.waves += 1
        began = time.monotonic()
        retrying(self._top_up_scarce)
        planned = self._plan(self.wave_size)
        self._ring_up(planned)
        rung_up = time.monotonic()
        retrying(lambda: self._answer_as_customers(planned))
        prompts = {s.checkout_id: s for s in planned if s.checkout_id}
        deliveries = retrying(lambda: list(Delivery.objects.filter(state=Delivery.State.QUEUED).select_related(
            "prompt", "prompt__payment")))
        retrying(lambda: Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(
            state=Delivery.State.SENDING))
        tasks = [task for delivery in deliveries for task in self._tasks_for(delivery, prompts)]
        # The wave's sales for the last units are paid at the same instant.
        scarce = [task for task in tasks if isinstance(task, tuple)]
        tasks = [task for task in tasks if not isinstance(task, tuple)] + self._due_late_tasks()
        if scarce:
            tasks.append(lambda: self.burst(scarce, "stk"))
        self.random.shuffle(tasks)
        # Injected as the callbacks start to fly, so that they meet the fault.
        self._maybe_inject_fault()
        delivering = time.monotonic()
        with ThreadPoolExecutor(self.senders) as pool:
            list(pool.map(lambda task: task(), tasks))
        delivered = time.monotonic()
        retrying(lambda: Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(
            state=Delivery.State.SENT, sent_at=timezone.now()))
        self._cashiers_follow_up(planned)
        self.sales += planned
        self.say(f"wave {self.tally.waves}: {len(planned)} sales rung up in {rung_up - began:.1f} s, callbacks "
                 f"delivered in {delivered - delivering:.1f} s, wave {time.monotonic() - began:.1f} s; "
                 f"{self.tally.callbacks:,} callbacks sent so far")

    def _top_up_scarce(self) -> None:
        level = StockLevel.objects.get(shop=self.front.shop, product=self.front.scarce)
        if level.on_hand < SCARCE_UNITS:
            receive_stock(shop_id=self.front.shop.pk, product_id=self.front.scarce.pk,
                          quantity=SCARCE_UNITS - level.on_hand, reason="storm: the baker came")

    def _plan(self, count: int) -> list[StormSale]:
        planned = []
        lost_phone_busy = retrying(lambda: StkRequest.objects.filter(phone=LOST_PHONE, status__in=AWAITING).exists())
        # Now and then a sale on the simulator's early-callback and lost-callback phones (a phone has one
        # prompt at a time, and never the same amount twice within 2 minutes: a fresh amount each).
        now = time.monotonic()
        specials = [(scenario, phone) for scenario, phone in (("early", EARLY_PHONE), ("lost_sim", LOST_PHONE))
                    if now - self.special_at.get(phone, -SPECIAL_PHONE_EVERY) >= SPECIAL_PHONE_EVERY
                    and not (phone == LOST_PHONE and lost_phone_busy)]
        for scenario, phone in specials:
            self.special_at[phone] = now
            self.amounts += 1
            items = [{"product_id": self.front.sweets.pk, "quantity": 100 + self.amounts}]
            planned.append(StormSale(scenario, phone, items))
        # The first wave has one sale of each scenario in the mix, so even a small storm has them all.
        first = [name for name, share in self.mix.items() if share > 0] if self.tally.waves == 1 else []
        for number in range(count - len(planned)):
            scenario, roll = "normal", self.random.random()
            for name, share in self.mix.items():
                if roll < share:
                    scenario = name
                    break
                roll -= share
            if number < len(first):
                scenario = first[number]
            self.phones += 1
            if scenario == "scarce":
                items = [{"product_id": self.front.scarce.pk, "quantity": 1}]
            else:
                items = [{"product_id": p.pk, "quantity": self.random.randint(1, 3)}
                         for p in self.random.sample(self.front.catalogue, self.random.randint(1, 3))]
            planned.append(StormSale(scenario, f"25471{self.phones:07d}", items))
        for sale in planned:
            self.tally.sales_planned[sale.scenario] += 1
        return planned

    def _ring_up(self, planned: list[StormSale]) -> None:
        specials = [s for s in planned if s.phone in (EARLY_PHONE, LOST_PHONE)]
        rest = [s for s in planned if s not in specials]
        lanes = [rest[n::self.clients] for n in range(self.clients)]
        lanes[0] = specials + lanes[0]

        def lane(number):
            for sale in lanes[number]:
                self._create_sale(self.front.sessions[number], sale)

        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(lane, range(self.clients)))

    def _create_sale(self, session: requests.Session, sale: StormSale) -> None:
        try:
            response = session.post(f"{self.servers.app_url}/cashier/create-sale", json={
                "items": sale.items, "payment_method": "mpesa", "customer_phone": sale.phone}, timeout=60)
        except requests.RequestException as error:
            sale.error = f"no answer: {type(error).__name__}"
        else:
            body = _json(response)
            if response.status_code == 201:
                sale.sale_id, sale.checkout_id = body["sale_id"], body.get("mpesa_checkout_id")
                return
            sale.sale_id = body.get("sale_id")
            sale.error = f"HTTP {response.status_code}: {body.get('error') or response.text[:120]}"
        with self.tally.lock:
            self.tally.till_errors[sale.error[:150]] += 1

    def _answer_as_customers(self, planned: list[StormSale]) -> None:
        for sale in planned:
            if sale.scenario == "failed" and sale.checkout_id:
                sim.answer_prompt(checkout_request_id=sale.checkout_id, answer="cancel")
        sim.decide_due_prompts(ignore_delays=True)

    def _tasks_for(self, delivery: Delivery, prompts: dict) -> list:
        sale = prompts.get(delivery.prompt.checkout_request_id) if delivery.prompt else None
        scenario = sale.scenario if sale else "normal"
        url, body = delivery.url, delivery.body.encode()
        kind = "stk" if delivery.kind == Delivery.Kind.STK_CALLBACK else "c2b"
        if scenario == "lost":
            if self.random.random() < 0.5:
                self.late.append((delivery.prompt.checkout_request_id, url, body))
            return []
        if scenario == "duplicate":
            return [lambda: [self.post(url, body, kind) for _ in range(3)]]
        if scenario == "burst":
            return [lambda: self.burst([(url, body)] * BURST, kind)]
        if scenario == "wrong_amount":
            tampered = _with_amount(body, self.random.choice([-1, 1, 100]))
            return [lambda: self.post(url, tampered, kind)]
        payment = getattr(delivery.prompt, "payment", None)
        if scenario == "c2b_repeat" and payment:
            c2b = json.dumps(sim.c2b_body(payment, settings.MPESA_C2B_VERSION,
                                          Delivery.Kind.C2B_CONFIRMATION)).encode()
            pair = [(url, body, "stk"), (callback_url("c2b-confirmation"), c2b, "c2b")]
            self.random.shuffle(pair)
            return [lambda: [self.post(*one) for one in pair]]
        if scenario == "scarce":
            return [(url, body)]
        return [lambda: self.post(url, body, kind)]

    def _due_late_tasks(self) -> list:
        """Lost callbacks that turn up after all, once the sweep has found their payment."""
        found = set(retrying(lambda: StkRequest.objects.filter(
            checkout_request_id__in=[cid for cid, _, _ in self.late], status=StkRequest.Status.PAID,
        ).values_list("checkout_request_id", flat=True)))
        due = [late for late in self.late if late[0] in found]
        self.late = [late for late in self.late if late[0] not in found]
        return [lambda url=url, body=body: self.post(url, body, "stk") for _, url, body in due]

    def post(self, url: str, body: bytes, kind: str) -> None:
        session = getattr(self.connections, "session", None) or requests.Session()
        self.connections.session = session
        try:
            status = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60).status_code
        except requests.RequestException:
            status = "no answer"
            self.connections.session = None
        self.tally.answered(kind, status)

    def burst(self, requests_: list[tuple[str, bytes]], kind: str) -> None:
        barrier = threading.Barrier(len(requests_))

        def one(url, body):
            barrier.wait()
            self.post(url, body, kind)

        threads = [threading.Thread(target=one, args=request) for request in requests_]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _cashiers_follow_up(self, planned: list[StormSale]) -> None:
        """Each till polls its sale once; a cancelled prompt's sale is cancelled at the till."""
        def follow(number):
            for sale in planned[number::self.clients]:
                if sale.sale_id is not None:
                    self._follow_up(self.front.sessions[number], sale)

        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(follow, range(self.clients)))

    def _follow_up(self, session: requests.Session, sale: StormSale) -> None:
        try:
            response = session.get(f"{self.servers.app_url}/cashier/check-mpesa-payment/{sale.sale_id}", timeout=60)
            problem = "" if response.status_code == 200 else f"status poll HTTP {response.status_code}"
            if not problem and sale.scenario == "failed" and _json(response).get("status") == "failed":
                cancelled = session.post(f"{self.servers.app_url}/cashier/sales/{sale.sale_id}/cancel",
                                         json={"reason": "customer cancelled the prompt"}, timeout=60)
                problem = "" if cancelled.status_code == 200 else f"cancel HTTP {cancelled.status_code}"
        except requests.RequestException as error:
            problem = f"follow-up: {type(error).__name__}"
        if problem:
            with self.tally.lock:
                self.tally.till_errors[problem] += 1

    def _maybe_inject_fault(self) -> None:
        if self.fault and self.fault_thread is None and self.tally.callbacks >= self.fault_at * self.target:
            self.say(f"fault: running {self.fault!r} while the storm goes on")
            self.fault_thread = threading.Thread(
                target=subprocess.run, args=[self.fault], kwargs={"shell": True, "check": False}, daemon=True)
            self.fault_thread.start()

    # --- The end: sweep until quiet, then count ------------------------------------------------

    def settle(self, *, patience: float = 120.0) -> None:
        if self.fault_thread:
            self.fault_thread.join(120)
        deadline = time.monotonic() + patience
        while True:
            retrying(lambda: sim.decide_due_prompts(ignore_delays=True))
            with ThreadPoolExecutor(self.senders) as pool:
                list(pool.map(lambda task: task(), self._due_late_tasks()))
            retrying(sweep_mpesa)
            quiet = not any(retrying(self._stuck).values()) and not self.late
            if quiet or time.monotonic() > deadline:
                break
            time.sleep(1)
        # Whatever lost callbacks the sweep never found are delivered now, as a last chance.
        for _, url, body in self.late:
            self.post(url, body, "stk")
        self.late = []
        retrying(sweep_mpesa)
        # A cancelled prompt whose callback met a fault was found failed by the sweep: the cashier
        # cancels that sale now.
        failed = [sale for sale in self.sales if sale.scenario == "failed" and sale.sale_id]
        pending = set(retrying(lambda: Sale.objects.filter(
            pk__in=[sale.sale_id for sale in failed], status=Sale.Status.PENDING).values_list("pk", flat=True)))
        for sale in failed:
            if sale.sale_id in pending:
                self._follow_up(self.front.sessions[0], sale)

    def _storm_requests(self):
        return StkRequest.objects.filter(shop=self.front.shop)

    def _stuck(self) -> dict:
        return {
            "prompts with no final answer": self._storm_requests().filter(status__in=AWAITING).count(),
            "callbacks not yet applied": CallbackLog.objects.filter(
                received_at__gte=self.since, status__in=RETRYABLE_LOGS).count(),
            "ledger rows matched but not applied": MpesaTransaction.objects.filter(
                shop=self.front.shop, match_status=MpesaTransaction.Match.MATCHED, payment__isnull=True).count(),
            "callbacks the simulator still owes": Delivery.objects.filter(
                state__in=[Delivery.State.QUEUED, Delivery.State.SENDING],
                prompt__account_reference__startswith=self.front.shop.code + "-").count(),
        }

    def report(self) -> dict:
        shop = self.front.shop
        elapsed = time.monotonic() - self.tally.started
        prompts = StkPrompt.objects.filter(account_reference__startswith=shop.code + "-")
        early = Delivery.objects.filter(prompt__in=prompts, prompt__delivery=StkPrompt.Delivery.EARLY)
        for status in early.exclude(state=Delivery.State.QUEUED).values_list("status_code", flat=True):
            self.tally.answered("stk (simulator, before the push response)", status or "no answer")
        lost, double = self._money_counted()
        stuck = self._stuck()
        raw_rows = CallbackLog.objects.filter(received_at__gte=self.since).count()
        ok = sum(n for status, n in self.tally.answers.items() if status == 200)
        unexpected = self._unexpected_outcomes()
        violations = check_books(shop_id=shop.pk)
        figures = {
            "sales": sum(self.tally.sales_planned.values()), "waves": self.tally.waves,
            "callbacks sent": self.tally.callbacks, "seconds": round(elapsed, 1),
            "non-200 answers": self.tally.callbacks - ok,
            "lost": lost, "double-counted": double, "stuck pending": sum(stuck.values()),
            "answered without a raw row": max(0, ok - raw_rows), "invariant violations": len(violations),
            "unexpected outcomes": len(unexpected),
        }
        outcomes = Counter(Sale.objects.filter(shop=shop).values_list("status", flat=True))
        review = MpesaTransaction.objects.filter(shop=shop, match_status=MpesaTransaction.Match.REVIEW).count()
        self.say("")
        self.say(f"storm over: {figures['sales']:,} sales in {self.tally.waves} waves, "
                 f"{self.tally.callbacks:,} callbacks in {elapsed:,.1f} s ({self.tally.callbacks / elapsed:,.1f} "
                 "callbacks/s)")
        self.say("  sales by scenario: "
                 + ", ".join(f"{n:,} {name}" for name, n in self.tally.sales_planned.most_common()))
        self.say("  callbacks by kind: " + ", ".join(f"{n:,} {kind}" for kind, n in self.tally.sent.most_common()))
        self.say("  answers: " + ", ".join(f"{n:,} × {status}" for status, n in self.tally.answers.most_common()))
        self.say(f"  sales: {outcomes['completed']:,} completed, {outcomes['pending']:,} pending, "
                 f"{outcomes['cancelled']:,} cancelled; {review:,} M-Pesa payments held for review")
        if self.tally.till_errors:
            self.say("  at the till: "
                     + "; ".join(f"{n:,} × {error}" for error, n in self.tally.till_errors.most_common(8)))
        for what, count in stuck.items():
            if count:
                self.say(f"  stuck: {count:,} {what}")
        for line in unexpected[:20]:
            self.say(f"  unexpected: {line}")
        for line in violations:
            self.say(f"  invariant: {line}")
        self.say("  " + "   ".join(f"{name}: {value:,}" for name, value in figures.items()
                                     if name not in ("sales", "waves", "seconds", "callbacks sent")))
        return figures

    def _money_counted(self) -> tuple[int, int]:
        """Lost and double-counted payments, against the simulator's record of what was paid."""
        shop_prompts = StkPrompt.objects.filter(account_reference__startswith=self.front.shop.code + "-")
        paid = dict(Payment.objects.filter(prompt__in=shop_prompts).values_list(
            "receipt_number", "prompt__checkout_request_id"))
        by_receipt = Counter(MpesaTransaction.objects.filter(receipt_number__in=list(paid)).values_list(
            "receipt_number", flat=True))
        by_query = Counter(MpesaTransaction.objects.filter(
            receipt_number__isnull=True, stk_request__checkout_request_id__in=list(paid.values()),
        ).values_list("stk_request__checkout_request_id", flat=True))
        rows = {receipt: by_receipt[receipt] + by_query[checkout_id] for receipt, checkout_id in paid.items()}
        phantom = MpesaTransaction.objects.filter(shop=self.front.shop).exclude(receipt_number__isnull=True).exclude(
            receipt_number__in=list(paid)).count()
        overpaid = Sale.objects.filter(shop=self.front.shop, amount_paid__gt=F("total")).count()
        return sum(n == 0 for n in rows.values()), sum(n > 1 for n in rows.values()) + phantom + overpaid

    def _unexpected_outcomes(self) -> list[str]:
        # A sale the till could not start (only under an injected fault) has no expected ending.
        known = {s.sale_id: s for s in self.sales if s.sale_id and not s.error}
        lines = []
        sales = Sale.objects.filter(pk__in=list(known)).prefetch_related("payments", "mpesa_transactions")
        for sale in sales:
            planned = known[sale.pk]
            ledger = list(sale.mpesa_transactions.all())
            review = [tx for tx in ledger if tx.match_status == MpesaTransaction.Match.REVIEW]
            payments = list(sale.payments.all())
            if planned.scenario == "wrong_amount":
                # Held for review; unless the sweep's STK Query settled the prompt first (the amount
                # asked), when the tampered callback changes nothing.
                fine = (sale.status == Sale.Status.PENDING and len(review) == 1 and not payments) or (
                    sale.status == Sale.Status.COMPLETED and len(payments) == 1 and len(ledger) == 1
                    and ledger[0].source == MpesaTransaction.Source.STK_QUERY)
            elif planned.scenario == "failed":
                fine = sale.status == Sale.Status.CANCELLED and not ledger
            elif planned.scenario == "scarce":
                fine = (sale.status == Sale.Status.COMPLETED and len(payments) == 1) or (
                    sale.status == Sale.Status.PENDING and len(review) == 1
                    and "out of stock" in review[0].review_reason)
            else:
                fine = sale.status == Sale.Status.COMPLETED and len(payments) == 1 and len(ledger) == 1
            if not fine:
                lines.append(f"{planned.scenario} sale {sale.receipt_number} ended {sale.status} with "
                             f"{len(payments)} payment(s) and ledger rows "
                             f"{[(tx.receipt_number, tx.match_status, tx.review_reason[:60]) for tx in ledger]}")
        for planned in self.sales:
            if planned.error and not self.fault:
                lines.append(f"{planned.scenario} sale on {planned.phone} was not rung up: {planned.error}")
        return lines


def _json(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _with_amount(body: bytes, change: int) -> bytes:
    document = json.loads(body)
    for item in document["Body"]["stkCallback"].get("CallbackMetadata", {}).get("Item", []):
        if item.get("Name") == "Amount":
            item["Value"] = item["Value"] + change
    return json.dumps(document).encode()


def parse_mix(text: str) -> dict:
    mix = dict(DEFAULT_MIX)
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, share = part.partition("=")
        if name not in DEFAULT_MIX:
            raise StormError(f"Unknown scenario {name!r} in --mix; use {', '.join(DEFAULT_MIX)}.")
        try:
            mix[name] = float(share)
        except ValueError:
            raise StormError(f"--mix {part!r}: give a fraction, e.g. {name}=0.05.") from None
    if sum(mix.values()) > 1:
        raise StormError("The --mix fractions add up to more than 1.")
    return mix

