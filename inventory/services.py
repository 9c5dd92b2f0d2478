"""Stock workflows. On-hand quantities change only here, together with their ledger rows."""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from comolor import sql

from .models import Product, StockLevel, StockMovement

Kind = StockMovement.Kind


class StockError(Exception):
    """A stock change that cannot happen; the message is for a person."""


class InsufficientStock(StockError):
    def __init__(self, product: Product, requested: int, available: int):
        self.product, self.requested, self.available = product, requested, available
        super().__init__(
            f"Only {available} of {product.name} in stock; {requested} requested. "
            "Reduce the quantity or receive stock first."
        )


@dataclass(frozen=True)
class StockChange:
    product_id: int
    quantity: int  # signed


def move_stock(
    *,
    shop_id: int,
    changes: list[StockChange],
    kind: str,
    user=None,
    sale_id: int | None = None,
    reference: str = "",
    reason: str = "",
) -> list[StockMovement]:
    """Apply signed quantity changes to one shop's stock and write one ledger row for each.

    A decrease that would go below zero raises InsufficientStock before anything is written.
    """
    with transaction.atomic():
        return _move_stock(shop_id=shop_id, changes=changes, kind=kind, user_id=user.pk if user else None,
                           sale_id=sale_id, reference=reference, reason=reason)


def _move_stock(*, shop_id: int, changes: list[StockChange], kind: str, user_id: int | None,
                sale_id: int | None, reference: str, reason: str) -> list[StockMovement]:
    """move_stock's work inside the caller's transaction (the stock rows are locked until it ends).

    Every check comes before the first write, so an InsufficientStock leaves the caller's
    transaction clean: a caller may catch it and carry on without a savepoint (the M-Pesa ledger does).
    """
    if any(change.quantity == 0 for change in changes):
        raise StockError("A stock movement needs a quantity other than zero.")
    if len({change.product_id for change in changes}) != len(changes):
        raise StockError("Each product may appear once in a stock movement.")
    changes = sorted(changes, key=lambda c: c.product_id)
    product_ids = [c.product_id for c in changes]
    levels = _lock_stock_levels(shop_id, product_ids)
    for change in changes:
        on_hand = levels[change.product_id][1] if change.product_id in levels else 0
        if on_hand + change.quantity < 0:
            # The product row is read only here, to name it: a sale that goes through never needs it.
            raise InsufficientStock(Product.objects.get(pk=change.product_id), -change.quantity, on_hand)
    if len(levels) < len(product_ids):
        # Stock arriving for a product this shop never had.
        StockLevel.objects.bulk_create(
            [StockLevel(shop_id=shop_id, product_id=pid) for pid in product_ids if pid not in levels],
            ignore_conflicts=True,
        )
        levels = _lock_stock_levels(shop_id, product_ids)
    now = timezone.now()
    # Relative updates of rows locked and checked above; the stock_never_negative constraint still
    # stands behind them.
    sql.execute_many(
        "UPDATE inventory_stocklevel SET on_hand = on_hand + %s, updated_at = %s WHERE id = %s",
        [(c.quantity, sql.db_time(now), levels[c.product_id][0]) for c in changes],
    )
    return [sql.insert(
        StockMovement(
            shop_id=shop_id,
            product_id=change.product_id,
            quantity=change.quantity,
            balance_after=levels[change.product_id][1] + change.quantity,
            kind=kind,
            sale_id=sale_id,
            reference=reference,
            reason=reason,
            created_by_id=user_id,
        )
    ) for change in changes]


def _lock_stock_levels(shop_id: int, product_ids: list[int]) -> dict[int, tuple[int, int]]:
    """product id → (stock level id, on hand), the rows locked in product-id order, so two workflows
    touching the same products cannot deadlock."""
    rows = sql.fetch_all(
        "SELECT product_id, id, on_hand FROM inventory_stocklevel WHERE shop_id = %s AND product_id IN ("
        + sql.in_list(product_ids) + ") ORDER BY product_id" + sql.for_update(),
        [shop_id, *product_ids],
    )
    return {product_id: (level_id, on_hand) for product_id, level_id, on_hand in rows}


def receive_stock(*, shop_id: int, product_id: int, quantity: int, user=None, reference: str = "",
                  reason: str = "") -> StockMovement:
    if quantity <= 0:
        raise StockError("Received quantity must be more than zero.")
    return move_stock(shop_id=shop_id, changes=[StockChange(product_id, quantity)], kind=Kind.RECEIVE,
                      user=user, reference=reference, reason=reason)[0]


def adjust_stock(*, shop_id: int, product_id: int, quantity: int, reason: str, user=None) -> StockMovement:
    """A signed correction (breakage, theft, expiry); the reason is required."""
    if not reason.strip():
        raise StockError("Say why the stock is adjusted (damaged, expired, found…).")
    return move_stock(shop_id=shop_id, changes=[StockChange(product_id, quantity)], kind=Kind.ADJUST,
                      user=user, reason=reason)[0]


def count_stock(*, shop_id: int, product_id: int, counted: int, user=None, reason: str = "") -> StockMovement | None:
    """Record a physical count: the ledger gets the difference; nothing when the count agrees."""
    if counted < 0:
        raise StockError("A counted quantity cannot be negative.")
    with transaction.atomic():
        StockLevel.objects.get_or_create(shop_id=shop_id, product_id=product_id)
        level = StockLevel.objects.select_for_update().get(shop_id=shop_id, product_id=product_id)
        difference = counted - level.on_hand
        if difference == 0:
            return None
        return move_stock(shop_id=shop_id, changes=[StockChange(product_id, difference)], kind=Kind.COUNT,
                          user=user, reason=reason or f"counted {counted}")[0]


def transfer_stock(*, from_shop_id: int, to_shop_id: int, product_id: int, quantity: int, user=None,
                   reason: str = "") -> tuple[StockMovement, StockMovement]:
    if quantity <= 0:
        raise StockError("Transfer quantity must be more than zero.")
    if from_shop_id == to_shop_id:
        raise StockError("A transfer needs two different shops.")
    reference = f"transfer {from_shop_id}->{to_shop_id}"
    with transaction.atomic():
        # Lower shop id first: two opposite transfers cannot deadlock.
        first, second = sorted([(from_shop_id, -quantity), (to_shop_id, quantity)])
        moved = {}
        for shop_id, signed in (first, second):
            kind = Kind.TRANSFER_OUT if signed < 0 else Kind.TRANSFER_IN
            moved[kind] = move_stock(shop_id=shop_id, changes=[StockChange(product_id, signed)], kind=kind,
                                     user=user, reference=reference, reason=reason)[0]
        return moved[Kind.TRANSFER_OUT], moved[Kind.TRANSFER_IN]


def sell_stock(*, shop_id: int, sale_id: int, lines: list[tuple[int, int]], user_id: int | None = None,
               reference: str = "") -> list[StockMovement]:
    """Take a completed sale's (product_id, quantity) lines out of stock, once per sale.

    Inside a transaction it adds no savepoint: InsufficientStock comes before its first write.
    """
    with sql.within_transaction():
        return _move_stock(shop_id=shop_id, changes=[StockChange(pid, -qty) for pid, qty in lines],
                           kind=Kind.SALE, user_id=user_id, sale_id=sale_id, reference=reference, reason="")


def return_stock(*, shop_id: int, sale_id: int, lines: list[tuple[int, int]], user=None,
                 reason: str = "") -> list[StockMovement]:
    return move_stock(shop_id=shop_id, changes=[StockChange(pid, qty) for pid, qty in lines],
                      kind=Kind.RETURN, user=user, sale_id=sale_id, reason=reason)


def find_stock_discrepancies():
    """Every (shop, product) whose on-hand differs from the sum of its ledger rows."""
    ledger = {
        (row["shop_id"], row["product_id"]): row["total"]
        for row in StockMovement.objects.values("shop_id", "product_id").annotate(total=Sum("quantity"))
    }
    discrepancies = []
    for level in StockLevel.objects.values("shop_id", "product_id", "on_hand").iterator():
        key = (level["shop_id"], level["product_id"])
        expected = ledger.pop(key, 0)
        if expected != level["on_hand"]:
            discrepancies.append((key, level["on_hand"], expected))
    discrepancies.extend((key, 0, total) for key, total in ledger.items() if total != 0)
    return discrepancies
