"""Back office for M-Pesa: prompts, raw callbacks, the ledger and calls to Daraja, the
reconciliation queues and actions, and the daily settlement.

All four are facts: nothing is added, edited or deleted here; a correction is an action that calls
mpesa.services and is recorded (pos.ManagerAction). Managers see their own shop's prompts and ledger
rows; raw callbacks and Daraja calls (not tied to one shop, and full of personal data) are for
owners and superusers only.
"""

import csv
import math

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from comolor.logging import mask_phone, redact
from inventory.admin import BigListAdmin, ReadOnlyAdminMixin, ShopScopedAdmin, shop_filter, shop_scope, short_time
from pos.admin import QueueFilter, ReasonForm, ReconcileMixin, act_with_reason, may_reconcile
from pos.models import Sale, Shop
from pos.services import SaleError

from . import services
from .models import CallbackLog, DarajaCall, MpesaTransaction, StkRequest


class ChainWideAdmin(ReadOnlyAdminMixin, BigListAdmin):
    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if shop_scope(request) is None else queryset.none()

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such record, or it is for owners only.")
        return obj


class PaymentQueueFilter(QueueFilter):
    queues = {"unmatched": ("Unmatched M-Pesa payments", services.unmatched_payments),
              "mismatch": ("Amount mismatches", services.amount_mismatches)}


class StkQueueFilter(QueueFilter):
    queues = {"unknown": ("M-Pesa prompts with no outcome", services.unknown_stk_requests)}


class CallbackQueueFilter(QueueFilter):
    queues = {"stuck": ("Orphan and failed callbacks", services.stuck_callbacks)}


class RefundForm(ReasonForm):
    method = forms.ChoiceField(label="Refunded", widget=forms.RadioSelect, choices=[
        ("cash", "in cash, from the till"), ("outside", "outside this system (M-Pesa reversal or send money)"),
    ])
    field_order = ["method", "reason"]


class SettlementForm(forms.Form):
    shop = forms.ModelChoiceField(queryset=None, required=False, empty_label=None)
    date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
                           input_formats=["%Y-%m-%d"])

    def __init__(self, *args, shops, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["shop"].queryset = shops


class AssignPaymentForm(ReasonForm):
    sale = forms.ModelChoiceField(queryset=None, error_messages={
        "required": "Choose the sale this payment was for.",
        "invalid_choice": "That sale is not one this payment can pay (another shop's, or gone). Choose from the list.",
    })

    def __init__(self, *args, sales, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["sale"].queryset = sales


@admin.register(StkRequest)
class StkRequestAdmin(ReconcileMixin, ReadOnlyAdminMixin, ShopScopedAdmin):
    list_display = ["created_at", "sale", "shop", "masked_phone", "amount", "status", "result_code",
                    "mpesa_receipt", "query_count"]
    list_filter = [StkQueueFilter, "status", "created_at", shop_filter()]
    list_select_related = ["sale", "shop"]
    code_search_fields = ("checkout_request_id", "transaction__receipt_number", "sale__receipt_number")
    search_help_text = "A CheckoutRequestID, the M-Pesa code it was paid with, or the sale's receipt number."
    # The callback token stays out: it is what authenticates this prompt's callback.
    fields = readonly_fields = [
        "sale", "shop", "masked_phone", "amount", "account_reference", "status", "result_code", "result_desc",
        "mpesa_receipt", "merchant_request_id", "checkout_request_id", "query_count", "last_queried_at",
        "requested_by", "created_at", "resolved_at",
    ]
    actions = ["query_now"]

    @admin.display(description="phone")
    def masked_phone(self, obj):
        return mask_phone(obj.phone)

    @admin.action(description="Ask M-Pesa for the outcome now…", permissions=["reconcile"])
    def query_now(self, request, queryset):
        return act_with_reason(
            self, request, queryset.select_related("sale"), title="Ask M-Pesa for the outcome now",
            intro="M-Pesa is asked (STK Query) about each prompt and its answer is applied, as the sweep does.",
            do=lambda stk, reason: services.query_stk_request_now(stk_request_id=stk.pk, user=request.user,
                                                                  reason=reason),
            describe=lambda stk: f"Prompt for sale {stk.sale.receipt_number} (KES {stk.amount})",
        )


@admin.register(MpesaTransaction)
class MpesaTransactionAdmin(ReconcileMixin, ReadOnlyAdminMixin, ShopScopedAdmin):
    # The button next to the money, so it stays in view on a tablet; the long note last.
    list_display = ["time", "receipt_number", "amount", "next_step", "source", "match_status", "sale", "note", "shop"]
    list_filter = [PaymentQueueFilter, "match_status", "source", "created_at", shop_filter()]
    list_select_related = ["sale", "shop"]
    code_search_fields = ("receipt_number", "bill_ref_number", "sale__receipt_number",
                          "stk_request__checkout_request_id")
    search_help_text = "An M-Pesa code, an account number, a sale's receipt number or a CheckoutRequestID."
    # No date hierarchy: its year links would read every row of the queue; the date filter does not.
    # The payer's number is shown masked: the raw callback keeps it for an audit that needs it.
    readonly_fields = [field.name if field.name != "msisdn" else "masked_msisdn"
                       for field in MpesaTransaction._meta.fields]
    fields = readonly_fields
    change_form_template = "admin/mpesa/mpesatransaction/change_form.html"
    actions = ["refund_overpayments"]

    def get_list_display(self, request):
        # Columns that say the same on every row are left out, so the note fits a laptop's width:
        # the shop for a manager (theirs), the status and sale in the unmatched queue (none yet).
        same = {"shop"} if shop_scope(request) is not None else set()
        if request.GET.get("queue") == "unmatched":
            same |= {"match_status", "sale"}
        return [name for name in super().get_list_display(request) if name not in same]

    @admin.display(description="time", ordering="created_at")
    def time(self, obj):
        return short_time(obj.created_at)

    @admin.display(description="phone")
    def masked_msisdn(self, obj):
        return mask_phone(obj.msisdn)

    @admin.display(description="note")
    def note(self, obj):
        if obj.resolution:
            return obj.resolution
        if obj.excess_amount:
            return f"KES {obj.excess_amount:,.2f} more than the sale needed: to refund. {obj.review_reason}".strip()
        return obj.review_reason

    @admin.display(description="")
    def next_step(self, obj):
        if obj.match_status == MpesaTransaction.Match.UNMATCHED and obj.receipt_number:
            return format_html('<a class="button" href="{}">Assign to a sale</a>',
                               reverse("admin:mpesa_mpesatransaction_assign", args=[obj.pk]))
        return ""

    @admin.action(description="Mark the overpayment refunded…", permissions=["reconcile"])
    def refund_overpayments(self, request, queryset):
        return act_with_reason(
            self, request, queryset, title="Mark refunded", form_class=RefundForm,
            intro="For a payment that paid its sale with money to spare, the excess is marked refunded; for one "
                  "that paid no sale, all of it. The payment itself stays in the ledger as received.",
            do=lambda tx, reason, method: services.refund_overpayment(
                transaction_id=tx.pk, user=request.user, method=method, reason=reason).resolution,
            describe=lambda tx: f"M-Pesa {tx.receipt_number or tx.pk} (KES {tx.amount:,.2f})",
        )

    def get_urls(self):
        return [
            path("<int:object_id>/assign/", self.admin_site.admin_view(self.assign_view),
                 name="mpesa_mpesatransaction_assign"),
            path("settlement/", self.admin_site.admin_view(self.settlement_view),
                 name="mpesa_mpesatransaction_settlement"),
            *super().get_urls(),
        ]

    def settlement_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        shops = Shop.objects.order_by("name")
        if shop_scope(request) is not None:
            shops = shops.filter(pk=shop_scope(request))
        form = SettlementForm(request.GET or None, shops=shops, initial={"date": timezone.localdate()})
        if request.GET and not form.is_valid():
            if "shop" in form.errors and request.GET.get("shop", "").isdigit():
                raise Http404("No such shop among yours.")
            settlement = None
        else:
            data = form.cleaned_data if form.is_bound else {}
            shop = data.get("shop") or shops.first()
            if shop is None:
                raise Http404("No shop yet.")
            settlement = services.daily_settlement(shop_id=shop.pk, day=data.get("date") or timezone.localdate())
            settlement["shop"] = shop
            if request.GET.get("format") == "csv":
                return _settlement_csv(settlement)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts, "title": "Daily settlement", "form": form, "s": settlement,
        }
        return TemplateResponse(request, "admin/mpesa/mpesatransaction/settlement.html", context)

    def assign_view(self, request, object_id):
        tx = self.get_object(request, str(object_id))  # 404 outside the manager's shop
        if not may_reconcile(request):
            raise PermissionDenied
        shops = Shop.objects.all()
        if shop_scope(request) is not None:
            shops = shops.filter(pk=shop_scope(request))
        if tx.shop_id is not None:
            shops = shops.filter(pk=tx.shop_id)
        sales = Sale.objects.select_related("till__shop").filter(shop__in=shops)
        form = AssignPaymentForm(request.POST or None, sales=sales)
        if request.method == "POST" and form.is_valid():
            try:
                result = services.assign_mpesa_payment(transaction_id=tx.pk, sale_id=form.cleaned_data["sale"].pk,
                                                       user=request.user, reason=form.cleaned_data["reason"])
            except SaleError as error:
                form.add_error(None, str(error))
            else:
                self.message_user(request, result["message"], messages.SUCCESS)
                return redirect(reverse("admin:mpesa_mpesatransaction_changelist") + "?queue=unmatched")
        query = request.GET.get("q", "").strip()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts, "title": f"Assign M-Pesa {tx.receipt_number} to a sale", "tx": tx, "form": form,
            "query": query,
            "candidates": [(sale, sale.status == Sale.Status.PENDING and math.ceil(sale.balance_due) == tx.amount)
                           for sale in _sale_candidates(sales, shops, query)],
            "phone": mask_phone(tx.msisdn),
        }
        return TemplateResponse(request, "admin/mpesa/mpesatransaction/assign.html", context)


CANDIDATES = 20


def _sale_candidates(sales, shops, query: str) -> list:
    """The sale picker: a receipt number typed in full or as its digits, else the newest pending
    sales. Exact receipt numbers only, so the unique index answers at any size."""
    if not query:
        return list(sales.filter(status=Sale.Status.PENDING).order_by("-created_at")[:CANDIDATES])
    if query.isdigit():
        numbers = [f"{code}-{int(query):0{11 - len(code)}d}" for code in shops.values_list("code", flat=True)]
    else:
        numbers = [query.upper()]
    return list(sales.filter(receipt_number__in=numbers)[:CANDIDATES])


@admin.register(CallbackLog)
class CallbackLogAdmin(ReconcileMixin, ChainWideAdmin):
    list_display = ["received_at", "kind", "status", "source_ip", "checkout_request_id", "trans_id", "attempts"]
    list_filter = [CallbackQueueFilter, "status", "kind", "received_at"]
    code_search_fields = ("checkout_request_id", "trans_id")
    search_help_text = "A CheckoutRequestID or an M-Pesa code (TransID)."
    fields = readonly_fields = ["kind", "status", "error", "received_at", "processed_at", "attempts", "source_ip",
                                "path", "checkout_request_id", "trans_id", "headers", "body_text"]
    actions = ["reprocess"]

    @admin.display(description="body (phone numbers masked)")
    def body_text(self, obj):
        return format_html("<pre>{}</pre>", redact(bytes(obj.body).decode("utf-8", "replace")))

    @admin.action(description="Process the selected callbacks again…", permissions=["reconcile"])
    def reprocess(self, request, queryset):
        return act_with_reason(
            self, request, queryset, title="Process again",
            intro="Each callback is applied again from its stored body, as the sweep does; one already processed "
                  "or rejected is refused.",
            do=lambda log, reason: services.reprocess_callback(callback_id=log.pk, user=request.user, reason=reason),
            describe=lambda log: f"{log.get_kind_display()} #{log.pk} of {short_time(log.received_at)}",
        )


@admin.register(DarajaCall)
class DarajaCallAdmin(ChainWideAdmin):
    list_display = ["created_at", "method", "endpoint", "status_code", "duration_ms", "outcome"]
    list_filter = ["endpoint", "status_code", "created_at"]
    search_fields = ["endpoint", "request_id", "outcome"]
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in DarajaCall._meta.fields]


# The reconciliation queues on the admin index: (model, its ?queue= value, what to do).
QUEUES = [
    (MpesaTransaction, "unmatched", "paid to the till or paybill, no sale yet: assign"),
    (Sale, "stale", "abandoned at a till: complete or cancel"),
    (MpesaTransaction, "mismatch", "under, over and double payments: refund or review"),
    (StkRequest, "unknown", "ask M-Pesa now"),
    (CallbackLog, "stuck", "process again"),
]


QUEUE_COUNT_CAP = 999


def reconciliation_queues(request) -> list[dict]:
    """Each queue this user may see, with its count over the rows they may see (one COUNT each)."""
    queues = []
    for model, value, hint in QUEUES:
        model_admin = admin.site._registry[model]
        if not model_admin.has_view_permission(request):
            continue
        if isinstance(model_admin, ChainWideAdmin) and shop_scope(request) is not None:
            continue
        queue_filter = next(f for f in model_admin.list_filter if isinstance(f, type) and issubclass(f, QueueFilter))
        label, rows = queue_filter.queues[value]
        # Counted up to a cap: "1000+" says enough, and costs no more with a million rows.
        count = (model_admin.get_queryset(request) & rows()).order_by()[:QUEUE_COUNT_CAP + 1].count()
        opts = model._meta
        queues.append({
            "label": label, "hint": hint, "count": count,
            "count_label": f"{QUEUE_COUNT_CAP}+" if count > QUEUE_COUNT_CAP else str(count),
            "url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist") + f"?queue={value}",
        })
    return queues


def _kes(amount) -> str:
    # Shillings and cents whatever the database summed them as (SQLite drops the cents of a round sum).
    return "" if amount is None else f"{amount:.2f}"


def _settlement_csv(s: dict) -> HttpResponse:
    """The settlement as rows a spreadsheet opens: section, item, count, amount, then the lists."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="settlement-{s["shop"].code}-{s["day"]:%Y-%m-%d}.csv"'
    out = csv.writer(response)
    out.writerow(["section", "item", "count", "amount (KES)", "detail"])
    for status, row in s["sales"].items():
        out.writerow(["sales", status, row["count"], _kes(row["total"]), f"paid {_kes(row['paid'])}"])
    for row in s["payments"]:
        out.writerow(["payments", row["method"], row["count"], _kes(row["applied"]),
                      f"received {_kes(row['received'])}, change {_kes(row['change'])}"])
    out.writerow(["mpesa", "ledger total", s["ledger"]["count"], _kes(s["ledger"]["total"]), ""])
    for row in s["ledger"]["by_source"]:
        out.writerow(["mpesa", f"ledger from {row['label']}", row["count"], _kes(row["total"]), ""])
    out.writerow(["mpesa", "pull total", s["ledger"]["pull_count"], _kes(s["ledger"]["pull"]), ""])
    out.writerow(["mpesa", "on the day's sales", "", _kes(s["mpesa_on_sales"]), ""])
    out.writerow(["difference", "ledger minus the day's sales", "", _kes(s["difference"]), ""])
    out.writerow(["difference", "unexplained", "", _kes(s["unexplained"]), ""])
    out.writerow(["difference", "excess to refund", "", _kes(s["excess_to_refund"]), ""])
    for tx in s["not_on_days_sales"]:
        out.writerow(["received, not on the day's sales", tx.receipt_number or tx.pk, "", _kes(tx.amount),
                      f"{tx.get_match_status_display()}; sale {tx.sale or '-'}; {tx.resolution or tx.review_reason}"])
    for payment in s["entered_elsewhere"]:
        tx = getattr(payment, "mpesa_transaction", None)
        out.writerow(["on the day's sales, received another day", payment.reference, "", _kes(payment.tendered),
                      f"sale {payment.sale.receipt_number}; ledger {tx.created_at:%Y-%m-%d}" if tx else
                      f"sale {payment.sale.receipt_number}; not in the ledger"])
    for tx in s["excess_rows"]:
        out.writerow(["excess to refund", tx.receipt_number, "", _kes(tx.excess_amount), f"sale {tx.sale or '-'}"])
    for sale in s["open_sales"]:
        out.writerow(["sale not completed", sale.receipt_number, "", _kes(sale.total), f"{sale.status}, paid {_kes(sale.amount_paid)}"])
    for shift in s["drawers"]:
        out.writerow(["cash drawer", f"{shift.till.name} shift #{shift.pk}", "", _kes(shift.cash_difference),
                      f"expected {_kes(shift.expected_cash)}, counted {_kes(shift.counted_cash)}"])
    return response
