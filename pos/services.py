"""Sale workflows: create a sale, take payments, complete or cancel it."""

import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from inventory.models import Product, StockLevel
from inventory.services import sell_stock

from .models import Payment, Sale, SaleLine, Shop, Till

logger = logging.getLogger(__name__)
CENT = Decimal("0.01")


class SaleError(Exception):
    """A sale request that cannot be carried out; the message is shown to the cashier."""


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


def create_sale(*, cashier, till: Till, items: list[ItemRequest], customer_phone: str = "") -> Sale:
    """A pending sale with its lines and totals, numbered and committed with the caller's work."""
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
    with transaction.atomic():
        sale = Sale.objects.create(
            receipt_number=next_receipt_number(till.shop_id),
            shop_id=till.shop_id,
            till=till,
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
    *, sale_id: int, method: str, amount: Decimal, user=None, tendered: Decimal | None = None,
    change_given: Decimal = Decimal("0"), reference: str = "",
) -> Payment:
    """Apply money to a pending sale and complete the sale once it is paid in full."""
    with transaction.atomic():
        # Sale row first: every payment and completion of this sale queues here.
        sale = Sale.objects.select_for_update().get(pk=sale_id)
        if sale.status != Sale.Status.PENDING:
            raise SaleError(f"Sale {sale.receipt_number} is {sale.status}; it takes no more payments.")
        if amount <= 0:
            raise SaleError("A payment must be more than zero.")
        payment = Payment.objects.create(
            sale=sale, method=method, amount=amount, tendered=tendered, change_given=change_given,
            reference=reference, received_by=user,
        )
        sale.amount_paid += amount
        sale.save(update_fields=["amount_paid"])
        if sale.amount_paid >= sale.total:
            complete_sale(sale_id=sale.pk, user=user)
        return payment


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
            sale_id=sale.pk, method=Payment.Method.CASH, amount=applied, tendered=tendered,
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


def complete_sale(*, sale_id: int, user=None) -> bool:
    """Complete a fully paid sale and take its lines out of stock, exactly once.

    Idempotent: a completed sale is left alone and False is returned. Raises SaleError for
    an unpaid or cancelled sale and InsufficientStock when the shop ran out meanwhile.
    """
    with transaction.atomic():
        sale = Sale.objects.select_for_update().get(pk=sale_id)
        if sale.status == Sale.Status.COMPLETED:
            return False
        if sale.status == Sale.Status.CANCELLED:
            raise SaleError(f"Sale {sale.receipt_number} was cancelled; it cannot be completed.")
        if sale.amount_paid < sale.total:
            raise SaleError(f"Sale {sale.receipt_number} still has KES {sale.balance_due:,.2f} to pay.")
        sell_stock(
            shop_id=sale.shop_id,
            sale_id=sale.pk,
            lines=list(sale.lines.values_list("product_id", "quantity")),
            user=user or sale.cashier,
            reference=sale.receipt_number,
        )
        sale.status = Sale.Status.COMPLETED
        sale.completed_at = timezone.now()
        sale.save(update_fields=["status", "completed_at"])
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
