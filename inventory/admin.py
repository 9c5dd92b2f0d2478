"""Back office for the catalogue and stock. On-hand quantities are read-only here: they change only
through inventory.services, which writes the ledger, from the "Move stock" page."""

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db import connections
from django.db.models import F, OuterRef, Q, Subquery, Sum
from django.db.models.constants import LOOKUP_SEP
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.translation import gettext

from comolor.csv_export import stream_csv

from . import services
from .models import Product, StockLevel, StockMovement
from .reports import stock_csv_rows


def shop_scope(request) -> int | None:
    """The id of the one shop whose rows this back-office user may see, or None for every shop.

    Superusers and owners see the whole chain; a manager sees their own shop only.
    """
    if not hasattr(request, "_comolor_shop_scope"):
        user = request.user
        staff = None if user.is_superuser else getattr(user, "staff", None)
        if not user.is_superuser and staff is None:
            raise PermissionDenied("This login is not linked to a shop. Ask the owner to add it as staff.")
        request._comolor_shop_scope = None if staff is None or staff.role == "owner" else staff.shop_id
    return request._comolor_shop_scope


def _limit_to_shop(db_field, request, kwargs):
    """Foreign-key choices of a scoped user: their shop, and rows that belong to it."""
    shop_id = shop_scope(request)
    related = db_field.related_model
    if shop_id is None or "queryset" in kwargs:
        return
    if related._meta.label == "pos.Shop":
        kwargs["queryset"] = related._default_manager.filter(pk=shop_id)
    elif any(field.name == "shop" for field in related._meta.fields):
        kwargs["queryset"] = related._default_manager.filter(shop_id=shop_id)


def shop_filter(path: str = "shop"):
    """A shop filter that lists the shops this user may see (none for a manager: they have one)
    from the shop table, never with a DISTINCT over the list's own million rows as
    RelatedOnlyFieldListFilter does."""

    class ShopFilter(admin.SimpleListFilter):
        title = "shop"
        parameter_name = f"{path}__id__exact"

        def lookups(self, request, model_admin):
            if shop_scope(request) is not None:
                return []
            shops = StockLevel._meta.get_field("shop").related_model._default_manager
            return list(shops.order_by("name").values_list("pk", "name"))

        def queryset(self, request, queryset):
            value = self.value()
            if not value:
                return queryset
            return queryset.filter(**{f"{path}_id": int(value)}) if value.isdigit() else queryset.none()

    return ShopFilter


class EstimatedCountPaginator(Paginator):
    """Counts a list exactly up to EXACT_UP_TO rows; past that, takes PostgreSQL's estimate.

    COUNT(*) reads every row it counts: over a million-row ledger that alone is most of a page's
    time. A bounded count stops early, and past the bound the planner's estimate (from the table's
    statistics) numbers the pages; the list then says "about" (templates/admin/pagination.html).
    """

    EXACT_UP_TO = 10_000
    estimated = False

    @cached_property
    def count(self):
        # Unordered: the database stops after the bound instead of sorting every row first.
        queryset = self.object_list.order_by()
        exact = queryset[:self.EXACT_UP_TO + 1].count()
        if exact <= self.EXACT_UP_TO or connections[queryset.db].vendor != "postgresql":
            return exact
        sql, params = queryset.query.sql_with_params()
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        self.estimated = True
        plan = json.loads(plan) if isinstance(plan, str) else plan
        return max(int(plan[0]["Plan"]["Plan Rows"]), exact)

    def validate_number(self, number):
        if not (self.count and self.estimated):  # counting first tells whether the count is an estimate
            return super().validate_number(number)
        # An estimate may promise a page more than there is: that page is shown empty, not refused.
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("That page number is not an integer") from None
        if number < 1:
            raise EmptyPage("That page number is less than 1")
        return number


class BigListAdmin(admin.ModelAdmin):
    """A change list that stays fast over millions of rows.

    Counted once and as EstimatedCountPaginator does; each row's action checkbox written directly in
    Django's markup (rendering a form widget per row was 40% of a 100-row page); and, when
    `code_search_fields` is set, a search by code answered from indexes: receipt numbers, M-Pesa
    codes, barcodes and request ids matched exactly, as typed or in capitals. A code across a
    relation is looked up on its own indexed table first, so the list's query is an OR of index
    lookups, not a scan of the list joined to other tables.
    """

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    code_search_fields: tuple[str, ...] = ()
    CODE_MATCHES = 100  # rows one code can name across a relation (a sale's few ledger rows, …)

    def action_checkbox(self, obj):
        return format_html('<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
                           helpers.ACTION_CHECKBOX_NAME, obj.pk,
                           format_html(gettext("Select this object for an action - {}"), str(obj)))

    def get_search_fields(self, request):
        return self.code_search_fields or super().get_search_fields(request)

    def get_search_results(self, request, queryset, search_term):
        if not self.code_search_fields:
            return super().get_search_results(request, queryset, search_term)
        codes = {form for word in search_term.split() for form in (word, word.upper())}
        if not codes:
            return queryset, False
        match = Q(pk__in=[])
        for path in self.code_search_fields:
            if LOOKUP_SEP in path:
                found = self.model._default_manager.filter(**{f"{path}__in": codes}).values_list("pk", flat=True)
                match |= Q(pk__in=list(found[:self.CODE_MATCHES]))
            else:
                match |= Q(**{f"{path}__in": codes})
        return queryset.filter(match), False


class ShopScopedAdmin(BigListAdmin):
    """Managers see and choose only their own shop's rows; another shop's row by URL is a 404."""

    shop_path = "shop"  # lookup from this model to its shop's id

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        shop_id = shop_scope(request)
        return queryset if shop_id is None else queryset.filter(**{self.shop_path: shop_id})

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such record in your shop.")
        return obj

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        _limit_to_shop(db_field, request, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ShopScopedInline:
    shop_path = "shop"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        shop_id = shop_scope(request)
        return queryset if shop_id is None else queryset.filter(**{self.shop_path: shop_id})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        _limit_to_shop(db_field, request, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ReadOnlyAdminMixin:
    """Facts (the ledger, sales, payments) are never edited in the admin; corrections are new rows."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def short_time(moment) -> str:
    """A change-list time that fits one narrow column: "28/11/26 09:39"."""
    return formats.date_format(timezone.localtime(moment), "d/m/y H:i")


def _move_stock_url(**params) -> str:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return reverse("admin:inventory_stocklevel_move") + (f"?{query}" if query else "")


class StockLevelInline(ShopScopedInline, ReadOnlyAdminMixin, admin.TabularInline):
    model = StockLevel
    fields = ["shop", "on_hand", "updated_at", "move"]
    readonly_fields = fields
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("shop")

    @admin.display(description="")
    def move(self, obj):
        return format_html('<a href="{}">Move stock</a>',
                           _move_stock_url(product=obj.product.sku, shop=obj.shop_id))


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "sku", "barcode", "unit", "price", "tax_band", "stock", "is_active"]
    list_filter = ["tax_band", "is_active"]
    # A scanned barcode matches exactly; SKU and name match any part.
    search_fields = ["=barcode", "sku", "name"]
    list_per_page = 50
    show_full_result_count = False  # no second COUNT over a chain-sized catalogue
    inlines = [StockLevelInline]
    fieldsets = [
        (None, {"fields": ["name", "sku", "barcode", "unit", "is_active"]}),
        ("Price and tax", {"fields": ["price", "tax_band"]}),
        ("Stock", {"fields": ["reorder_level"]}),
    ]

    def get_queryset(self, request):
        levels = StockLevel.objects.filter(product=OuterRef("pk"))
        shop_id = shop_scope(request)
        if shop_id is not None:
            levels = levels.filter(shop_id=shop_id)
        on_hand = levels.values("product").annotate(total=Sum("on_hand")).values("total")
        return super().get_queryset(request).annotate(stock_on_hand=Subquery(on_hand))

    @admin.display(description="stock", ordering="stock_on_hand")
    def stock(self, obj):
        return obj.stock_on_hand if obj.stock_on_hand is not None else "–"


class LowStockFilter(admin.SimpleListFilter):
    title = "stock"
    parameter_name = "stock"

    def lookups(self, request, model_admin):
        return [("low", "at or below reorder level"), ("out", "out of stock")]

    def queryset(self, request, queryset):
        if self.value() == "low":
            return queryset.filter(on_hand__lte=F("product__reorder_level"))
        if self.value() == "out":
            return queryset.filter(on_hand=0)
        return queryset


@admin.register(StockLevel)
class StockLevelAdmin(ReadOnlyAdminMixin, ShopScopedAdmin):
    list_display = ["product", "shop", "on_hand", "reorder_level", "updated_at", "move"]
    list_select_related = ["product", "shop"]
    list_filter = [LowStockFilter, shop_filter()]
    search_fields = ["=product__barcode", "product__sku", "product__name"]
    ordering = ["product__name", "shop__name"]
    show_full_result_count = False
    change_list_template = "admin/inventory/stocklevel/change_list.html"

    @admin.display(description="reorder level", ordering="product__reorder_level")
    def reorder_level(self, obj):
        return obj.product.reorder_level

    @admin.display(description="")
    def move(self, obj):
        return format_html('<a href="{}">Move stock</a>',
                           _move_stock_url(product=obj.product.sku, shop=obj.shop_id))

    def get_urls(self):
        page = self.admin_site.admin_view(self.move_stock_view)
        export = self.admin_site.admin_view(self.export_view)
        return [path("move/", page, name="inventory_stocklevel_move"),
                path("export/", export, name="inventory_stocklevel_export"), *super().get_urls()]

    def export_view(self, request):
        """Stock per shop as CSV: ?shop= one shop (another shop's id is a 404 for a manager)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        shops = StockLevel._meta.get_field("shop").related_model._default_manager.all()
        own = shop_scope(request)
        wanted = request.GET.get("shop") or own  # a manager's own shop when none is named
        if wanted is None:
            shop_ids, name = None, "all-shops"
        else:
            shop = shops.filter(pk=wanted).first() if str(wanted).isdigit() and own in (None, int(wanted)) else None
            if shop is None:
                raise Http404("No such shop in your back office.")
            shop_ids, name = [shop.pk], shop.code
        return stream_csv(f"stock-{name}-{timezone.localdate():%Y-%m-%d}.csv", stock_csv_rows(shop_ids=shop_ids))

    def move_stock_view(self, request):
        if not request.user.has_perm("inventory.add_stockmovement"):
            raise PermissionDenied
        shops = StockLevel._meta.get_field("shop").related_model._default_manager.all()
        shop_id = shop_scope(request)
        if shop_id is not None:
            shops = shops.filter(pk=shop_id)
        form = MoveStockForm(request.POST or None, shops=shops, initial=request.GET.dict())
        if request.method == "POST" and form.is_valid():
            try:
                summary = form.save(user=request.user)
            except services.StockError as error:
                form.add_error(None, str(error))
            else:
                self.message_user(request, summary, messages.SUCCESS)
                return redirect(_move_stock_url(shop=form.cleaned_data["shop"].pk))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Move stock",
            "form": form,
        }
        return TemplateResponse(request, "admin/inventory/stocklevel/move_stock.html", context)


class MoveStockForm(forms.Form):
    """Receive, adjust, count or transfer one product: each writes ledger rows through the service."""

    ACTIONS = [
        ("receive", "Receive a delivery (quantity in)"),
        ("adjust", "Adjust (signed: −3 for three damaged, +1 for one found)"),
        ("count", "Record a count (the quantity counted on the shelf)"),
        ("transfer", "Transfer to another shop (quantity out)"),
    ]
    action = forms.ChoiceField(choices=ACTIONS, widget=forms.RadioSelect, initial="receive")
    product = forms.CharField(label="Product SKU or barcode", max_length=40)
    shop = forms.ModelChoiceField(queryset=None)
    quantity = forms.IntegerField()
    to_shop = forms.ModelChoiceField(queryset=None, required=False, label="To shop (transfers only)")
    reference = forms.CharField(max_length=80, required=False, help_text="Delivery note or invoice number.")
    reason = forms.CharField(max_length=200, required=False, help_text="Required for adjustments.")

    def __init__(self, *args, shops, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["shop"].queryset = shops
        self.fields["to_shop"].queryset = shops.model._default_manager.all()

    def clean_product(self):
        code = self.cleaned_data["product"].strip()
        product = Product.objects.filter(Q(sku=code) | Q(barcode=code)).first()
        if product is None:
            raise forms.ValidationError(f"No product with SKU or barcode {code}.")
        return product

    def clean(self):
        data = super().clean()
        if data.get("action") == "transfer" and not data.get("to_shop"):
            self.add_error("to_shop", "Choose the shop the stock goes to.")
        return data

    def save(self, *, user) -> str:
        data = self.cleaned_data
        action, product, shop, quantity = data["action"], data["product"], data["shop"], data["quantity"]
        common = {"product_id": product.pk, "user": user}
        if action == "receive":
            services.receive_stock(shop_id=shop.pk, quantity=quantity, reference=data["reference"],
                                   reason=data["reason"], **common)
            done = f"Received {quantity} × {product.name} into {shop}"
        elif action == "adjust":
            services.adjust_stock(shop_id=shop.pk, quantity=quantity, reason=data["reason"], **common)
            done = f"Adjusted {product.name} in {shop} by {quantity:+d}"
        elif action == "count":
            movement = services.count_stock(shop_id=shop.pk, counted=quantity, reason=data["reason"], **common)
            done = (f"Counted {quantity} × {product.name} in {shop}: "
                    + (f"ledger corrected by {movement.quantity:+d}" if movement else "it agrees with the ledger"))
        else:
            services.transfer_stock(from_shop_id=shop.pk, to_shop_id=data["to_shop"].pk, quantity=quantity,
                                    reason=data["reason"], **common)
            done = f"Transferred {quantity} × {product.name} from {shop} to {data['to_shop']}"
        on_hand = StockLevel.objects.get(shop=shop, product=product).on_hand
        return f"{done}. On hand in {shop} now {on_hand}."


@admin.register(StockMovement)
class StockMovementAdmin(ReadOnlyAdminMixin, ShopScopedAdmin):
    # What moved, how and the balance first; the shop and the paperwork after them.
    list_display = ["time", "product", "kind", "quantity", "balance", "shop", "sale", "reference", "reason",
                    "created_by"]
    list_select_related = ["shop", "product", "sale", "created_by"]
    list_filter = ["kind", shop_filter()]
    code_search_fields = ("product__barcode", "product__sku", "reference")
    search_help_text = "A barcode or SKU, a receipt number or a delivery reference."
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False

    @admin.display(description="time", ordering="created_at")
    def time(self, obj):
        return short_time(obj.created_at)

    @admin.display(description="balance", ordering="balance_after")
    def balance(self, obj):
        return obj.balance_after
