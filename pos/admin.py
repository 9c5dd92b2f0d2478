"""Back office for shops, tills, staff and sales. Managers see their own shop; owners the chain."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html

from comolor.logging import mask_phone
from inventory.admin import (ReadOnlyAdminMixin, ShopScopedAdmin, ShopScopedInline, shop_filter, shop_scope,
                             short_time)

from . import admin_reports
from .forms import ThrottledAdminLoginForm
from .models import CashMovement, ManagerAction, Payment, Sale, SaleLine, Shift, Shop, Staff, Till
from .services import SaleError, add_staff, cancel_stale_sale, shift_report, stale_sales

admin.site.site_header = "Comolor POS back office"
admin.site.site_title = "Comolor POS"
admin.site.index_title = "Back office"
admin.site.login_form = ThrottledAdminLoginForm


class TillInline(ShopScopedInline, admin.TabularInline):
    model = Till
    fields = ["name", "is_active"]
    extra = 0


@admin.register(Shop)
class ShopAdmin(ShopScopedAdmin):
    shop_path = "pk"
    list_display = ["code", "name", "address", "phone", "kra_pin", "vat_registered", "last_receipt_seq"]
    search_fields = ["code", "name"]
    inlines = [TillInline]

    def get_readonly_fields(self, request, obj=None):
        # The code starts every receipt number already printed; it cannot change afterwards.
        return ["code", "last_receipt_seq"] if obj else ["last_receipt_seq"]


@admin.register(Till)
class TillAdmin(ShopScopedAdmin):
    list_display = ["name", "shop", "is_active"]
    list_filter = ["is_active", ("shop", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["shop"]
    search_fields = ["name", "shop__code", "shop__name"]


@admin.register(Staff)
class StaffAdmin(ShopScopedAdmin):
    list_display = ["user", "shop", "role", "default_till"]
    list_filter = ["role", ("shop", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["user", "shop", "default_till__shop"]
    search_fields = ["user__username", "user__first_name", "user__last_name"]

    def get_readonly_fields(self, request, obj=None):
        return ["user"] if obj else []

    def save_model(self, request, obj, form, change):
        # The role also decides the login's group and admin access: the service keeps them in step.
        add_staff(obj.user, obj.shop, obj.role, default_till=obj.default_till)


class StaffInline(ShopScopedInline, admin.StackedInline):
    model = Staff
    fk_name = "user"
    can_delete = False
    fields = ["shop", "role", "default_till"]


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class StaffUserAdmin(UserAdmin):
    """Logins with their shop and role. Only superusers grant superuser status or raw permissions."""

    inlines = [StaffInline]
    list_display = ["username", "first_name", "last_name", "shop", "role", "is_staff", "is_active"]
    list_select_related = ["staff__shop"]
    list_filter = ["is_active", "staff__role", "staff__shop"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        # Nobody but a superuser can reset a superuser's password or take over the account.
        return queryset if request.user.is_superuser else queryset.filter(is_superuser=False)

    def get_readonly_fields(self, request, obj=None):
        if request.user.is_superuser:
            return super().get_readonly_fields(request, obj)
        return ["is_staff", "is_superuser", "groups", "user_permissions", "last_login", "date_joined"]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        user = form.instance
        staff = Staff.objects.filter(user=user).first()
        if staff:
            add_staff(user, staff.shop, staff.role, default_till=staff.default_till)

    @admin.display(description="shop", ordering="staff__shop__name")
    def shop(self, obj):
        staff = getattr(obj, "staff", None)
        return staff.shop if staff else "–"

    @admin.display(description="role", ordering="staff__role")
    def role(self, obj):
        staff = getattr(obj, "staff", None)
        return staff.get_role_display() if staff else "–"


# --- Reconciliation and audit ---------------------------------------------------------------------

def may_reconcile(request) -> bool:
    """Managers, owners and superusers fix the books; the rows they may touch are scoped as usual."""
    staff = getattr(request.user, "staff", None)
    return request.user.is_superuser or (staff is not None and staff.role != Staff.Role.CASHIER)


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=500,
                             help_text="Recorded with your name and the time, for the audit.",
                             error_messages={"required": "Say why: every correction is recorded with its reason."})


def act_with_reason(model_admin, request, queryset, *, title: str, do, describe=str, form_class=ReasonForm,
                    intro: str = ""):
    """An admin action in two steps: the selected rows and a form asking why (and how, per
    form_class), then `do(obj, **cleaned_data)` per row, each outcome reported in words."""
    form = form_class(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        for obj in queryset:
            try:
                outcome = do(obj, **form.cleaned_data)
            except SaleError as error:
                model_admin.message_user(request, f"{describe(obj)}: {error}", messages.ERROR)
            else:
                model_admin.message_user(request, f"{describe(obj)}: {outcome}", messages.SUCCESS)
        return None
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta, "title": title, "intro": intro, "form": form,
        "rows": [(obj.pk, describe(obj)) for obj in queryset],
        "action": request.POST.get("action", ""), "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/reason_action.html", context)


class QueueFilter(admin.SimpleListFilter):
    """The reconciliation queues as a change-list filter (?queue=…), the admin index links here.

    Subclasses set `queues`: {value: (label, function returning the queue's queryset)}.
    """

    title = "reconciliation queue"
    parameter_name = "queue"
    queues: dict = {}

    def lookups(self, request, model_admin):
        return [(value, label) for value, (label, _) in self.queues.items()]

    def queryset(self, request, queryset):
        if self.value() in self.queues:
            return queryset & self.queues[self.value()][1]()
        return queryset


class StaleSaleFilter(QueueFilter):
    queues = {"stale": ("Sales pending too long", stale_sales)}


class ReconcileMixin:
    """An admin with reconciliation actions (managers, owners) and queues, titled by the queue shown."""

    def has_reconcile_permission(self, request):
        return may_reconcile(request)

    def changelist_view(self, request, extra_context=None):
        queues = {value: label for f in self.list_filter if isinstance(f, type) and issubclass(f, QueueFilter)
                  for value, (label, _) in f.queues.items()}
        if request.GET.get("queue") in queues:
            extra_context = {"title": queues[request.GET["queue"]], **(extra_context or {})}
        return super().changelist_view(request, extra_context)


@admin.register(ManagerAction)
class ManagerActionAdmin(ReadOnlyAdminMixin, ShopScopedAdmin):
    list_display = ["time", "user", "action", "target", "reason", "outcome", "shop"]
    list_select_related = ["user", "shop"]
    list_filter = ["action", shop_filter()]
    search_fields = ["target", "reason", "user__username"]
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False
    fields = readonly_fields = ["created_at", "user", "shop", "action", "target", "reason", "outcome"]

    @admin.display(description="time", ordering="created_at")
    def time(self, obj):
        return short_time(obj.created_at)


@admin.register(LogEntry)
class LogEntryAdmin(ReadOnlyAdminMixin, ShopScopedAdmin):
    """Django's own record of every add, change and delete made in the admin."""

    # A manager sees what the staff of their shop did; owners work chain-wide and are not listed.
    shop_path = "user__staff__shop"
    list_display = ["action_time", "user", "content_type", "object_repr", "action_flag", "change_message"]
    list_select_related = ["user", "content_type"]
    list_filter = ["action_flag", "content_type"]
    search_fields = ["object_repr", "user__username"]
    date_hierarchy = "action_time"
    list_per_page = 100
    show_full_result_count = False
    fields = readonly_fields = ["action_time", "user", "content_type", "object_id", "object_repr", "action_flag",
                                "change_message"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if shop_scope(request) is None else queryset.exclude(user__staff__role=Staff.Role.OWNER)

    def has_module_permission(self, request):
        return may_reconcile(request)

    def has_view_permission(self, request, obj=None):
        return may_reconcile(request)


class SaleLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = SaleLine
    fields = ["product", "name", "quantity", "unit_price", "tax_band", "line_total", "vat_amount"]
    readonly_fields = fields
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("product")


class PaymentInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Payment
    fields = ["created_at", "method", "amount", "tendered", "change_given", "reference", "received_by"]
    readonly_fields = fields
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("received_by", "sale")


@admin.register(Sale)
class SaleAdmin(ReconcileMixin, ReadOnlyAdminMixin, ShopScopedAdmin):
    # The till shows its shop's code ("DEMO · Till 1"): no shop column, so the figures fit at 1280 px.
    list_display = ["receipt", "time", "till", "cashier", "status", "total_kes", "paid", "phone"]
    list_select_related = ["till__shop", "cashier"]
    list_filter = [StaleSaleFilter, "status", shop_filter()]
    code_search_fields = ("receipt_number", "mpesa_transactions__receipt_number")
    search_help_text = "A receipt number (DEMO-0000123) or the M-Pesa code that paid it."
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False
    inlines = [SaleLineInline, PaymentInline]
    fields = ["receipt_number", "shop", "till", "cashier", "status", "total", "vat_total", "amount_paid",
              "phone", "created_at", "completed_at", "cancelled_at", "cancel_reason"]
    readonly_fields = fields
    actions = ["cancel_stale_sales"]

    @admin.action(description="Cancel the selected stale sales…", permissions=["reconcile"])
    def cancel_stale_sales(self, request, queryset):
        def cancel(sale, reason):
            cancel_stale_sale(sale_id=sale.pk, user=request.user, reason=reason)
            return "cancelled."

        return act_with_reason(
            self, request, queryset, title="Cancel stale sales", do=cancel,
            describe=lambda sale: f"Sale {sale.receipt_number} (KES {sale.total:,.2f})",
            intro=f"A sale is cancelled only when it has been pending for more than "
                  f"{settings.POS_STALE_SALE_MINUTES} minutes and nothing has been paid on it.",
        )

    def get_urls(self):
        # The dashboard and the CSV export live in admin_reports; these are only their addresses.
        page = self.admin_site.admin_view
        return [
            path("dashboard/", page(lambda request: admin_reports.dashboard_view(self, request)),
                 name="pos_sale_dashboard"),
            path("export/", page(lambda request: admin_reports.export_sales_view(self, request)),
                 name="pos_sale_export"),
            *super().get_urls(),
        ]

    @admin.display(description="receipt", ordering="receipt_number")
    def receipt(self, obj):
        return obj.receipt_number

    @admin.display(description="time", ordering="created_at")
    def time(self, obj):
        return short_time(obj.created_at)

    @admin.display(description="total", ordering="total")
    def total_kes(self, obj):
        return obj.total

    @admin.display(description="paid", ordering="amount_paid")
    def paid(self, obj):
        return obj.amount_paid

    @admin.display(description="phone")
    def phone(self, obj):
        return mask_phone(obj.customer_phone) if obj.customer_phone else ""


# --- Shifts ---------------------------------------------------------------------------------------

class CashMovementInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = CashMovement
    fields = ["created_at", "kind", "amount", "reason", "created_by"]
    readonly_fields = fields
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by")


@admin.register(Shift)
class ShiftAdmin(ReadOnlyAdminMixin, ShopScopedAdmin):
    """Shifts with their blind counts and Z reports, read-only: counts are facts, fixes are new rows."""

    # The figures of the Z report fit 1280 px: the status is in "closed" ("open") and in the filter.
    list_display = ["shift", "till_name", "opened_by", "opened", "closed", "expected_cash", "counted_cash",
                    "difference"]
    list_select_related = ["till__shop", "opened_by"]
    list_filter = ["status", shop_filter()]
    search_fields = ["opened_by__username", "closed_by__username"]
    date_hierarchy = "opened_at"
    list_per_page = 100
    show_full_result_count = False
    inlines = [CashMovementInline]
    fields = ["shop", "till", "status", "opened_by", "opened_at", "opening_float", "closed_by", "closed_at",
              "expected_cash", "counted_cash", "difference", "close_note", "report"]
    readonly_fields = fields

    @admin.display(description="shift", ordering="pk")
    def shift(self, obj):
        return f"#{obj.pk}"

    @admin.display(description="till", ordering="till__name")
    def till_name(self, obj):
        return obj.till.name

    @admin.display(description="opened", ordering="opened_at")
    def opened(self, obj):
        return short_time(obj.opened_at)

    @admin.display(description="closed", ordering="closed_at")
    def closed(self, obj):
        return short_time(obj.closed_at) if obj.closed_at else "open"

    @admin.display(description="cash difference")
    def difference(self, obj):
        difference = obj.cash_difference
        if difference is None:
            return "–"
        if difference == 0:
            return "0.00 balanced"
        colour, word = ("#b91c1c", "short") if difference < 0 else ("#b45309", "over")
        return format_html('<strong style="color:{}">{} {}</strong>', colour, f"{difference:+,.2f}", word)

    @admin.display(description="X / Z report")
    def report(self, obj):
        # As a manager sees it: every figure, the drawer's expected cash included.
        return render_to_string("pos/_shift_report.html", {"report": shift_report(shift_id=obj.pk)})
