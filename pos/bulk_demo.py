"""The benchmark data set: a chain's past months of trading, written in bulk (seed_demo --sales N).

It leaves the books as the real workflows would, so check_books and check_stock hold on it:
- sales with their lines, each in its till's shift of the day (past days' shifts closed and counted,
  today's open), and for every completed sale its payment: cash, M-Pesa by STK push (the STK request,
  its raw callback, a matched ledger row and the payment it became) or by paybill with the receipt
  number as the account (the raw C2B confirmation, a matched ledger row and its payment);
- one stock movement per line sold (and a restock just before a product would run out), so that
  on-hand equals the sum of the stock ledger;
- M-Pesa ledger rows, each with its raw confirmation, that paid no sale: unmatched paybill payments
  and duplicate payments of sales already paid, waiting for review. The ledger gets as many rows as
  there are sales;
- a few sales left pending (their STK outcome unknown) or cancelled by the customer.

On PostgreSQL rows go in with COPY; elsewhere (SQLite, a small development data set) with bulk_create.
"""

import bisect
import hashlib
import json
import os
import random
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from django.apps import apps
from django.db import connection, transaction
from django.utils import timezone

from inventory.models import StockLevel, StockMovement

from .models import Payment, Sale, SaleLine, Shift, Shop
from .services import CENT, vat_in

RESTOCK_QUANTITY = 1000
BATCH = 10_000
LOAD_MODE_MIN = 100_000  # sales: below this a load commits batch by batch with its indexes in place
# A Kenyan supermarket's day: open 07:00–21:00, busiest at lunch and after work.
HOUR_WEIGHTS = {7: 3, 8: 6, 9: 6, 10: 5, 11: 6, 12: 9, 13: 9, 14: 6, 15: 5, 16: 6, 17: 9, 18: 10, 19: 8, 20: 4}
WEEKDAY_WEIGHTS = [1.0, 0.9, 0.95, 1.0, 1.15, 1.35, 0.8]  # Monday … Sunday
BASKET_SIZES, BASKET_CUMULATIVE = [1, 2, 3, 4, 5, 6], [25, 50, 70, 85, 95, 100]
QUANTITIES, QUANTITY_CUMULATIVE = [1, 2, 3], [70, 90, 100]
# Of 1,000 sales: how each ends. The rest of the ledger (as many rows as sales) is unmatched
# paybill money (4 in 5) and duplicate payments of paid sales (1 in 5).
OUTCOMES = [("cash", 300), ("stk", 545), ("paybill", 145), ("pending", 5), ("cancelled", 5)]
FIRST_NAMES = ["WANJIRU", "OTIENO", "AKINYI", "KAMAU", "NJERI", "MUTUA", "CHEPKOECH", "KIPROTICH", "ACHIENG",
               "MWANGI", "WAFULA", "NEKESA", "ODHIAMBO", "WAMBUI", "KIMANI", "JEPCHIRCHIR", "BARASA", "ATIENO"]
UNMATCHED_REFS = ["", "", "", "SHOP", "GROCERIES", "ACCOUNT", "MAMA MBOGA", "12345"]
STK_PAID = "The service request is processed successfully."
OPENING_FLOAT = Decimal("2000")
SAFARICOM_IP = "196.201.214.200"
CALLBACK_HEADERS = {"Content-Type": "application/json", "User-Agent": "Apache-HttpClient/4.5.13"}
PAID = ("cash", "stk", "paybill")  # outcomes that complete the sale
BY_STK = ("stk", "pending", "cancelled")  # outcomes that began with an STK push


@dataclass
class ShopPlan:
    """One shop's part of the data set: who sells, at which tills, how it is paid."""

    id: int
    code: str
    till_ids: list[int]
    cashier_id: int
    shortcode: str
    weight: int
    paybill: bool = True


class Table:
    """A model's rows as plain tuples in `fields` order; other columns get their model default."""

    def __init__(self, model, fields: list[str]):
        self.model = model
        named = [model._meta.get_field(name) for name in fields]
        rest = [f for f in model._meta.concrete_fields if f not in named and not f.primary_key]
        self.extra = tuple(f.get_default() for f in rest)  # "" for text, None without a default
        for model_field, value in zip(rest, self.extra):
            if value is None and not model_field.null:
                raise RuntimeError(
                    f"{model._meta.label}.{model_field.name} has no default: teach pos/bulk_demo.py its value."
                )
        self.attnames = [f.attname for f in named + rest]
        self.columns = [f.column for f in named + rest]
        # COPY takes JSON as text; bulk_create takes the Python value.
        self.json_at = [i for i, f in enumerate(named + rest) if f.get_internal_type() == "JSONField"]


class Writer:
    """Reserves primary keys and writes rows: COPY on PostgreSQL, bulk_create elsewhere."""

    def __init__(self):
        self.postgres = connection.vendor == "postgresql"
        self.handed_out = {}  # table → the next id not yet handed out (databases without sequences)

    def reserve_ids(self, model, count: int) -> list[int]:
        if count == 0:
            return []
        table = model._meta.db_table
        with connection.cursor() as cursor:
            if self.postgres:
                cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
                sequence = cursor.fetchone()[0]
                cursor.execute("SELECT nextval(%s::regclass) FROM generate_series(1, %s)", [sequence, count])
                return [row[0] for row in cursor.fetchall()]
            # Other databases take explicit ids above the highest one written or handed out (the
            # batch holds the write lock; its rows are written at its end).
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {connection.ops.quote_name(table)}")
            first = max(cursor.fetchone()[0] + 1, self.handed_out.get(table, 0))
        self.handed_out[table] = first + count
        return list(range(first, first + count))

    def write(self, table: Table, rows: list[tuple], *, with_id: bool = False) -> None:
        if not rows:
            return
        columns = (["id"] if with_id else []) + table.columns
        if self.postgres:
            names = ", ".join(connection.ops.quote_name(column) for column in columns)
            with connection.cursor() as cursor:
                with cursor.copy(f"COPY {connection.ops.quote_name(table.model._meta.db_table)} ({names}) "
                                 "FROM STDIN") as copy:
                    extra, json_at, as_text = table.extra, [i + with_id for i in table.json_at], {}
                    for row in rows:
                        row += extra
                        if json_at:
                            row = list(row)
                            for i in json_at:  # the same few documents over and over: dump each once
                                key = id(row[i])
                                if key not in as_text:
                                    as_text[key] = (row[i], json.dumps(row[i]))
                                row[i] = as_text[key][1]
                        copy.write_row(row)
            return
        attnames = (["id"] if with_id else []) + table.attnames
        table.model.objects.bulk_create(
            [table.model(**dict(zip(attnames, row + table.extra))) for row in rows], batch_size=500
        )

    def set_on_hand(self, levels: dict[int, int]) -> None:
        if self.postgres:
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE inventory_stocklevel AS level SET on_hand = new.on_hand, updated_at = now() "
                    "FROM (SELECT unnest(%s::bigint[]) AS id, unnest(%s::integer[]) AS on_hand) AS new "
                    "WHERE level.id = new.id",
                    [list(levels), list(levels.values())],
                )
            return
        rows = [StockLevel(pk=pk, on_hand=on_hand) for pk, on_hand in levels.items()]
        StockLevel.objects.bulk_update(rows, ["on_hand"], batch_size=500)

    def begin(self) -> None:
        """Session settings for a bulk write, for the current transaction only."""
        if not self.postgres:
            return
        with connection.cursor() as cursor:
            # Demo data: losing the last batch in a crash is fine, waiting for each WAL flush is not.
            cursor.execute("SET LOCAL synchronous_commit TO off")
            cursor.execute("SET LOCAL maintenance_work_mem TO '256MB'")
            cursor.execute("SELECT current_setting('is_superuser') = 'on'")
            if cursor.fetchone()[0]:
                # The rows are consistent by construction (ids reserved, parents written first), so the
                # deferred foreign-key triggers, most of the cost, are skipped as pg_restore does;
                # check_books and check_stock verify the result. Needs a superuser; others just wait.
                cursor.execute("SET LOCAL session_replication_role TO replica")

    def set_indexes_aside(self, models) -> list[str]:
        """Drop the tables' indexes other than primary keys and constraints; their definitions to rebuild."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
                "WHERE indrelid = ANY(%s::regclass[]) AND NOT indisprimary "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = indexrelid) ORDER BY 1",
                [[model._meta.db_table for model in models]],
            )
            indexes = cursor.fetchall()
            for name, _ in indexes:
                cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
        return [definition for _, definition in indexes]

    def execute(self, sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    def analyze(self, models) -> None:
        """Fresh planner statistics for the tables just filled, as autovacuum would gather later."""
        if self.postgres:
            for model in models:
                self.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


class TradingClock:
    """Sale times from `start` to `end` in opening hours, spread by hour and weekday, in local time
    (so the receipt codes and request ids made from them read as a Kenyan clock would)."""

    def __init__(self, start: datetime, end: datetime):
        tz = timezone.get_current_timezone()
        self.slots, self.cumulative = [], []
        day = timezone.localtime(start, tz).date()
        total = 0.0
        while day <= timezone.localtime(end, tz).date():
            for hour, weight in HOUR_WEIGHTS.items():
                slot_start = datetime(day.year, day.month, day.day, hour, tzinfo=tz)
                slot_end = slot_start + timedelta(hours=1)
                begin, finish = max(slot_start, start), min(slot_end, end)
                if finish <= begin:
                    continue
                share = (finish - begin) / (slot_end - slot_start)
                total += weight * WEEKDAY_WEIGHTS[day.weekday()] * share
                self.slots.append((begin, finish))
                self.cumulative.append(total)
            day += timedelta(days=1)
        self.total = total

    def times(self, first: int, count: int, of: int) -> list[datetime]:
        """Times of sales number first … first+count-1 out of `of`, in order."""
        if not self.slots:
            raise ValueError("No opening hours between the last sale and now: nothing to spread sales over.")
        moments = []
        for k in range(first, first + count):
            target = (k + 0.5) / of * self.total
            i = min(bisect.bisect_left(self.cumulative, target), len(self.slots) - 1)
            before = self.cumulative[i - 1] if i else 0.0
            width = self.cumulative[i] - before
            fraction = (target - before) / width if width else 0.0
            begin, finish = self.slots[i]
            moments.append(begin + (finish - begin) * fraction)
        return moments


@dataclass
class Batch:
    shifts: list = field(default_factory=list)
    callbacks: list = field(default_factory=list)
    sales: list = field(default_factory=list)
    lines: list = field(default_factory=list)
    payments: list = field(default_factory=list)
    stk_requests: list = field(default_factory=list)
    ledger: list = field(default_factory=list)
    movements: list = field(default_factory=list)


class PastSales:
    """Writes `total` past sales for the shops in `plans`, calling `progress(what, done, total)`."""

    SHIFT = ["shop", "till", "opened_by", "opened_at", "opening_float", "status", "closed_by", "closed_at",
             "counted_cash", "expected_cash"]
    SALE = ["receipt_number", "shop", "till", "cashier", "shift", "status", "total", "vat_total", "amount_paid",
            "customer_phone", "created_at", "completed_at", "cancelled_at", "cancel_reason"]
    LINE = ["sale", "product", "name", "quantity", "unit_price", "tax_band", "tax_rate", "line_total", "vat_amount"]
    PAYMENT = ["sale", "method", "amount", "tendered", "change_given", "reference", "received_by", "created_at"]
    MOVEMENT = ["shop", "product", "quantity", "balance_after", "kind", "sale", "reference", "reason",
                "created_by", "created_at"]
    STK = ["sale", "shop", "phone", "amount", "account_reference", "merchant_request_id", "checkout_request_id",
           "callback_token", "status", "result_code", "result_desc", "mpesa_receipt", "requested_by",
           "created_at", "resolved_at"]
    CALLBACK = ["kind", "body", "headers", "source_ip", "path", "received_at", "status", "attempts", "processed_at",
                "checkout_request_id", "trans_id"]
    LEDGER = ["receipt_number", "transaction_type", "amount", "msisdn", "first_name", "bill_ref_number",
              "business_shortcode", "transaction_time", "shop", "sale", "stk_request", "payment", "callback",
              "source", "match_status", "review_reason", "processed", "created_at"]
    MATCH_AT = 1 + LEDGER.index("match_status")  # in a ledger row, after its id

    def __init__(self, *, plans: list[ShopPlan], catalogue: list[tuple], total: int, start: datetime,
                 end: datetime, rng: random.Random, progress=None):
        self.plans, self.catalogue, self.total, self.rng = plans, catalogue, total, rng
        self.progress = progress or (lambda what, done, total: None)
        self.clock = TradingClock(start, end)
        self.today = timezone.localdate(end)
        self.writer = Writer()
        self.stk_model = apps.get_model("mpesa", "StkRequest")
        self.callback_model = apps.get_model("mpesa", "CallbackLog")
        self.ledger_model = apps.get_model("mpesa", "MpesaTransaction")
        self.tables = {
            "shift": Table(Shift, self.SHIFT), "sale": Table(Sale, self.SALE), "line": Table(SaleLine, self.LINE),
            "payment": Table(Payment, self.PAYMENT), "movement": Table(StockMovement, self.MOVEMENT),
            "stk": Table(self.stk_model, self.STK), "callback": Table(self.callback_model, self.CALLBACK),
            "ledger": Table(self.ledger_model, self.LEDGER),
        }
        self.priced = {}  # (product id, quantity) → (line total, VAT in it)
        self.phones = [f"2547{rng.randrange(10**8):08d}" for _ in range(5000)]
        self.hashed = {phone: hashlib.sha256(phone.encode()).hexdigest() for phone in self.phones}
        self.outcomes = [name for name, weight in OUTCOMES for _ in range(weight)]
        self.shop_picks = [plan for plan in plans for _ in range(plan.weight)]
        self.shifts = {}  # (till id, local date) → shift id
        self.shift_cash = {}  # shift id → cash taken, for the past shifts this run opens and closes

    def run(self) -> Counter:
        """Every batch. A load that at least doubles the sales runs as one transaction with the secondary
        indexes set aside and rebuilt at the end, as PostgreSQL's "Populating a Database" advises: on
        this scale building an index once is many times cheaper than updating it row by row."""
        load = self.writer.postgres and self.total >= max(Sale.objects.count(), LOAD_MODE_MIN)
        self._find_shifts()
        with transaction.atomic() if load else nullcontext():
            if load:
                # Checks the caller's pending foreign keys now: an index cannot be built while any wait.
                self.writer.execute("SET CONSTRAINTS ALL IMMEDIATE")
            aside = self.writer.set_indexes_aside([table.model for table in self.tables.values()]) if load else []
            levels = self._lock_levels() if load else None
            made, done = Counter(), 0
            self.progress("sales", 0, self.total)
            while done < self.total:
                count = min(BATCH, self.total - done)
                with transaction.atomic():  # each batch whole (a savepoint inside a load)
                    batch_levels = levels or self._lock_levels()
                    made += self.write_batch(done, count, batch_levels)
                    if not load:
                        self._save_levels(batch_levels)
                        self._count_shifts()
                done += count
                self.progress("sales", done, self.total)
            if load:
                self._save_levels(levels)
                self._count_shifts()
            if aside:
                self.progress("indexes rebuilt", 0, len(aside))
            for i, definition in enumerate(aside, start=1):
                self.writer.execute(definition)
                self.progress("indexes rebuilt", i, len(aside))
        self.writer.analyze([table.model for table in self.tables.values()] + [StockLevel])
        return made

    def write_batch(self, first: int, count: int, levels: dict) -> Counter:
        self.writer.begin()
        rng = self.rng
        times = self.clock.times(first, count, self.total)
        shops = [rng.choice(self.shop_picks) for _ in range(count)]
        receipts = self._reserve_receipts(shops)
        outcomes = [rng.choice(self.outcomes) for _ in range(count)]
        sale_ids = self.writer.reserve_ids(Sale, count)
        # Each prompt's callback token, unguessable as the live ones: one read of the OS's randomness.
        entropy = os.urandom(16 * count).hex()
        self.tokens = iter(entropy[i:i + 32] for i in range(0, len(entropy), 32))
        self.ids = {
            "payment": iter(self.writer.reserve_ids(Payment, sum(o in PAID for o in outcomes))),
            "stk": iter(self.writer.reserve_ids(self.stk_model, sum(o in BY_STK for o in outcomes))),
            # every ledger row has its raw callback, and so has every prompt the customer cancelled
            "callback": iter(self.writer.reserve_ids(self.callback_model, count + outcomes.count("cancelled"))),
            "ledger": iter(self.writer.reserve_ids(self.ledger_model, count)),
        }
        batch = Batch()
        paid_by_mpesa = []
        for sale_id, plan, receipt, outcome, moment in zip(sale_ids, shops, receipts, outcomes, times):
            paid = self._sale(batch, levels, sale_id, plan, receipt, outcome, moment)
            if paid:
                paid_by_mpesa.append(paid)
        for ledger_id in self.ids["ledger"]:
            self._unpaid_ledger_row(batch, ledger_id, paid_by_mpesa, shops, times)
        self._write(batch, sale_ids)
        return Counter(sales=count, lines=len(batch.lines), payments=len(batch.payments),
                       stk_requests=len(batch.stk_requests), ledger=len(batch.ledger),
                       movements=len(batch.movements), callbacks=len(batch.callbacks), shifts=len(batch.shifts),
                       **{f"ledger_{match}": n for match, n in Counter(row[self.MATCH_AT] for row in batch.ledger).items()})

    def _sale(self, batch, levels, sale_id, plan, receipt, outcome, moment):
        """One sale and everything it leaves behind; (sale id, plan, receipt, total, paid at) if M-Pesa paid it."""
        rng = self.rng
        lines = [(sale_id, pk, name, qty, price, band, rate, *self._price(pk, price, rate, qty))
                 for (pk, name, price, band, rate), qty in self._basket()]
        total = sum(line[7] for line in lines)
        batch.lines += lines
        till = rng.choice(plan.till_ids)
        completed = outcome in PAID
        phone = rng.choice(self.phones) if outcome != "cash" else ""
        done_at = moment + timedelta(seconds=5 if outcome == "cash" else rng.randint(20, 90))
        batch.sales.append((
            receipt, plan.id, till, plan.cashier_id, self._shift(batch, plan, till, moment),
            "completed" if completed else outcome, total, sum(line[8] for line in lines),
            total if completed else Decimal("0"), phone if outcome in BY_STK else "", moment,
            done_at if completed else None, done_at if outcome == "cancelled" else None,
            "the customer cancelled the M-Pesa prompt" if outcome == "cancelled" else "",
        ))
        stk_id = next(self.ids["stk"]) if outcome in BY_STK else None
        ledger_id = next(self.ids["ledger"]) if outcome in ("stk", "paybill") else None
        code = self._mpesa_code(ledger_id, done_at) if ledger_id else ""
        if stk_id:
            batch.stk_requests.append(self._stk_row(stk_id, sale_id, plan, phone, total, receipt, outcome, code,
                                                    moment, done_at))
        if outcome == "cancelled":
            self._stk_callback(batch, stk_id, "1032", "Request cancelled by user", done_at)
        if not completed:
            return None
        for _, pk, _, qty, *_ in lines:
            batch.movements += self._sell(levels, plan, pk, qty, sale_id, receipt, done_at)
        payment_id = next(self.ids["payment"])
        if outcome == "cash":
            tendered = (total / 50).to_integral_value(rounding=ROUND_CEILING) * 50
            batch.payments.append((payment_id, sale_id, "cash", total, tendered, tendered - total, "",
                                   plan.cashier_id, done_at))
            shift_id = batch.sales[-1][4]
            if shift_id in self.shift_cash:
                self.shift_cash[shift_id] += total
            return None
        batch.payments.append((payment_id, sale_id, "mpesa", total, total, Decimal("0"), code, None, done_at))
        if outcome == "stk":
            callback_id = self._stk_callback(batch, stk_id, "0", STK_PAID, done_at, code=code, amount=total,
                                             phone=phone)
            msisdn, bill_ref, source = phone, "", "stk_callback"
        else:
            msisdn, bill_ref, source = self.hashed[phone], receipt, "c2b"
            callback_id = self._c2b_callback(batch, plan, code, total, bill_ref, msisdn, done_at)
        batch.ledger.append((
            ledger_id, code, "CustomerPayBillOnline", total, msisdn, rng.choice(FIRST_NAMES), bill_ref,
            plan.shortcode, done_at, plan.id, sale_id, stk_id, payment_id, callback_id, source, "matched", "", True,
            done_at,
        ))
        return sale_id, plan, receipt, total, done_at

    def _unpaid_ledger_row(self, batch, ledger_id, paid_by_mpesa, shops, times) -> None:
        """Money that paid no sale: a duplicate payment of a paid sale to review (1 in 5), else unmatched."""
        rng = self.rng
        if paid_by_mpesa and rng.random() < 0.2:
            sale_id, plan, receipt, amount, paid_at = rng.choice(paid_by_mpesa)
            moment = paid_at + timedelta(minutes=rng.randint(1, 30))
            transaction_type, bill_ref, match = "CustomerPayBillOnline", receipt, "review"
            reason = f"sale {receipt} is completed and owed nothing: an overpayment to refund or credit"
        else:
            plan, moment, sale_id = rng.choice(shops), rng.choice(times), None
            amount, match, reason = Decimal(rng.randrange(50, 5000, 10)), "unmatched", ""
            transaction_type = "CustomerPayBillOnline" if plan.paybill else "CustomerBuyGoodsOnline"
            bill_ref = rng.choice(UNMATCHED_REFS) if plan.paybill else ""
        code, msisdn = self._mpesa_code(ledger_id, moment), self.hashed[rng.choice(self.phones)]
        callback_id = self._c2b_callback(batch, plan, code, amount, bill_ref, msisdn, moment)
        batch.ledger.append((
            ledger_id, code, transaction_type, amount, msisdn, rng.choice(FIRST_NAMES), bill_ref, plan.shortcode,
            moment, plan.id, sale_id, None, None, callback_id, "c2b", match, reason, match == "review", moment,
        ))

    def _find_shifts(self) -> None:
        """Shifts already there: a till's open shift takes today's sales; a day with a shift reuses it."""
        tills = [till for plan in self.plans for till in plan.till_ids]
        for pk, till, opened_at, status in Shift.objects.filter(till_id__in=tills).values_list(
                "pk", "till_id", "opened_at", "status"):
            self.shifts.setdefault((till, timezone.localdate(opened_at)), pk)
            if status == Shift.Status.OPEN:
                self.shifts[(till, self.today)] = pk

    def _shift(self, batch, plan, till, moment) -> int:
        """The till's shift on the sale's day: opened before the shop opens, closed after it shuts."""
        day = moment.date()
        key = (till, day)
        if key not in self.shifts:
            shift_id = self.writer.reserve_ids(Shift, 1)[0]
            opened_at = datetime(day.year, day.month, day.day, 6, 55, tzinfo=moment.tzinfo)
            if day == self.today:
                batch.shifts.append((shift_id, plan.id, till, plan.cashier_id, opened_at, OPENING_FLOAT, "open",
                                     None, None, None, None))
            else:
                # The count is filled in once the shift's sales are all written (_count_shifts).
                batch.shifts.append((shift_id, plan.id, till, plan.cashier_id, opened_at, OPENING_FLOAT, "closed",
                                     plan.cashier_id, opened_at + timedelta(hours=14, minutes=10), OPENING_FLOAT,
                                     OPENING_FLOAT))
                self.shift_cash[shift_id] = Decimal("0")
            self.shifts[key] = shift_id
        return self.shifts[key]

    def _count_shifts(self) -> None:
        """The closed shifts' expected cash (float + cash taken) and count: one in twenty counted short."""
        rows = []
        for shift_id, cash in self.shift_cash.items():
            expected = OPENING_FLOAT + cash
            short = Decimal([50, 100, 200, 500][shift_id // 20 % 4]) if shift_id % 20 == 0 else Decimal("0")
            rows.append(Shift(pk=shift_id, expected_cash=expected, counted_cash=expected - short,
                              close_note=f"KES {short} short at the count" if short else ""))
        Shift.objects.bulk_update(rows, ["expected_cash", "counted_cash", "close_note"], batch_size=1000)

    def _lock_levels(self) -> dict[tuple[int, int], list[int]]:
        """The selling shops' stock rows, locked in id order, as (shop, product) → [id, on hand, changed]."""
        rows = (StockLevel.objects.select_for_update().filter(shop_id__in=[plan.id for plan in self.plans])
                .order_by("pk").values_list("pk", "shop_id", "product_id", "on_hand"))
        return {(shop_id, product_id): [pk, on_hand, False] for pk, shop_id, product_id, on_hand in rows}

    def _save_levels(self, levels) -> None:
        self.writer.set_on_hand({level[0]: level[1] for level in levels.values() if level[2]})

    def _reserve_receipts(self, shops: list[ShopPlan]) -> list[str]:
        """Receipt numbers in sale order, reserved per shop under the shop row lock (next_receipt_number's)."""
        wanted = Counter(plan.id for plan in shops)
        nexts = {}
        for shop in Shop.objects.select_for_update().filter(pk__in=wanted).order_by("pk"):
            nexts[shop.pk] = shop.last_receipt_seq + 1
            Shop.objects.filter(pk=shop.pk).update(last_receipt_seq=shop.last_receipt_seq + wanted[shop.pk])
        receipts = []
        for plan in shops:
            receipts.append(f"{plan.code}-{nexts[plan.id]:0{11 - len(plan.code)}d}")
            nexts[plan.id] += 1
        return receipts

    def _basket(self) -> list[tuple]:
        """A few distinct products, the popular ones (low in the list) far more often."""
        rng, catalogue = self.rng, self.catalogue
        size = min(rng.choices(BASKET_SIZES, cum_weights=BASKET_CUMULATIVE)[0], len(catalogue))
        picked = {}
        while len(picked) < size:
            product = catalogue[int(len(catalogue) * rng.random() ** 3)]
            picked.setdefault(product[0], product)
        quantities = rng.choices(QUANTITIES, cum_weights=QUANTITY_CUMULATIVE, k=size)
        return list(zip(picked.values(), quantities))

    def _price(self, pk, price, rate, qty) -> tuple[Decimal, Decimal]:
        key = (pk, qty)
        if key not in self.priced:
            gross = (price * qty).quantize(CENT)
            self.priced[key] = (gross, vat_in(gross, rate))
        return self.priced[key]

    def _sell(self, levels, plan, product_id, qty, sale_id, receipt, moment) -> list[tuple]:
        level = levels[(plan.id, product_id)]
        level[2] = True
        rows = []
        if level[1] < qty:
            # The shop restocks a product before it runs out, as the real one would.
            level[1] += RESTOCK_QUANTITY
            rows.append((plan.id, product_id, RESTOCK_QUANTITY, level[1], "receive", None, "DEMO-RESTOCK",
                         "restock", None, moment - timedelta(minutes=1)))
        level[1] -= qty
        rows.append((plan.id, product_id, -qty, level[1], "sale", sale_id, receipt, "", plan.cashier_id, moment))
        return rows

    def _stk_row(self, stk_id, sale_id, plan, phone, total, receipt, outcome, code, moment, done_at) -> tuple:
        checkout = f"ws_CO_{moment:%d%m%Y%H%M%S}{stk_id:012d}"
        merchant = f"{stk_id % 100000:05d}-{stk_id}-1"
        status, result, desc, resolved = {
            "stk": ("paid", "0", STK_PAID, done_at),
            "pending": ("unknown", "", "No callback and no answer to STK Query yet.", None),
            "cancelled": ("failed", "1032", "Request cancelled by user", done_at),
        }[outcome]
        return (stk_id, sale_id, plan.id, phone, int(total.to_integral_value(rounding=ROUND_CEILING)), receipt,
                merchant, checkout, next(self.tokens), status, result, desc, code, plan.cashier_id,
                moment, resolved)

    @staticmethod
    def _mpesa_code(ledger_id: int, moment: datetime) -> str:
        """"UK000A1B2C"-like: the year and month letters M-Pesa uses, then the ledger id in base 36."""
        digits, n = "", ledger_id
        while n:
            n, d = divmod(n, 36)
            digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[d] + digits
        return chr(ord("T") + (moment.year - 2025) % 7) + chr(ord("A") + moment.month - 1) + digits.rjust(8, "0")

    def _stk_callback(self, batch, stk_id, result, desc, moment, *, code="", amount=None, phone="") -> int:
        """The raw STK result Safaricom posted, as the callback view stores it."""
        stk = batch.stk_requests[-1]
        metadata = (
            f',"CallbackMetadata":{{"Item":[{{"Name":"Amount","Value":{amount:.1f}}},'
            f'{{"Name":"MpesaReceiptNumber","Value":"{code}"}},'
            f'{{"Name":"TransactionDate","Value":{moment:%Y%m%d%H%M%S}}},{{"Name":"PhoneNumber","Value":{phone}}}]}}'
        ) if code else ""
        body = (f'{{"Body":{{"stkCallback":{{"MerchantRequestID":"{stk[6]}","CheckoutRequestID":"{stk[7]}",'
                f'"ResultCode":{int(result)},"ResultDesc":"{desc}"{metadata}}}}}}}')
        return self._callback(batch, "stk", body, f"/mpesa/stk/callback/{stk[8]}", moment, checkout=stk[7],
                              code=code)

    def _c2b_callback(self, batch, plan, code, amount, bill_ref, msisdn, moment) -> int:
        """The raw C2B confirmation Safaricom posted."""
        body = (f'{{"TransactionType":"{"Pay Bill" if plan.paybill else "Buy Goods"}","TransID":"{code}",'
                f'"TransTime":"{moment:%Y%m%d%H%M%S}","TransAmount":"{amount:.2f}",'
                f'"BusinessShortCode":"{plan.shortcode}","BillRefNumber":"{bill_ref}","InvoiceNumber":"",'
                f'"OrgAccountBalance":"","ThirdPartyTransID":"","MSISDN":"{msisdn}","FirstName":"CUSTOMER"}}')
        return self._callback(batch, "c2b_confirmation", body, "/mpesa/c2b/confirmation", moment, code=code)

    def _callback(self, batch, kind, body: str, path, moment, *, checkout="", code="") -> int:
        # The bodies are built as text, a million json.dumps being a good part of the seed's time; every
        # value in them is digits, letters or a fixed phrase, so nothing needs escaping.
        callback_id = next(self.ids["callback"])
        received = moment + timedelta(seconds=1)
        batch.callbacks.append((
            callback_id, kind, body.encode(),
            CALLBACK_HEADERS, SAFARICOM_IP, path, received, "processed", 1, received, checkout,
            code,
        ))
        return callback_id

    def _write(self, batch: Batch, sale_ids: list[int]) -> None:
        write, tables = self.writer.write, self.tables
        write(tables["shift"], batch.shifts, with_id=True)
        write(tables["sale"], [(sale_id, *row) for sale_id, row in zip(sale_ids, batch.sales)], with_id=True)
        write(tables["line"], batch.lines)
        write(tables["payment"], batch.payments, with_id=True)
        write(tables["stk"], batch.stk_requests, with_id=True)
        write(tables["callback"], batch.callbacks, with_id=True)
        write(tables["ledger"], batch.ledger, with_id=True)
        write(tables["movement"], batch.movements)


def shop_weight(position: int) -> int:
    """The first shop (DEMO) is the flagship: twice the trade of each branch."""
    return 2 if position == 0 else 1
