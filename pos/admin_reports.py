"""The back office's sales dashboard and sales CSV export: pages of SaleAdmin (see its get_urls).

Owners see every shop and may pick one; a manager sees their own shop only, and another shop's id
in the address is a 404, as for any of its records.
"""

from datetime import timedelta

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone

from comolor.csv_export import stream_csv
from inventory.admin import shop_scope

from . import charts
from .models import Shop
from .reports import sales_csv_rows, sales_dashboard

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def visible_shops(request):
    shop_id = shop_scope(request)
    shops = Shop.objects.order_by("name")
    return shops if shop_id is None else shops.filter(pk=shop_id)


def chosen_shop(request, shops) -> Shop | None:
    """The shop named by ?shop=, which must be one the user may see (else 404); None for all."""
    value = request.GET.get("shop", "")
    if not value:
        return None
    shop = shops.filter(pk=value).first() if value.isdigit() else None
    if shop is None:
        raise Http404("No such shop in your back office.")
    return shop


def scoped_shop_ids(request, shop: Shop | None) -> list[int] | None:
    """The shops a report covers: the chosen one, else the manager's own, else (owners) every shop."""
    if shop is not None:
        return [shop.pk]
    own = shop_scope(request)
    return None if own is None else [own]


class DashboardForm(forms.Form):
    date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
                           error_messages={"invalid": "Enter the day as YYYY-MM-DD, e.g. 2026-11-28."})


def dashboard_view(model_admin, request):
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    shops = visible_shops(request)
    shop = chosen_shop(request, shops)
    form = DashboardForm(request.GET)
    today = timezone.localdate()
    day = (form.cleaned_data["date"] if form.is_valid() else None) or today
    if not form.errors:
        form = DashboardForm(initial={"date": day})
    figures = sales_dashboard(day=day, shop_ids=scoped_shop_ids(request, shop))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Sales dashboard",
        "subtitle": shop.name if shop else ("all shops" if shop_scope(request) is None else shops.first()),
        "form": form,
        "shops": shops if shop_scope(request) is None else [],
        "shop": shop,
        "day": day,
        "is_today": day == today,
        "previous_day": day - timedelta(days=1),
        "next_day": day + timedelta(days=1) if day < today else None,
        "figures": figures,
        **_charts(figures),
        "export_form": SalesExportForm(shops=shops, initial={
            "date_from": figures["period"].week_start.date(), "date_to": day, "shop": shop}),
        "low_stock_url": _low_stock_url(shop),
    }
    return TemplateResponse(request, "admin/pos/sale/dashboard.html", context)


def _charts(figures) -> dict:
    """The figures as chart geometry and bar lengths for the template."""
    period = figures["period"]
    hours = figures["per_hour"]
    busy = [hour for hour, row in hours.items() if row["week_total"]]
    first, last = min(busy + [7]), max(busy + [20])
    hour_points = [(f"{hour:02d}", hours[hour]["day_total"],
                    f"{hour:02d}:00–{hour:02d}:59: KES {hours[hour]['day_total']:,.0f} in "
                    f"{hours[hour]['day_count']} sales (week's daily average KES {hours[hour]['week_average']:,.0f})")
                   for hour in range(first, last + 1)]
    day_points, future = [], set()
    for i, row in enumerate(figures["per_weekday"]):
        label = WEEKDAYS[row["date"].weekday()]
        day_points.append((label, row["total"], f"{formats.date_format(row['date'], 'l j F')}: "
                                                f"KES {row['total']:,.0f} in {row['count']} sales"))
        if row["date"] > period.day:
            future.add(i)
    shops = figures["per_shop"]
    methods = figures["per_method"]
    top = figures["top_products"]
    return {
        "hour_chart": charts.column_chart(hour_points, line=[hours[h]["week_average"] for h in range(first, last + 1)]),
        "day_chart": charts.column_chart(day_points, muted=future),
        "shop_rows": list(zip(shops, charts.percentages([row["week_total"] for row in shops]),
                              charts.percentages([row["day_total"] for row in shops]))),
        "method_rows": _method_rows(methods),
        "top_rows": list(zip(top, charts.percentages([row["revenue"] for row in top]))),
        "low_rows": [(level, min(100, round(level.on_hand * 100 / level.product.reorder_level))
                      if level.product.reorder_level else 0) for level in figures["low_stock"]],
    }


def _method_rows(methods) -> list[dict]:
    """Each payment method's share of the day's and the week's takings (stacked bars)."""
    rows = []
    for key in ("day_total", "week_total"):
        whole = sum(row[key] for row in methods)
        offset = 0.0
        parts = []
        for i, row in enumerate(methods):
            share = float(row[key]) * 100 / float(whole) if whole else 0
            parts.append({"method": row["method"], "amount": row[key], "share": round(share, 1),
                          "offset": round(offset, 1), "tone": i % 3})
            offset += share
        rows.append({"period": "today" if key == "day_total" else "this week", "total": whole, "parts": parts})
    return rows


def _low_stock_url(shop: Shop | None) -> str:
    url = reverse("admin:inventory_stocklevel_changelist") + "?stock=low"
    return url + (f"&shop__id__exact={shop.pk}" if shop else "")


class SalesExportForm(forms.Form):
    date_from = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
                                error_messages={"required": "Enter the first day to export.",
                                                "invalid": "Enter the first day as YYYY-MM-DD."})
    date_to = forms.DateField(label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
                              error_messages={"required": "Enter the last day to export.",
                                              "invalid": "Enter the last day as YYYY-MM-DD."})
    shop = forms.ModelChoiceField(queryset=Shop.objects.none(), required=False, empty_label="All shops")

    def __init__(self, *args, shops, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["shop"].queryset = shops
        if len(shops) == 1:
            self.fields["shop"].empty_label = None

    def clean(self):
        data = super().clean()
        first, last = data.get("date_from"), data.get("date_to")
        if first and last and last < first:
            raise forms.ValidationError(
                f"The last day ({last:%d %b %Y}) is before the first ({first:%d %b %Y}): swap them or pick again."
            )
        return data


def export_sales_view(model_admin, request):
    """With dates: the sales as a CSV download. Without: the form that asks for them."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    shops = visible_shops(request)
    shop = chosen_shop(request, shops)
    form = SalesExportForm(request.GET or None, shops=shops)
    if form.is_bound and form.is_valid():
        first, last = form.cleaned_data["date_from"], form.cleaned_data["date_to"]
        name = shop.code if shop else ("all-shops" if shop_scope(request) is None else shops.first().code)
        return stream_csv(f"sales-{name}-{first:%Y-%m-%d}-to-{last:%Y-%m-%d}.csv",
                          sales_csv_rows(date_from=first, date_to=last, shop_ids=scoped_shop_ids(request, shop)))
    if not form.is_bound:
        today = timezone.localdate()
        form = SalesExportForm(shops=shops, initial={"date_from": today.replace(day=1), "date_to": today})
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Export sales to CSV",
        "form": form,
    }
    return TemplateResponse(request, "admin/pos/sale/export.html", context)
