"""Back office for printers, print jobs and receipts (preview and reprint of any sale)."""

from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.http import HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html

from inventory.admin import ReadOnlyAdminMixin, ShopScopedAdmin, shop_filter

from . import services
from .models import Printer, PrintJob, SaleReceipt
from .printing import PrintError, target_for
from .rendering import render_png


@admin.register(Printer)
class PrinterAdmin(ShopScopedAdmin):
    shop_path = "till__shop"
    list_display = ["name", "till", "kind", "address", "paper_width", "profile", "cash_drawer", "is_active"]
    list_filter = ["kind", "is_active", "paper_width", ("till__shop", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["till__shop"]
    search_fields = ["name", "host", "device", "till__name"]
    fieldsets = [
        (None, {"fields": ["till", "name", "kind", "is_active"]}),
        ("Connection", {"fields": ["host", "port", "usb_vendor_id", "usb_product_id", "device"],
                        "description": "Fill in what the kind needs: network → host and port; USB → the two "
                                       "ids; serial, file or LP → device."}),
        ("Paper and model", {"fields": ["paper_width", "profile", "cash_drawer"]}),
    ]
    actions = ["print_test_page"]

    @admin.action(description="Print a test page")
    def print_test_page(self, request, queryset):
        for printer in queryset.select_related("till"):
            try:
                where = services.print_test_page(target_for(printer))
            except PrintError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, f"Test page sent to {printer.name} ({where}).", messages.SUCCESS)


@admin.register(PrintJob)
class PrintJobAdmin(ReadOnlyAdminMixin, ShopScopedAdmin):
    shop_path = "sale__shop"
    list_display = ["id", "created_at", "sale", "printer", "status", "attempts", "is_copy", "last_error"]
    list_filter = ["status", "is_copy", shop_filter("sale__shop")]
    list_select_related = ["sale", "printer"]
    code_search_fields = ("sale__receipt_number",)
    date_hierarchy = "created_at"
    list_per_page = 100
    fields = ["sale", "printer", "destination", "status", "attempts", "last_error", "is_copy", "size",
              "created_at", "updated_at", "next_attempt_at", "printed_at"]
    readonly_fields = fields
    actions = ["retry_jobs", "reprint_sales"]

    @admin.display(description="bytes")
    def size(self, obj):
        return len(obj.data)

    @admin.action(description="Retry printing the selected jobs now")
    def retry_jobs(self, request, queryset):
        for job_id in queryset.values_list("pk", flat=True):
            job = services.send_print_job(job_id)
            level = messages.SUCCESS if job.status == PrintJob.Status.DONE else messages.WARNING
            self.message_user(request, f"Job {job.pk} ({job.sale.receipt_number}): "
                                       f"{job.get_status_display()}. {job.last_error}".strip(), level)

    @admin.action(description="Reprint a copy of these receipts")
    def reprint_sales(self, request, queryset):
        _reprint(self, request, queryset.values_list("sale_id", flat=True).distinct())


def _reprint(model_admin, request, sale_ids):
    for sale_id in sale_ids:
        try:
            job = services.reprint_receipt(sale_id)
        except PrintError as error:
            model_admin.message_user(request, str(error), messages.ERROR)
            continue
        status = services.describe_print_status(sale_id)
        level = messages.SUCCESS if job is None or job.status == PrintJob.Status.DONE else messages.WARNING
        model_admin.message_user(request, status["message"], level)


@admin.register(SaleReceipt)
class SaleReceiptAdmin(ReadOnlyAdminMixin, ShopScopedAdmin):
    """Each sale's receipt as printed, with its print jobs; reprint a copy from here."""

    list_display = ["receipt_number", "completed_at", "shop", "till", "total", "status", "print_status"]
    list_filter = ["status", shop_filter()]
    list_select_related = ["shop", "till__shop"]
    code_search_fields = ("receipt_number",)
    date_hierarchy = "created_at"
    list_per_page = 100
    show_full_result_count = False
    fields = ["receipt_number", "shop", "till", "status", "total", "completed_at", "jobs", "preview"]
    readonly_fields = fields
    actions = ["reprint"]

    def get_queryset(self, request):
        # The latest print job's status comes with each row: one query for the page, not one per row.
        latest = PrintJob.objects.filter(sale=OuterRef("pk")).order_by("-id").values("status")[:1]
        return super().get_queryset(request).annotate(last_print_status=Subquery(latest))

    @admin.display(description="printing")
    def print_status(self, obj):
        status = obj.last_print_status
        return PrintJob.Status(status).label if status else "–"

    @admin.display(description="print jobs")
    def jobs(self, obj):
        rows = [format_html('<a href="{}">#{} {}{}</a>', reverse("admin:receipts_printjob_change", args=[job.pk]),
                            job.pk, job.get_status_display(), " (copy)" if job.is_copy else "")
                for job in obj.print_jobs.order_by("id")]
        return format_html(", ".join(["{}"] * len(rows)), *rows) if rows else "none"

    @admin.display(description="receipt")
    def preview(self, obj):
        return format_html(
            '<img src="{}" alt="Receipt {}" style="max-width:304px;border:1px solid #ccc"><br>'
            '<a href="{}" target="_blank">58 mm</a> · <a href="{}" target="_blank">80 mm</a>',
            reverse("admin:receipts_salereceipt_preview", args=[obj.pk]), obj.receipt_number,
            reverse("admin:receipts_salereceipt_preview", args=[obj.pk]) + "?width=58",
            reverse("admin:receipts_salereceipt_preview", args=[obj.pk]) + "?width=80",
        )

    @admin.action(description="Reprint a copy of the selected receipts")
    def reprint(self, request, queryset):
        _reprint(self, request, queryset.values_list("pk", flat=True))

    def get_urls(self):
        return [
            path("<int:object_id>/preview.png", self.admin_site.admin_view(self.preview_png),
                 name="receipts_salereceipt_preview"),
        ] + super().get_urls()

    def preview_png(self, request, object_id):
        sale = self.get_object(request, str(object_id))  # 404 outside the manager's shop
        if not self.has_view_permission(request, sale):
            return HttpResponse(status=403)
        paper_width, profile = services.choose_paper(sale.till_id, request.GET.get("width"))
        png = render_png(services.build_receipt(sale.pk), paper_width=paper_width, profile=profile)
        return HttpResponse(png, content_type="image/png")
