"""Read-only figures for the back office: the sales dashboard and the sales CSV export.

Every query is an aggregate over an indexed range of completed sales (one day, one week), so the
dashboard costs the same with a year of history as with a week of it.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Count, F, Max, Q, Sum
from django.db.models.functions import ExtractHour, TruncDate
from django.utils import timezone

from comolor.logging import mask_phone
from inventory.models import StockLevel

from .models import Payment, Sale, SaleLine, Shop

ZERO = Decimal("0.00")
TOP_PRODUCTS = 10
LOW_STOCK_ROWS = 15
CSV_CHUNK = 2000  # sales fetched, and their payments looked up, at a time


@dataclass
class Period:
    """The dashboard's day and the week it falls in (Monday to that day), as local-time bounds."""

    day: date

    @property
    def day_start(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.day, time.min))

    @property
    def end(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.day + timedelta(days=1), time.min))

    @property
    def week_start(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.day - timedelta(days=self.day.weekday()), time.min))

    @property
    def week_days(self) -> list[date]:
        monday = self.day - timedelta(days=self.day.weekday())
        return [monday + timedelta(days=i) for i in range(7)]


def _week_of_sales(period: Period, shop_ids: list[int] | None, via: str = "") -> Q:
    """The week's completed sales (of the shops given), as a filter on Sale or, with via="sale__", on
    a model that points to it."""
    week = Q(**{f"{via}status": Sale.Status.COMPLETED, f"{via}created_at__gte": period.week_start,
                f"{via}created_at__lt": period.end})
    return week if shop_ids is None else week & Q(**{f"{via}shop_id__in": shop_ids})


@contextmanager
def _probing_indexes():
    """A transaction whose planner prefers index probes: the week's sales are a few thousand rows
    found by index, and with PostgreSQL's default random_page_cost (4, priced for spinning disks)
    it would rather read all million payments or sale lines than look up each sale's few."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL random_page_cost = 1.1")
        yield


def sales_dashboard(*, day: date, shop_ids: list[int] | None) -> dict:
    """The day's and its week's completed sales per shop, hour, weekday and payment method, the
    week's best sellers and the stock at or below its reorder level. shop_ids None means every shop."""
    with _probing_indexes():
        return _sales_dashboard(Period(day), shop_ids)


def _sales_dashboard(period: Period, shop_ids: list[int] | None) -> dict:

    # One pass over the week's sales, grouped finely enough for every chart below.
    cells = list(
        Sale.objects.filter(_week_of_sales(period, shop_ids)).annotate(date=TruncDate("created_at"), hour=ExtractHour("created_at"))
        .values("shop_id", "date", "hour").annotate(total=Sum("total"), count=Count("id")).order_by()
    )
    shops = {shop.pk: shop for shop in Shop.objects.filter(pk__in={cell["shop_id"] for cell in cells} | set(
        shop_ids or []))}
    per_shop = {pk: {"shop": shop, "day_total": ZERO, "day_count": 0, "week_total": ZERO, "week_count": 0}
                for pk, shop in shops.items()}
    per_hour = {hour: {"day_total": ZERO, "day_count": 0, "week_total": ZERO} for hour in range(24)}
    per_weekday = {d: {"date": d, "total": ZERO, "count": 0} for d in period.week_days}
    for cell in cells:
        row, today = per_shop[cell["shop_id"]], cell["date"] == period.day
        row["week_total"] += cell["total"]
        row["week_count"] += cell["count"]
        per_hour[cell["hour"]]["week_total"] += cell["total"]
        per_weekday[cell["date"]]["total"] += cell["total"]
        per_weekday[cell["date"]]["count"] += cell["count"]
        if today:
            row["day_total"] += cell["total"]
            row["day_count"] += cell["count"]
            per_hour[cell["hour"]]["day_total"] += cell["total"]
            per_hour[cell["hour"]]["day_count"] += cell["count"]
    days_in_week = period.day.weekday() + 1
    for hour in per_hour.values():
        hour["week_average"] = hour["week_total"] / days_in_week

    methods = (
        Payment.objects.filter(_week_of_sales(period, shop_ids, via="sale__")).values("method")
        .annotate(week_total=Sum("amount"), day_total=Sum("amount", filter=Q(sale__created_at__gte=period.day_start)))
        .order_by("method")
    )
    labels = dict(Payment.Method.choices)
    top = (
        SaleLine.objects.filter(_week_of_sales(period, shop_ids, via="sale__")).values("product_id")
        .annotate(name=Max("name"), quantity=Sum("quantity"), revenue=Sum("line_total"))
        .order_by("-revenue", "product_id")[:TOP_PRODUCTS]
    )
    day_total = sum((row["day_total"] for row in per_shop.values()), ZERO)
    day_count = sum(row["day_count"] for row in per_shop.values())
    week_total = sum((row["week_total"] for row in per_shop.values()), ZERO)
    week_count = sum(row["week_count"] for row in per_shop.values())
    low_stock, low_stock_count = _low_stock(shop_ids)
    return {
        "period": period,
        "day_total": day_total, "day_count": day_count,
        "day_average": day_total / day_count if day_count else ZERO,
        "week_total": week_total, "week_count": week_count,
        "per_shop": sorted(per_shop.values(), key=lambda row: (-row["week_total"], row["shop"].name)),
        "per_hour": per_hour,
        "per_weekday": list(per_weekday.values()),
        "per_method": [{"method": labels.get(row["method"], row["method"]), "day_total": row["day_total"] or ZERO,
                        "week_total": row["week_total"]} for row in methods],
        "top_products": list(top),
        "low_stock": low_stock, "low_stock_count": low_stock_count,
    }


def _low_stock(shop_ids: list[int] | None) -> tuple[list[StockLevel], int]:
    """Active products at or below their reorder level, the emptiest first, and how many there are."""
    levels = StockLevel.objects.filter(on_hand__lte=F("product__reorder_level"), product__is_active=True)
    if shop_ids is not None:
        levels = levels.filter(shop_id__in=shop_ids)
    rows = list(levels.select_related("product", "shop").order_by("on_hand", "product__name", "shop__name")
                [:LOW_STOCK_ROWS])
    return rows, (len(rows) if len(rows) < LOW_STOCK_ROWS else levels.count())


SALES_CSV_HEADER = ["receipt", "date", "time", "shop", "till", "cashier", "status", "total (KES)", "VAT (KES)",
                    "paid (KES)", "cash (KES)", "M-Pesa (KES)", "M-Pesa receipts", "customer phone"]


def sales_csv_rows(*, date_from: date, date_to: date, shop_ids: list[int] | None):
    """Every sale made from date_from to date_to (inclusive, local dates) as CSV rows, oldest first.

    A generator over a server-side cursor: a year of a chain's sales streams in constant memory.
    """
    start = timezone.make_aware(datetime.combine(date_from, time.min))
    end = timezone.make_aware(datetime.combine(date_to + timedelta(days=1), time.min))
    sales = Sale.objects.filter(created_at__gte=start, created_at__lt=end)
    if shop_ids is not None:
        sales = sales.filter(shop_id__in=shop_ids)
    rows = sales.order_by("created_at", "id").values_list(
        "id", "receipt_number", "created_at", "shop__code", "till__name", "cashier__username", "status", "total",
        "vat_total", "amount_paid", "customer_phone",
    )
    yield SALES_CSV_HEADER
    chunk = []
    for row in rows.iterator(chunk_size=CSV_CHUNK):
        chunk.append(row)
        if len(chunk) == CSV_CHUNK:
            yield from _with_payments(chunk)
            chunk = []
    yield from _with_payments(chunk)


def _with_payments(chunk: list[tuple]):
    """The chunk's rows with their cash and M-Pesa amounts: one query per chunk of sales."""
    paid = {}
    for sale_id, method, amount, reference in Payment.objects.filter(
            sale_id__in=[row[0] for row in chunk]).order_by("id").values_list("sale_id", "method", "amount",
                                                                             "reference"):
        cash, mpesa, codes = paid.get(sale_id, (ZERO, ZERO, []))
        if method == Payment.Method.CASH:
            cash += amount
        else:
            mpesa += amount
            codes = codes + [reference] if reference else codes
        paid[sale_id] = (cash, mpesa, codes)
    for sale_id, receipt, created, shop, till, cashier, status, total, vat, amount_paid, phone in chunk:
        cash, mpesa, codes = paid.get(sale_id, (ZERO, ZERO, []))
        local = timezone.localtime(created)
        yield [receipt, local.date().isoformat(), local.strftime("%H:%M:%S"), shop, till, cashier, status, total,
               vat, amount_paid, cash, mpesa, " ".join(codes), mask_phone(phone) if phone else ""]
