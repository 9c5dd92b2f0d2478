"""Sale workflows: create a sale, take payments, complete or cancel it."""

import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import Case, Count, F, OuterRef, Q, Subquery, Sum, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.module_loading import import_string

from comolor import sql
from inventory.models import Product, StockLevel
from inventory.services import sell_stock

from .models import CashMovement, ManagerAction, Payment, Sale, SaleLine, Shift, Shop, Staff, Till

logger = logging.getLogger(__name__)
CENT = Decimal("0.01")


class SaleError(Exception):
    """A sale request that cannot be carried out; the message is shown to the cashier."""


class PaymentNotStarted(SaleError):
    """The pending sale exists but its payment (an M-Pesa prompt) could not be started."""

    def __init__(self, message: str, *, sale: "Sale"):
        super().__init__(message)
        self.sale = sale


@dataclass(frozen=True)
class ItemRequest:
    """One line as the till asks for it: exactly one of barcode, sku or product_id."""

    quantity: int
    barcode: str = ""
    sku: str = ""
    product_id: int | None = None

    @property
    def label(self) -> str:
        return self.barcode or self.sku or f"product #{self.product_id}"


def vat_in(gross: Decimal, rate: Decimal) -> Decimal:
    """VAT contained in a VAT-inclusive amount: gross × rate / (100 + rate), to the cent."""
    return (gross * rate / (Decimal(100) + rate)).quantize(CENT, rounding=ROUND_HALF_UP)


def next_receipt_number(shop_id: int) -> str:
    """DEMO-0000123: per shop, sequential and gap-free (the shop row is locked until commit)."""
    # The counter update takes the shop row lock; concurrent sales in the shop queue behind it.
    Shop.objects.filter(pk=shop_id).update(last_receipt_seq=F("last_receipt_seq") + 1)
    code, seq = Shop.objects.filter(pk=shop_id).values_list("code", "last_receipt_seq").get()
    return f"{code}-{seq:0{11 - len(code)}d}"


def _find_products(shop: Shop, items: list[ItemRequest]) -> list[tuple[Product, int]]:
    """Resolve the till's item requests to products, merging repeats, with cashier-worded errors."""
    if not items:
        raise SaleError("The cart is empty. Scan or search for an item first.")
    barcodes = {i.barcode for i in items if i.barcode}
    skus = {i.sku for i in items if i.sku}
    ids = {i.product_id for i in items if i.product_id}
    found = Product.objects.filter(barcode__in=barcodes) | Product.objects.filter(sku__in=skus) | (
        Product.objects.filter(pk__in=ids)
    )
    by_barcode, by_sku, by_id = {}, {}, {}
    for product in found:
        by_barcode[product.barcode] = by_sku[product.sku] = by_id[product.pk] = product
    merged: dict[int, list] = {}
    for item in items:
        if item.quantity is None or item.quantity <= 0:
            raise SaleError(f"Quantity for {item.label} must be 1 or more.")
        product = by_barcode.get(item.barcode) or by_sku.get(item.sku) or by_id.get(item.product_id)
        if product is None:
            raise SaleError(f"No product with code {item.label}. Check the code or search by name.")
        if not product.is_active:
            raise SaleError(f"{product.name} is no longer sold (inactive). Ask a manager.")
        merged.setdefault(product.pk, [product, 0])[1] += item.quantity
    stock = dict(
        StockLevel.objects.filter(shop=shop, product_id__in=merged).values_list("product_id", "on_hand")
    )
    for product, quantity in merged.values():
        available = stock.get(product.pk)
        if available is None:
            raise SaleError(f"{product.name} is not stocked in {shop.name}.")
        if quantity > available:
            raise SaleError(
                f"Only {available} of {product.name} in stock; {quantity} requested. Reduce the quantity."
            )
    return [(product, quantity) for product, quantity in merged.values()]


def parse_items(raw_items: list[dict]) -> list[ItemRequest]:
    """The till's JSON items as ItemRequests: one code and a whole-number quantity per item."""
    if not raw_items:
        raise SaleError("The cart is empty. Scan or search for an item first.")
    items = []
    for number, raw in enumerate(raw_items, start=1):
        codes = {key: raw[key] for key in ("barcode", "sku", "product_id") if raw.get(key) not in (None, "")}
        if len(codes) != 1:
            raise SaleError(f"Item {number} needs exactly one code: a barcode, a SKU or a product id.")
        key, code = codes.popitem()
        # JSON true is an int in Python; a product id or quantity of "true" is a broken request.
        if key == "product_id" and (isinstance(code, bool) or not isinstance(code, int)):
            raise SaleError(f"Item {number}: the product id must be a whole number.")
        if key != "product_id":
            if not isinstance(code, str) or not code.strip() or not code.isprintable():
                raise SaleError(f"Item {number}: the {key} must be text, e.g. \"6161100000017\".")
            code = code.strip()
        quantity = raw.get("quantity")
        if isinstance(quantity, float) and quantity.is_integer():
            quantity = int(quantity)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            label = code if key != "product_id" else f"item {number}"
            raise SaleError(f"Quantity for {label} must be a whole number (got {quantity!r}).")
        items.append(ItemRequest(quantity=quantity, **{key: code}))
    return items


def create_sale(*, cashier, till: Till, items: list[ItemRequest], customer_phone: str = "") -> Sale:
    """A pending sale with its lines and totals, numbered and committed with the caller's work."""
    return _save_sale(cashier=cashier, till=till, lines=_price_lines(till, items), customer_phone=customer_phone)


def _price_lines(till: Till, items: list[ItemRequest]) -> list[SaleLine]:
    """The sale's lines, priced and checked against stock; nothing is written."""
    if not till.is_active:
        raise SaleError(f"Till {till.name} is closed. Choose another till.")
    products = _find_products(till.shop, items)
    lines = []
    for product, quantity in products:
        gross = (product.price * quantity).quantize(CENT, rounding=ROUND_HALF_UP)
        rate = product.tax_rate
        lines.append(
            SaleLine(
                product=product,
                name=product.name,
                quantity=quantity,
                unit_price=product.price,
                tax_band=product.tax_band,
                tax_rate=rate,
                line_total=gross,
                vat_amount=vat_in(gross, rate),
            )
        )
    return lines


def _save_sale(*, cashier, till: Till, lines: list[SaleLine], customer_phone: str) -> Sale:
    with transaction.atomic():
        # The shift row lock, before the shop's receipt counter: a sale and the shift's close never
        # interleave, so a closed shift takes no sale and its count covers every sale it has.
        shift = Shift.objects.select_for_update().filter(till_id=till.pk, status=Shift.Status.OPEN).first()
        if shift is None:
            raise SaleError(f"Open a shift on {till.name} first: enter the opening float.")
        sale = Sale.objects.create(
            receipt_number=next_receipt_number(till.shop_id),
            shop_id=till.shop_id,
            till=till,
            shift=shift,
            cashier=cashier,
            total=sum((line.line_total for line in lines), Decimal("0")),
            vat_total=sum((line.vat_amount for line in lines), Decimal("0")),
            customer_phone=customer_phone,
        )
        for line in lines:
            line.sale = sale
        SaleLine.objects.bulk_create(lines)
    return sale


def record_payment(
    *, sale_id: int | None = None, sale: Sale | None = None, method: str, amount: Decimal, user=None,
    tendered: Decimal | None = None, change_given: Decimal = Decimal("0"), reference: str = "",
) -> Payment:
    """Apply money to a pending sale and complete the sale once it is paid in full.

    Every refusal (SaleError, InsufficientStock) is raised before anything is written, so a caller
    may catch it and carry on in its own transaction (the M-Pesa ledger does). Pass `sale` when the
    caller already holds the sale row's lock (select_for_update in the same transaction): it is used
    as it is, not locked again.
    """
    with sql.within_transaction():
        if sale is None:
            # Sale row first: every payment and completion of this sale queues here.
            sale = Sale.objects.select_for_update().get(pk=sale_id)
        if sale.status != Sale.Status.PENDING:
            raise SaleError(f"Sale {sale.receipt_number} is {sale.status}; it takes no more payments.")
        if amount <= 0:
            raise SaleError("A payment must be more than zero.")
        paid = sale.amount_paid + amount
        if paid >= sale.total:
            # Completion first: the stock it takes is the last refusal, before anything is written.
            _complete_locked_sale(sale, user_id=user.pk if user else None, amount_paid=paid)
        else:
            sql.execute("UPDATE pos_sale SET amount_paid = %s WHERE id = %s", [paid, sale.pk])
            sale.amount_paid = paid
        return sql.insert(Payment(
            sale=sale, method=method, amount=amount, tendered=tendered, change_given=change_given,
            reference=reference, received_by=user,
        ))


def take_cash(*, sale_id: int, tendered: Decimal, user=None) -> Payment:
    """Cash towards a pending sale: settles up to the balance and records the change due."""
    with transaction.atomic():
        sale = Sale.objects.select_for_update().get(pk=sale_id)
        if tendered is None or tendered <= 0:
            raise SaleError("Enter the cash the customer handed over.")
        applied = min(tendered, sale.balance_due)
        if applied <= 0:
            raise SaleError(f"Sale {sale.receipt_number} is already paid.")
        return record_payment(
            sale=sale, method=Payment.Method.CASH, amount=applied, tendered=tendered,
            change_given=tendered - applied, user=user,
        )


def sell_for_cash(*, cashier, till: Till, items: list[ItemRequest], tendered: Decimal,
                  customer_phone: str = "") -> tuple[Sale, Payment]:
    """The everyday cash sale: created, paid and completed in one transaction, or nothing at all."""
    with transaction.atomic():
        sale = create_sale(cashier=cashier, till=till, items=items, customer_phone=customer_phone)
        if tendered is None or tendered < sale.total:
            raise SaleError(
                f"Cash tendered (KES {tendered or 0:,.2f}) is less than the total (KES {sale.total:,.2f})."
            )
        payment = take_cash(sale_id=sale.pk, tendered=tendered, user=cashier)
        sale.refresh_from_db()
    return sale, payment


def start_sale(*, cashier, till: Till, items: list[ItemRequest], method: str,
               customer_phone: str = "") -> tuple[Sale, dict]:
    """A pending sale, committed, then handed to the app that takes `method` (POS_PAYMENT_STARTERS).

    First the app's check (POS_PAYMENT_CHECKS, called with shop, phone and the sale's total) may
    refuse with a SaleError: then nothing is written. Call it outside any transaction: the starter
    calls Daraja and its callback must find the sale. The starter's dict (mpesa_checkout_id,
    message…) is returned for the till; its SaleError comes back as PaymentNotStarted carrying the
    sale, which stays pending for a retry, cash or cancel.
    """
    path = settings.POS_PAYMENT_STARTERS.get(method)
    if path is None:
        raise SaleError(f"Unknown payment method \"{method}\". Choose cash or M-Pesa.")
    if method == Payment.Method.MPESA and not customer_phone:
        raise SaleError("Enter the customer's M-Pesa phone number.")
    starter = import_string(path)
    lines = _price_lines(till, items)
    check = settings.POS_PAYMENT_CHECKS.get(method)
    if check is not None:
        import_string(check)(
            shop=till.shop, phone=customer_phone, amount=sum((line.line_total for line in lines), Decimal("0")),
        )
    sale = _save_sale(cashier=cashier, till=till, lines=lines, customer_phone=customer_phone)
    try:
        return sale, starter(sale=sale, phone=customer_phone, user=cashier)
    except SaleError as error:
        raise PaymentNotStarted(str(error), sale=sale) from error


def find_cashier_till(staff: Staff) -> Till:
    """The till a staff member sells on: their default till, else the first open till of the shop."""
    till = staff.default_till
    if till is not None and till.is_active and till.shop_id == staff.shop_id:
        return till
    till = Till.objects.filter(shop_id=staff.shop_id, is_active=True).order_by("name", "pk").first()
    if till is None:
        raise SaleError(f"{staff.shop.name} has no open till. Ask a manager to add one in the admin.")
    return till


def search_products(*, shop_id: int, query: str, limit: int = 20) -> list[dict]:
    """Active products for the till search, with the shop's stock, in one query.

    An exact barcode (a scan), then an exact SKU, come first; then name, SKU and barcode matches
    by name. Products the shop never stocked show stock 0.
    """
    # No name or code holds what PostgreSQL text refuses (NUL, lone surrogates): searched without it.
    query = query.encode("utf-8", "ignore").decode().replace("\x00", "").strip()
    if not query:
        return []
    stock = StockLevel.objects.filter(shop_id=shop_id, product_id=OuterRef("pk")).values("on_hand")[:1]
    active = Product.objects.filter(is_active=True).annotate(stock=Coalesce(Subquery(stock), 0))
    # A scan is an exact barcode or SKU: answer it from the unique indexes alone.
    products = list(
        active.filter(Q(barcode=query) | Q(sku=query))
        .annotate(rank=Case(When(barcode=query, then=0), default=1))
        .order_by("rank")[:2]
    )
    if not products:
        products = (
            active.filter(Q(sku__iexact=query) | Q(name__icontains=query) | Q(sku__icontains=query)
                          | Q(barcode__startswith=query))
            .annotate(rank=Case(When(sku__iexact=query, then=0), default=1))
            .order_by("rank", "name", "pk")[:limit]
        )
    return [
        {"id": p.pk, "name": p.name, "sku": p.sku, "barcode": p.barcode or "", "price": f"{p.price:.2f}",
         "stock": p.stock, "unit": p.unit, "tax_band": p.tax_band, "tax_rate": f"{p.tax_rate:.2f}"}
        for p in products
    ]


def complete_sale(*, sale_id: int, user=None) -> bool:
    """Complete a fully paid sale and take its lines out of stock, exactly once.

    Idempotent: a completed sale is left alone and False is returned. Raises SaleError for
    an unpaid or cancelled sale and InsufficientStock when the shop ran out meanwhile.
    """
    with transaction.atomic():
        sale = Sale.objects.select_for_update().get(pk=sale_id)
        return _complete_locked_sale(sale, user_id=user.pk if user else None)


def _complete_locked_sale(sale: Sale, *, user_id: int | None, amount_paid: Decimal | None = None) -> bool:
    """complete_sale on a sale row the caller has locked, inside the caller's transaction.

    amount_paid: the sale's new total paid, saved with the completion (one UPDATE of the sale row).
    Its refusals come before its first write (see record_payment).
    """
    if sale.status == Sale.Status.COMPLETED:
        return False
    if sale.status == Sale.Status.CANCELLED:
        raise SaleError(f"Sale {sale.receipt_number} was cancelled; it cannot be completed.")
    paid = sale.amount_paid if amount_paid is None else amount_paid
    if paid < sale.total:
        raise SaleError(f"Sale {sale.receipt_number} still has KES {sale.total - paid:,.2f} to pay.")
    sell_stock(
        shop_id=sale.shop_id,
        sale_id=sale.pk,
        lines=sql.fetch_all("SELECT product_id, quantity FROM pos_saleline WHERE sale_id = %s", [sale.pk]),
        # Ids only: loading the cashier's user row would cost a query per sale.
        user_id=user_id or sale.cashier_id,
        reference=sale.receipt_number,
    )
    now = timezone.now()
    sql.execute("UPDATE pos_sale SET status = %s, completed_at = %s, amount_paid = %s WHERE id = %s",
                [Sale.Status.COMPLETED, sql.db_time(now), paid, sale.pk])
    sale.status, sale.completed_at, sale.amount_paid = Sale.Status.COMPLETED, now, paid
    transaction.on_commit(lambda: run_sale_completed_hooks(sale.pk))
    return True


def cancel_sale(*, sale_id: int, user=None, reason: str = "") -> Sale:
    """Cancel a pending sale. Money already taken stays on record for a manager to refund."""
    with transaction.atomic():
        sale = Sale.objects.select_for_update().get(pk=sale_id)
        if sale.status == Sale.Status.CANCELLED:
            return sale
        if sale.status == Sale.Status.COMPLETED:
            raise SaleError(f"Sale {sale.receipt_number} is completed; make a return instead.")
        sale.status = Sale.Status.CANCELLED
        sale.cancelled_at = timezone.now()
        sale.cancel_reason = reason
        sale.save(update_fields=["status", "cancelled_at", "cancel_reason"])
        return sale


def run_sale_completed_hooks(sale_id: int) -> None:
    """After-commit side effects of a completed sale (printing); one failing never stops another."""
    for path in settings.POS_SALE_COMPLETED_HOOKS:
        try:
            import_string(path)(sale_id)
        except Exception:
            logger.exception("sale-completed hook %s failed for sale %s", path, sale_id)


# --- Shifts -----------------------------------------------------------------------------------

class ShiftError(SaleError):
    """A shift request that cannot be carried out; the message says what to do instead."""


# The largest amount a money column (12 digits, 2 of them cents) holds: a barcode scanned into an
# amount box is far above it.
MAX_SHILLINGS = Decimal("9999999999.99")
_CURRENCY_PREFIX = re.compile(r"^\s*(?:KES|KSH|SH)\.?\s*", re.IGNORECASE)


def parse_shillings(value, *, what: str) -> Decimal:
    """An amount of cash as the cashier typed it ("2,000", "KES 1500.50") or a Decimal: 0 or more, to the cent."""
    name = what[0].upper() + what[1:]
    if value is None or isinstance(value, bool) or not str(value).strip():
        raise ShiftError(f"Enter {what} in shillings, e.g. 2000 or 1500.50.")
    text = _CURRENCY_PREFIX.sub("", str(value)).replace(",", "").replace(" ", "")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ShiftError(f"{name} must be an amount in shillings, e.g. 2000 or 1500.50 (not \"{value}\").") from None
    if not amount.is_finite():
        raise ShiftError(f"{name} must be an amount in shillings, e.g. 2000 or 1500.50 (not \"{value}\").")
    if amount < 0:
        raise ShiftError(f"{name} cannot be negative.")
    if amount != amount.quantize(CENT):
        raise ShiftError(f"{name} can have at most 2 decimal places (cents).")
    if amount > MAX_SHILLINGS:
        raise ShiftError(f"{name} is far too large (\"{value}\"): check the amount. "
                         "Was a barcode scanned into the box?")
    return amount.quantize(CENT)


def _person(user) -> str:
    return user.get_full_name() or user.get_username()


def _clock(moment) -> str:
    """08:02 today, 27/11 08:02 another day: how a cashier says when a shift was opened."""
    local = timezone.localtime(moment)
    return f"{local:%H:%M}" if local.date() == timezone.localdate() else f"{local:%d/%m %H:%M}"


def _check_staff_of(user, shop_id: int) -> None:
    if user.is_superuser or Staff.objects.filter(user=user, shop_id=shop_id).exists():
        return
    raise ShiftError("Only staff of this shop work shifts on its tills. Ask a manager to add you under Staff.")


def find_open_shift(*, till_id: int) -> Shift | None:
    """The till's open shift (at most one: the database refuses a second)."""
    return (Shift.objects.select_related("till", "opened_by")
            .filter(till_id=till_id, status=Shift.Status.OPEN).first())


def open_shift(*, till: Till, user, opening_float) -> Shift:
    """Start a shift on a till with the cash put in the drawer. One open shift per till: a second
    open, even at the same instant from another screen, is refused and names the open one."""
    amount = parse_shillings(opening_float, what="the opening float")
    if not till.is_active:
        raise ShiftError(f"{till.name} is closed (inactive). Choose another till or ask a manager.")
    _check_staff_of(user, till.shop_id)
    try:
        with transaction.atomic():
            return Shift.objects.create(shop_id=till.shop_id, till=till, opened_by=user, opening_float=amount)
    except IntegrityError:
        # Only the one-open-shift-per-till index can refuse a valid row: someone opened it first.
        current = find_open_shift(till_id=till.pk)
        if current is None:
            raise
        raise ShiftError(
            f"{till.name} already has an open shift (#{current.pk}), opened by {_person(current.opened_by)} at "
            f"{_clock(current.opened_at)} with a float of KES {current.opening_float:,.2f}. Sell on it, or close it "
            "first."
        ) from None


def record_cash_movement(*, shift_id: int, kind: str, amount, reason: str, user) -> CashMovement:
    """Cash put into the drawer (pay-in) or taken out (pay-out) other than by a sale, with its reason."""
    if kind not in CashMovement.Kind.values:
        raise ShiftError("Choose pay-in (cash put into the drawer) or pay-out (cash taken out of it).")
    label = CashMovement.Kind(kind).label
    value = parse_shillings(amount, what=f"the {label} amount")
    if value == 0:
        raise ShiftError(f"A {label} must be more than zero.")
    reason = " ".join((reason or "").split())
    if not reason:
        example = "change from the safe" if kind == CashMovement.Kind.PAY_IN else "paid the bread delivery"
        raise ShiftError(f"Say what the {label} was for, e.g. \"{example}\": the manager sees it in the report.")
    if len(reason) > 200:
        raise ShiftError(f"Keep the reason for the {label} under 200 characters.")
    with transaction.atomic():
        # The close takes this lock too: a movement lands before the count or is refused after it.
        shift = Shift.objects.select_for_update().get(pk=shift_id)
        _check_staff_of(user, shift.shop_id)
        if shift.status != Shift.Status.OPEN:
            raise ShiftError(f"Shift #{shift.pk} is closed: it takes no more pay-ins or pay-outs. Open a new shift.")
        return CashMovement.objects.create(shift=shift, kind=kind, amount=value, reason=reason, created_by=user)


def why_shift_cannot_close(*, shift: Shift) -> str:
    """Why the shift cannot be closed yet, in words; "" when it can.

    A sale still waiting for payment would leave money outside the count: a late M-Pesa payment or
    the rest of a split cash payment lands in a shift already counted. It is finished or cancelled
    at the till first.
    """
    pending = list(Sale.objects.filter(shift=shift, status=Sale.Status.PENDING)
                   .order_by("created_at", "pk").only("receipt_number", "total", "amount_paid")[:2])
    if not pending:
        return ""
    sale = pending[0]
    more = " Another sale is waiting too; finish or cancel each one." if len(pending) > 1 else ""
    return (f"Sale {sale.receipt_number} (KES {sale.balance_due:,.2f} to pay) is still waiting for payment on "
            f"{shift.till.name}: take the payment or cancel the sale on the till, then close the shift.{more}")


def close_shift(*, shift_id: int, counted_cash, user, note: str = "") -> Shift:
    """End a shift with a blind count: the cashier enters the cash in the drawer without being
    shown what it should be; the expected figure is worked out and kept with the count here."""
    counted = parse_shillings(counted_cash, what="the cash counted")
    note = (note or "").strip()
    if len(note) > 500:
        raise ShiftError("Keep the closing note under 500 characters.")
    with transaction.atomic():
        # Sales and pay-ins/outs take this lock first too: nothing lands in the shift during the count.
        shift = Shift.objects.select_for_update(of=("self",)).select_related("till").get(pk=shift_id)
        _check_staff_of(user, shift.shop_id)
        if shift.status == Shift.Status.CLOSED:
            raise ShiftError(f"Shift #{shift.pk} on {shift.till.name} was already closed at "
                             f"{_clock(shift.closed_at)}. Open a new shift to sell.")
        refusal = why_shift_cannot_close(shift=shift)
        if refusal:
            raise ShiftError(refusal)
        lines = _drawer_lines(shift, _payment_totals(shift.pk), _movement_totals(shift.pk))
        shift.expected_cash = sum((amount for _, amount in lines), Decimal("0"))
        shift.counted_cash = counted
        shift.status, shift.closed_by, shift.closed_at, shift.close_note = (
            Shift.Status.CLOSED, user, timezone.now(), note
        )
        shift.save(update_fields=["status", "closed_by", "closed_at", "counted_cash", "expected_cash", "close_note"])
    return shift


def _payment_totals(shift_id: int) -> dict[str, dict]:
    """Per payment method: how many payments, what the customers handed over, the change given back."""
    rows = (Payment.objects.filter(sale__shift_id=shift_id).values("method")
            .annotate(count=Count("pk"), received=Sum(Coalesce("tendered", "amount")), change=Sum("change_given")))
    return {row["method"]: row for row in rows}


def _movement_totals(shift_id: int) -> dict[str, Decimal]:
    rows = CashMovement.objects.filter(shift_id=shift_id).values("kind").annotate(total=Sum("amount"))
    totals = {row["kind"]: row["total"] for row in rows}
    return {kind: totals.get(kind, Decimal("0")) for kind in CashMovement.Kind.values}


def _drawer_lines(shift: Shift, payments: dict[str, dict], movements: dict[str, Decimal], *,
                  blind: bool = False) -> list[tuple[str, Decimal]]:
    """What went into and out of the drawer; they add up to the cash expected in it. `blind`: only
    what the cashier entered (float, pay-ins, pay-outs), not the sales that make up the rest.

    A cash payment keeps what the customer handed over (`tendered`) and the change given back;
    its `amount` is what it settled, so cash received − change given = the cash sales. Change on
    other methods (the cents above an M-Pesa payment rounded up to whole shillings) is given in
    cash, out of this drawer too.
    """
    zero = Decimal("0")
    cash = payments.get(Payment.Method.CASH, {})
    lines = [("Opening float", shift.opening_float)]
    if not blind:
        lines += [("Cash received from customers", cash.get("received") or zero),
                  ("Change given", -(cash.get("change") or zero))]
        for method, row in payments.items():
            if method != Payment.Method.CASH and row["change"]:
                lines.append((f"Change given on {Payment.Method(method).label} payments", -row["change"]))
    lines += [("Pay-ins", movements[CashMovement.Kind.PAY_IN]), ("Pay-outs", -movements[CashMovement.Kind.PAY_OUT])]
    return lines


def _is_cashier(user) -> bool:
    if user.is_superuser:
        return False
    return Staff.objects.filter(user=user, role=Staff.Role.CASHIER).exists()


def shift_report(*, shift_id: int, user=None) -> dict:
    """The X report of an open shift or the Z report of a closed one.

    Per payment method ("methods"): what the shift's records expect, what was counted (cash) or
    received (the ledger of the app that takes the method, from POS_SHIFT_REPORT_SECTIONS), and
    the difference, received − expected: negative is short, positive is over. "attention" lists what
    a manager has to look at, "summary" says it in sentences, and "balanced" is a closed shift with
    nothing to look at. With `user` a cashier and the shift still open, the figures that
    would give away the drawer's expected cash are left out (None): the count at close is blind.
    """
    shift = Shift.objects.select_related("shop", "till", "opened_by", "closed_by").get(pk=shift_id)
    closed = shift.status == Shift.Status.CLOSED
    blind = not closed and user is not None and _is_cashier(user)
    until = shift.closed_at or timezone.now()
    payments = _payment_totals(shift.pk)
    movements = list(shift.cash_movements.select_related("created_by"))
    lines = _drawer_lines(shift, payments, _movement_totals(shift.pk), blind=blind)
    expected = shift.expected_cash if closed else (None if blind else sum((a for _, a in lines), Decimal("0")))
    methods = [{
        "method": Payment.Method.CASH, "label": "Cash",
        "expected_label": "Expected in the drawer", "expected": expected,
        "received_label": "Counted", "received": shift.counted_cash, "difference": shift.cash_difference,
        "lines": [{"label": label, "amount": amount} for label, amount in lines], "attention": [],
    }]
    for path in settings.POS_SHIFT_REPORT_SECTIONS:
        methods.append(import_string(path)(shift=shift, until=until))
    covered = {row["method"] for row in methods}
    for method, row in payments.items():
        if method not in covered:
            label = Payment.Method(method).label
            methods.append({
                "method": method, "label": label, "expected_label": f"Sales paid by {label}",
                "expected": row["received"], "received_label": "Received", "received": None, "difference": None,
                "lines": [], "attention": [],
            })

    summary = _report_summary(methods)
    sales = {row["status"]: row for row in Sale.objects.filter(shift=shift).values("status")
             .annotate(count=Count("pk"), total=Sum("total"), vat=Sum("vat_total"))}
    completed = sales.get(Sale.Status.COMPLETED, {})
    cancelled = sales.get(Sale.Status.CANCELLED, {})
    return {
        "kind": "Z" if closed else "X",
        "title": "Z report" if closed else "X report",
        "blind": blind,
        "shift_id": shift.pk,
        "shop": shift.shop.name,
        "till": shift.till.name,
        "till_id": shift.till_id,
        "status": shift.status,
        "opened_by": _person(shift.opened_by),
        "opened_at": shift.opened_at,
        "closed_by": _person(shift.closed_by) if shift.closed_by else "",
        "closed_at": shift.closed_at,
        "close_note": shift.close_note,
        "opening_float": shift.opening_float,
        "generated_at": timezone.now(),
        "sales": {
            "completed": completed.get("count", 0),
            "completed_total": None if blind else completed.get("total") or Decimal("0"),
            "vat_total": None if blind else completed.get("vat") or Decimal("0"),
            "cancelled": cancelled.get("count", 0),
            "pending": sales.get(Sale.Status.PENDING, {}).get("count", 0),
        },
        "methods": methods,
        "movements": [
            {"kind": m.kind, "label": m.get_kind_display(), "amount": m.amount, "reason": m.reason,
             "by": _person(m.created_by), "at": m.created_at}
            for m in movements
        ],
        "summary": summary,
        "balanced": closed and not summary,
    }


def _report_summary(methods: list[dict]) -> list[str]:
    """One sentence per thing a manager must look at; empty when every method balances."""
    sentences = []
    for row in methods:
        difference = row["difference"]
        if difference:
            what = "short" if difference < 0 else "over"
            # A section may say how much of it a manager has resolved since (refunded, written off).
            since = row.get("resolved")
            settled = f" (KES {since:,.2f} of it since resolved by a manager)" if since else ""
            sentences.append(f"{row['label']} is KES {abs(difference):,.2f} {what}{settled}.")
        for item in row["attention"]:
            sentences.append(item["summary"])
    return sentences


# --- Staff and roles --------------------------------------------------------------------------

ROLE_GROUPS = {Staff.Role.CASHIER: "Cashier", Staff.Role.MANAGER: "Manager", Staff.Role.OWNER: "Owner"}
_TILL_PERMISSIONS = [
    "inventory.view_product", "inventory.view_stocklevel", "pos.view_shop", "pos.view_till",
    "pos.add_sale", "pos.view_sale", "pos.view_saleline", "pos.add_payment", "pos.view_payment",
    "pos.add_shift", "pos.change_shift", "pos.view_shift", "pos.add_cashmovement", "pos.view_cashmovement",
]
# Model permissions of each role's group. Rows are scoped by shop on top of these (views, admin):
# a manager runs one shop's back office, an owner the whole chain. Only owners manage logins,
# so a manager cannot make anyone (themselves included) an owner or a superuser.
ROLE_PERMISSIONS = {
    Staff.Role.CASHIER: _TILL_PERMISSIONS,
    Staff.Role.MANAGER: _TILL_PERMISSIONS + [
        "pos.change_shop", "pos.add_till", "pos.change_till", "pos.view_staff", "pos.view_manageraction",
        "inventory.add_product", "inventory.change_product",
        "inventory.view_stockmovement", "inventory.add_stockmovement",
    ],
    Staff.Role.OWNER: ["auth.view_user", "auth.add_user", "auth.change_user", "auth.view_group"],
}
# Whole apps by action: managers see the M-Pesa and receipt records, owners may do everything.
ROLE_APP_PERMISSIONS = {
    Staff.Role.CASHIER: {},
    Staff.Role.MANAGER: {"mpesa": ["view"], "receipts": ["view"]},
    Staff.Role.OWNER: {app: ["add", "change", "delete", "view"] for app in ("pos", "inventory", "mpesa", "receipts")},
}


def _role_permissions(role: str) -> list[Permission]:
    named = Q(pk__in=[])
    for dotted in ROLE_PERMISSIONS[role]:
        app_label, codename = dotted.split(".")
        named |= Q(content_type__app_label=app_label, codename=codename)
    found = list(Permission.objects.filter(named).select_related("content_type"))
    if len(found) != len(set(ROLE_PERMISSIONS[role])):
        missing = set(ROLE_PERMISSIONS[role]) - {f"{p.content_type.app_label}.{p.codename}" for p in found}
        raise ImproperlyConfigured(f"Permissions {sorted(missing)} do not exist; run manage.py migrate.")
    for app_label, actions in ROLE_APP_PERMISSIONS[role].items():
        found += Permission.objects.filter(
            content_type__app_label=app_label, codename__regex=rf"^({'|'.join(actions)})_"
        )
    return found


def ensure_role_groups() -> dict[str, Group]:
    """Create or refresh the Cashier, Manager and Owner groups with their permissions."""
    groups = {}
    with transaction.atomic():
        for role, name in ROLE_GROUPS.items():
            groups[role], _ = Group.objects.get_or_create(name=name)
            groups[role].permissions.set(_role_permissions(role))
    return groups


def add_staff(user, shop: Shop, role: str, *, default_till: Till | None = None) -> Staff:
    """Make a login staff of a shop with a role (or change either): its group and admin access.

    Cashiers work only at the till (is_staff False); managers and owners use the admin too.
    Running it again with the same values changes nothing.
    """
    if role not in ROLE_GROUPS:
        raise ValueError(f"Unknown role {role!r}: use cashier, manager or owner.")
    if default_till is not None and default_till.shop_id != shop.pk:
        raise ValueError(f"Till {default_till} is not in {shop}.")
    with transaction.atomic():
        groups = ensure_role_groups()
        staff, created = Staff.objects.get_or_create(
            user=user, defaults={"shop": shop, "role": role, "default_till": default_till}
        )
        if not created:
            staff.shop, staff.role = shop, role
            if default_till is not None:
                staff.default_till = default_till
            elif staff.default_till_id and staff.default_till.shop_id != shop.pk:
                staff.default_till = None
            staff.save(update_fields=["shop", "role", "default_till"])
        user.groups.remove(*[group for r, group in groups.items() if r != role])
        user.groups.add(groups[role])
        is_staff = role != Staff.Role.CASHIER or user.is_superuser
        if user.is_staff != is_staff:
            user.is_staff = is_staff
            user.save(update_fields=["is_staff"])
    return staff


# --- Manager actions --------------------------------------------------------------------------

def check_may_manage(user, shop_id: int | None) -> None:
    """Managers act on their own shop only; owners and superusers on every shop, and alone on what
    belongs to no shop yet (a payment to an unknown account, an orphan callback)."""
    if user.is_superuser:
        return
    staff = Staff.objects.filter(user=user).only("shop_id", "role").first()
    if staff is not None and staff.role == Staff.Role.OWNER:
        return
    if staff is None or staff.role != Staff.Role.MANAGER:
        raise SaleError("Only a manager or an owner can do this. Ask one of them.")
    if shop_id != staff.shop_id:
        raise SaleError("That belongs to another shop (or to none yet): only an owner can act on it.")


def required_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise SaleError("Say why: every manager action is recorded with its reason, "
                        "e.g. \"customer paid to the till, cashier forgot to claim\".")
    return reason


def record_manager_action(*, user, shop_id: int | None, action: str, target: str, reason: str,
                          outcome: str = "") -> ManagerAction:
    """The audit row of a manager's correction: who, when, on what, why and what came of it."""
    return ManagerAction.objects.create(
        user=user, shop_id=shop_id, action=action, target=target[:120], reason=required_reason(reason),
        outcome=outcome,
    )


def stale_sales():
    """Pending sales older than POS_STALE_SALE_MINUTES: the till gave up on them, nobody paid."""
    return Sale.objects.filter(
        status=Sale.Status.PENDING,
        created_at__lt=timezone.now() - timedelta(minutes=settings.POS_STALE_SALE_MINUTES),
    )


def cancel_stale_sale(*, sale_id: int, user, reason: str) -> Sale:
    """A manager cancels a sale left pending at a till; refused while it may still be paid or
    when money is already on it (that money needs the sale completed, not forgotten)."""
    reason = required_reason(reason)
    with transaction.atomic():
        sale = Sale.objects.select_for_update().get(pk=sale_id)
        check_may_manage(user, sale.shop_id)
        if sale.status != Sale.Status.PENDING:
            raise SaleError(f"Sale {sale.receipt_number} is {sale.status}; only a pending sale can be cancelled.")
        age = timezone.now() - sale.created_at
        if age < timedelta(minutes=settings.POS_STALE_SALE_MINUTES):
            raise SaleError(
                f"Sale {sale.receipt_number} was started {int(age.total_seconds() // 60)} min ago; the cashier may "
                f"still be taking payment. It can be cancelled here after {settings.POS_STALE_SALE_MINUTES} min, "
                "or at the till now."
            )
        if sale.amount_paid > 0:
            raise SaleError(
                f"KES {sale.amount_paid:,.2f} is already paid on sale {sale.receipt_number}, so it is not "
                f"abandoned: take the KES {sale.balance_due:,.2f} still due at the till to complete it."
            )
        cancel_sale(sale_id=sale.pk, user=user, reason=f"Cancelled by a manager: {reason}"[:200])
        sale.refresh_from_db()
        record_manager_action(user=user, shop_id=sale.shop_id, action=ManagerAction.Action.CANCEL_SALE,
                              target=f"sale {sale.receipt_number}", reason=reason,
                              outcome=f"Cancelled; nothing had been paid (total KES {sale.total:,.2f}).")
        return sale


# --- Login throttling ---------------------------------------------------------------------------

def client_ip(remote_addr: str, forwarded_for: str) -> str | None:
    """The address that reached our first proxy (or us), or None when a trusted hop is missing.

    Each of our MPESA_TRUSTED_PROXY_COUNT proxies appends the address it saw to X-Forwarded-For, so
    the caller is that many entries from the right; anything further left was written by the caller
    and proves nothing. (The log-in throttle and the M-Pesa callback allowlist both read it so.)
    """
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    chain = hops + [remote_addr or ""]
    trusted = settings.MPESA_TRUSTED_PROXY_COUNT
    if trusted >= len(chain):
        return None
    try:
        address = ipaddress.ip_address(chain[-1 - trusted])
    except ValueError:
        return None
    # A dual-stack listener sees an IPv4 caller as ::ffff:a.b.c.d; the allowlist is in IPv4.
    return str(getattr(address, "ipv4_mapped", None) or address)


def _login_key(username: str, ip: str) -> str:
    return "login-failures:" + hashlib.sha256(f"{username.strip().lower()}|{ip}".encode()).hexdigest()


def login_refusal(*, username: str, ip: str) -> str:
    """Why this username may not try to log in from this address now ("" when it may)."""
    if (cache.get(_login_key(username, ip)) or 0) < settings.LOGIN_MAX_FAILURES:
        return ""
    return (f"Too many failed log-ins for {username} from this device. Wait {settings.LOGIN_LOCKOUT_MINUTES} "
            "minutes and try again, or ask the owner to check your username and password.")


def note_login_failure(*, username: str, ip: str) -> None:
    """Count a failed log-in; at the limit the lock-out runs its full time from this failure."""
    key, timeout = _login_key(username, ip), settings.LOGIN_LOCKOUT_MINUTES * 60
    cache.add(key, 0, timeout)
    try:
        failures = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, failures := 1, timeout)
    if failures >= settings.LOGIN_MAX_FAILURES:
        cache.touch(key, timeout)
        logger.warning("log-in locked for %s from %s after %s failures", username, ip, failures)


def clear_login_failures(*, username: str, ip: str) -> None:
    cache.delete(_login_key(username, ip))
