"""Sale workflows: create a sale, take payments, complete or cancel it."""

import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Case, F, OuterRef, Q, Subquery, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.module_loading import import_string

from inventory.models import Product, StockLevel
from inventory.services import sell_stock

from .models import Payment, Sale, SaleLine, Shop, Staff, Till

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
            if not isinstance(code, str) or not code.strip():
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
    *, sale_id: int | None = None, sale: Sale | None = None, method: str, amount: Decimal, user=None,
    tendered: Decimal | None = None, change_given: Decimal = Decimal("0"), reference: str = "",
) -> Payment:
    """Apply money to a pending sale and complete the sale once it is paid in full.

    It runs in its own savepoint, so a caller may catch its SaleError or InsufficientStock and carry
    on (the M-Pesa ledger does). Pass `sale` when the caller already holds the sale row's lock
    (select_for_update in the same transaction): it is used as it is, not locked again. After a
    failure that instance may hold unsaved changes: reload it before using it again.
    """
    with transaction.atomic():
        if sale is None:
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
        if sale.amount_paid >= sale.total:
            # The new amount is saved with the completion: one UPDATE of the sale row, not two.
            _complete_locked_sale(sale, user_id=user.pk if user else None, also_save=["amount_paid"])
        else:
            sale.save(update_fields=["amount_paid"])
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
    query = query.strip()
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


def _complete_locked_sale(sale: Sale, *, user_id: int | None, also_save: list[str] | None = None) -> bool:
    """complete_sale on a sale row the caller has locked, inside the caller's transaction.

    also_save: fields the caller changed on `sale`, saved in the same UPDATE as the completion.
    """
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
        # Ids only: loading the cashier's user row would cost a query per sale.
        user_id=user_id or sale.cashier_id,
        reference=sale.receipt_number,
    )
    sale.status = Sale.Status.COMPLETED
    sale.completed_at = timezone.now()
    sale.save(update_fields=["status", "completed_at", *(also_save or [])])
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


# --- Staff and roles --------------------------------------------------------------------------

ROLE_GROUPS = {Staff.Role.CASHIER: "Cashier", Staff.Role.MANAGER: "Manager", Staff.Role.OWNER: "Owner"}
_TILL_PERMISSIONS = [
    "inventory.view_product", "inventory.view_stocklevel", "pos.view_shop", "pos.view_till",
    "pos.add_sale", "pos.view_sale", "pos.view_saleline", "pos.add_payment", "pos.view_payment",
]
# Model permissions of each role's group. Rows are scoped by shop on top of these (views, admin):
# a manager runs one shop's back office, an owner the whole chain. Only owners manage logins,
# so a manager cannot make anyone (themselves included) an owner or a superuser.
ROLE_PERMISSIONS = {
    Staff.Role.CASHIER: _TILL_PERMISSIONS,
    Staff.Role.MANAGER: _TILL_PERMISSIONS + [
        "pos.change_shop", "pos.add_till", "pos.change_till", "pos.view_staff",
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
