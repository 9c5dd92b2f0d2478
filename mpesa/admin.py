"""Read-only back office for M-Pesa: prompts, raw callbacks, the ledger and calls to Daraja.

All four are facts: nothing is added, edited or deleted here. Managers see their own shop's
prompts and ledger rows; raw callbacks and Daraja calls (not tied to one shop, and full of
personal data) are for owners and superusers only.
"""

from django.contrib import admin
from django.utils.html import format_html

from comolor.logging import mask_phone, redact
from inventory.admin import ReadOnlyAdminMixin, ShopScopedAdmin, shop_scope

from .models import CallbackLog, DarajaCall, MpesaTransaction, StkRequest


class ChainWideAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if shop_scope(request) is None else queryset.none()


@admin.register(StkRequest)
class StkRequestAdmin(ReadOnlyAdminMixin, ShopScopedAdmin):
    list_display = ["created_at", "sale", "shop", "masked_phone", "amount", "status", "result_code",
                    "mpesa_receipt", "query_count"]
    list_filter = ["status", "created_at", ("shop", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["sale", "shop"]
    search_fields = ["checkout_request_id", "merchant_request_id", "mpesa_receipt", "sale__receipt_number"]
    date_hierarchy = "created_at"
    # The callback token stays out: it is what authenticates this prompt's callback.
    fields = readonly_fields = [
        "sale", "shop", "masked_phone", "amount", "account_reference", "status", "result_code", "result_desc",
        "mpesa_receipt", "merchant_request_id", "checkout_request_id", "query_count", "last_queried_at",
        "requested_by", "created_at", "resolved_at",
    ]

    @admin.display(description="phone")
    def masked_phone(self, obj):
        return mask_phone(obj.phone)


@admin.register(MpesaTransaction)
class MpesaTransactionAdmin(ReadOnlyAdminMixin, ShopScopedAdmin):
    list_display = ["created_at", "receipt_number", "amount", "source", "match_status", "sale", "shop",
                    "review_reason"]
    list_filter = ["match_status", "source", "created_at", ("shop", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["sale", "shop"]
    search_fields = ["receipt_number", "bill_ref_number", "sale__receipt_number", "stk_request__checkout_request_id"]
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in MpesaTransaction._meta.fields]


@admin.register(CallbackLog)
class CallbackLogAdmin(ChainWideAdmin):
    list_display = ["received_at", "kind", "status", "source_ip", "checkout_request_id", "trans_id", "attempts"]
    list_filter = ["status", "kind", "received_at"]
    search_fields = ["checkout_request_id", "trans_id", "source_ip"]
    date_hierarchy = "received_at"
    fields = readonly_fields = ["kind", "status", "error", "received_at", "processed_at", "attempts", "source_ip",
                                "path", "checkout_request_id", "trans_id", "headers", "body_text"]

    @admin.display(description="body (phone numbers masked)")
    def body_text(self, obj):
        return format_html("<pre>{}</pre>", redact(bytes(obj.body).decode("utf-8", "replace")))


@admin.register(DarajaCall)
class DarajaCallAdmin(ChainWideAdmin):
    list_display = ["created_at", "method", "endpoint", "status_code", "duration_ms", "outcome"]
    list_filter = ["endpoint", "status_code", "created_at"]
    search_fields = ["endpoint", "request_id", "outcome"]
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in DarajaCall._meta.fields]
