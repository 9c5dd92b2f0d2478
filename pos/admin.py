"""Back office for shops, tills, staff and sales. Managers see their own shop; owners the chain."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from comolor.logging import mask_phone
from inventory.admin import ReadOnlyAdminMixin, ShopScopedAdmin, ShopScopedInline, short_time

from .models import Payment, Sale, SaleLine, Shop, Staff, Till
from .services import add_staff

admin.site.site_header = "Comolor POS back office"
admin.site.site_title = "Comolor POS"
admin.site.index_title = "Back office"


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
class SaleAdmin(ReadOnlyAdminMixin, ShopScopedAdmin):
    # The till shows its shop's code ("DEMO · Till 1"): no shop column, so the figures fit at 1280 px.
    list_display = ["receipt", "time", "till", "cashier", "status", "total_kes", "paid", "phone"]
    list_select_related = ["till__shop", "cashier"]
    list_filter = ["status", ("shop", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["=receipt_number", "=payments__reference"]
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False
    inlines = [SaleLineInline, PaymentInline]
    fields = ["receipt_number", "shop", "till", "cashier", "status", "total", "vat_total", "amount_paid",
              "phone", "created_at", "completed_at", "cancelled_at", "cancel_reason"]
    readonly_fields = fields

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
