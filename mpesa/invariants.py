"""The books, checked: what must hold after any storm, fault or hostile input (reliability.md §5,
"nothing lost, no double count"). Read-only; every suite calls `check_books` when it is done, and
so can an operator (`manage.py check_books`).

Each check is a few set-based queries (a storm leaves tens of thousands of rows) and reports what
it finds as sentences that name the rows, so a failure says where to look.
"""

from collections import defaultdict
from decimal import Decimal

from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from inventory.models import StockLevel, StockMovement
from inventory.services import find_stock_discrepancies
from pos.models import Payment, Sale, SaleLine

from .models import CallbackLog, MpesaTransaction, StkRequest

# Sentences per kind of problem; a storm gone wrong would otherwise print thousands of lines.
MAX_EXAMPLES = 20
# Ledger rows that exist because Safaricom posted something to us.
FROM_CALLBACKS = (
    MpesaTransaction.Source.STK_CALLBACK, MpesaTransaction.Source.C2B, MpesaTransaction.Source.TRANSACTION_STATUS,
)
ZERO = Value(Decimal("0"))


def check_books(*, shop_id: int | None = None) -> list[str]:
    """Every broken invariant, in words; empty when the books are right (for one shop, or all)."""
    problems = []
    for check in (_ledger_rows_keep_their_callbacks, _each_payment_is_one_ledger_row, _ledger_rows_are_settled,
                  _ledger_rows_and_payments_pair_up, _paid_prompts_are_in_the_ledger, _sales_are_paid_as_recorded,
                  _completed_sales_moved_stock_once, _stock_matches_its_ledger, _sales_end_one_way):
        problems += check(shop_id)
    return problems


def _capped(sentences, what: str) -> list[str]:
    sentences = list(sentences)
    if len(sentences) <= MAX_EXAMPLES:
        return sentences
    return sentences[:MAX_EXAMPLES] + [f"…and {len(sentences) - MAX_EXAMPLES} more {what} like these."]


def _ledger(shop_id):
    rows = MpesaTransaction.objects.all()
    return rows.filter(shop_id=shop_id) if shop_id else rows


def _sales(shop_id):
    sales = Sale.objects.all()
    return sales.filter(shop_id=shop_id) if shop_id else sales


def _row(tx) -> str:
    return f"M-Pesa ledger row #{tx.pk} ({tx.receipt_number or 'receipt not yet known'})"


def _ledger_rows_keep_their_callbacks(shop_id) -> list[str]:
    rows = _ledger(shop_id).filter(source__in=FROM_CALLBACKS)
    sentences = [
        f"{_row(tx)} came from a {tx.get_source_display()} but points to no raw callback row."
        for tx in rows.filter(callback__isnull=True).order_by("pk")
    ]
    sentences += [
        f"{_row(tx)} points to raw callback #{tx.callback_id}, which carries receipt "
        f"{tx.callback.trans_id or '(none)'} instead."
        for tx in rows.filter(callback__isnull=False, receipt_number__isnull=False)
        .exclude(callback__trans_id=F("receipt_number")).select_related("callback").order_by("pk")
    ]
    return _capped(sentences, "ledger rows")


def _each_payment_is_one_ledger_row(shop_id) -> list[str]:
    rows = _ledger(shop_id)
    sentences = [
        f"{_row(tx)} has no receipt number, yet it came from a {tx.get_source_display()}, which always "
        "names one (only a success found by STK Query may wait for its receipt)."
        for tx in rows.filter(Q(receipt_number__isnull=True) | Q(receipt_number=""))
        .exclude(source=MpesaTransaction.Source.STK_QUERY).order_by("pk")
    ]
    sentences += [
        f"M-Pesa receipt {dup['receipt_number']} is in the ledger {dup['n']} times: one payment counted "
        f"{dup['n']} times."
        for dup in rows.exclude(receipt_number__isnull=True).values("receipt_number")
        .annotate(n=Count("pk")).filter(n__gt=1).order_by("receipt_number")
    ]
    # A success found by STK Query waits for its receipt; if that receipt reached the ledger by
    # another road (the C2B confirmation, Pull), the same money now stands there twice.
    waiting = {
        tx.stk_request.checkout_request_id: tx
        for tx in rows.filter(receipt_number__isnull=True, stk_request__checkout_request_id__isnull=False)
        .select_related("stk_request")
    }
    named = defaultdict(set)
    for checkout_id, receipt in (
        CallbackLog.objects.filter(kind=CallbackLog.Kind.STK, checkout_request_id__in=list(waiting))
        .exclude(trans_id="").values_list("checkout_request_id", "trans_id")
    ):
        named[receipt].add(checkout_id)
    for other in MpesaTransaction.objects.filter(receipt_number__in=list(named)).order_by("pk"):
        for checkout_id in sorted(named[other.receipt_number]):
            tx = waiting[checkout_id]
            sentences.append(
                f"{_row(tx)} (found by STK Query for {checkout_id}) and {_row(other)} are the same payment: "
                f"the prompt's callback named receipt {other.receipt_number}, so it is counted twice."
            )
    return _capped(sentences, "receipts")


def _ledger_rows_are_settled(shop_id) -> list[str]:
    rows = _ledger(shop_id)
    final = [choice.value for choice in MpesaTransaction.Match]
    sentences = [
        f"{_row(tx)} is matched to a sale but was never applied to it (no payment recorded)."
        for tx in rows.filter(match_status=MpesaTransaction.Match.MATCHED, payment__isnull=True).order_by("pk")
    ]
    sentences += [
        f"{_row(tx)} is matched but names no sale."
        for tx in rows.filter(match_status=MpesaTransaction.Match.MATCHED, sale__isnull=True).order_by("pk")
    ]
    sentences += [
        f"{_row(tx)} is in an unknown state {tx.match_status!r}."
        for tx in rows.exclude(match_status__in=final).order_by("pk")
    ]
    return _capped(sentences, "ledger rows")


def _ledger_rows_and_payments_pair_up(shop_id) -> list[str]:
    payments = Payment.objects.filter(method=Payment.Method.MPESA).select_related("sale")
    if shop_id:
        payments = payments.filter(sale__shop_id=shop_id)
    sentences = [
        f"M-Pesa payment #{p.pk} of KES {p.amount:,.2f} on sale {p.sale.receipt_number} has no ledger row "
        "behind it: money counted that the ledger never received."
        for p in payments.filter(mpesa_transaction__isnull=True).order_by("pk")
    ]
    applied = _ledger(shop_id).filter(payment__isnull=False).select_related("payment__sale", "sale")
    for tx in applied.exclude(payment__sale_id=F("sale_id")).order_by("pk"):
        sentences.append(f"{_row(tx)} is for sale {tx.sale.receipt_number if tx.sale else '(none)'} but its "
                         f"payment #{tx.payment_id} went to sale {tx.payment.sale.receipt_number}.")
    for tx in applied.filter(payment__amount__gt=F("amount")).order_by("pk"):
        sentences.append(f"{_row(tx)} received KES {tx.amount:,.2f} but its payment #{tx.payment_id} counts "
                         f"KES {tx.payment.amount:,.2f}.")
    renamed = applied.filter(receipt_number__isnull=False).exclude(payment__reference=F("receipt_number"))
    for tx in renamed.order_by("pk"):
        sentences.append(f"{_row(tx)} is paid out as payment #{tx.payment_id} under another receipt "
                         f"{tx.payment.reference or '(none)'}.")
    return _capped(sentences, "payments")


def _paid_prompts_are_in_the_ledger(shop_id) -> list[str]:
    requests = StkRequest.objects.select_related("sale")
    if shop_id:
        requests = requests.filter(shop_id=shop_id)
    sentences = [
        f"STK request #{stk.pk} for sale {stk.sale.receipt_number} is paid but has no ledger row."
        for stk in requests.filter(status=StkRequest.Status.PAID, transaction__isnull=True).order_by("pk")
    ]
    sentences += [
        f"STK request #{stk.pk} for sale {stk.sale.receipt_number} has ledger row #{stk.transaction.pk} but "
        f"is {stk.get_status_display()!r}, not paid."
        for stk in requests.filter(transaction__isnull=False).exclude(status=StkRequest.Status.PAID)
        .select_related("transaction").order_by("pk")
    ]
    return _capped(sentences, "STK requests")


def _sales_are_paid_as_recorded(shop_id) -> list[str]:
    paid = Payment.objects.filter(sale=OuterRef("pk")).values("sale").annotate(total=Sum("amount")).values("total")
    sales = _sales(shop_id).annotate(payments_sum=Coalesce(Subquery(paid), ZERO))
    sentences = [
        f"Sale {sale.receipt_number} records KES {sale.amount_paid:,.2f} paid but its payments add up to "
        f"KES {sale.payments_sum:,.2f}."
        for sale in sales.exclude(payments_sum=F("amount_paid")).order_by("pk")
    ]
    sentences += [
        f"Sale {sale.receipt_number} is completed with KES {sale.amount_paid:,.2f} paid of its "
        f"KES {sale.total:,.2f} total."
        for sale in _sales(shop_id).filter(status=Sale.Status.COMPLETED, amount_paid__lt=F("total")).order_by("pk")
    ]
    return _capped(sentences, "sales")


def _completed_sales_moved_stock_once(shop_id) -> list[str]:
    moves = StockMovement.objects.filter(
        kind=StockMovement.Kind.SALE, sale_id=OuterRef("sale_id"), product_id=OuterRef("product_id")
    ).values("sale")
    lines = SaleLine.objects.filter(sale__status=Sale.Status.COMPLETED).annotate(
        moves=Coalesce(Subquery(moves.annotate(n=Count("pk")).values("n")), 0),
        moved=Coalesce(Subquery(moves.annotate(q=Sum("quantity")).values("q")), 0),
    ).select_related("sale")
    if shop_id:
        lines = lines.filter(sale__shop_id=shop_id)
    sentences = [
        f"Completed sale {line.sale.receipt_number} sold {line.quantity} × {line.name} but its stock moved "
        f"{line.moves} time(s) by {line.moved:+d}."
        for line in lines.exclude(moves=1, moved=-F("quantity")).order_by("sale_id", "pk")
    ]
    sale_moves = StockMovement.objects.filter(kind=StockMovement.Kind.SALE).select_related("sale", "product")
    if shop_id:
        sale_moves = sale_moves.filter(shop_id=shop_id)
    sentences += [
        f"Stock movement #{move.pk} ({move.quantity:+d} {move.product.sku}) is a sale movement for "
        + (f"sale {move.sale.receipt_number}, which is {move.sale.status}." if move.sale else "no sale.")
        for move in sale_moves.exclude(sale__status=Sale.Status.COMPLETED).order_by("pk")
    ]
    on_lines = SaleLine.objects.filter(sale_id=OuterRef("sale_id"), product_id=OuterRef("product_id"))
    sentences += [
        f"Stock movement #{move.pk} takes {move.product.sku} out for sale {move.sale.receipt_number}, which "
        "has no such line."
        for move in sale_moves.filter(sale__status=Sale.Status.COMPLETED).exclude(Exists(on_lines))
        .order_by("pk")
    ]
    return _capped(sentences, "stock movements")


def _stock_matches_its_ledger(shop_id) -> list[str]:
    wrong = [item for item in find_stock_discrepancies() if shop_id is None or item[0][0] == shop_id]
    names = {
        (level.shop_id, level.product_id): f"{level.product.sku} in {level.shop.code}"
        for level in StockLevel.objects.filter(
            product_id__in={product for (_, product), _, _ in wrong}).select_related("product", "shop")
    }
    sentences = [
        f"Stock of {names.get(key, f'product #{key[1]} in shop #{key[0]}')} is {on_hand} on hand but its ledger "
        f"adds up to {expected}."
        for key, on_hand, expected in wrong
    ]
    levels = StockLevel.objects.filter(on_hand__lt=0).select_related("product", "shop")
    if shop_id:
        levels = levels.filter(shop_id=shop_id)
    sentences += [f"Stock of {level.product.sku} in {level.shop.code} is below zero: {level.on_hand}."
                  for level in levels]
    return _capped(sentences, "stock levels")


def _sales_end_one_way(shop_id) -> list[str]:
    Status = Sale.Status
    wrong = (
        Q(completed_at__isnull=False, cancelled_at__isnull=False)
        | Q(status=Status.COMPLETED) & (Q(completed_at__isnull=True) | Q(cancelled_at__isnull=False))
        | Q(status=Status.CANCELLED) & (Q(cancelled_at__isnull=True) | Q(completed_at__isnull=False))
        | Q(status=Status.PENDING) & (Q(completed_at__isnull=False) | Q(cancelled_at__isnull=False))
    )
    return _capped([
        f"Sale {sale.receipt_number} is marked {sale.status} with completion time {_when(sale.completed_at)} "
        f"and cancellation time {_when(sale.cancelled_at)}: a sale ends one way, and its status says which."
        for sale in _sales(shop_id).filter(wrong).order_by("pk")
    ], "sales")


def _when(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "none"
