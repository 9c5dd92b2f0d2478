"""The cashier's pages: the till, today's sales. The JSON endpoints the till calls are in api.py."""

from datetime import datetime, time
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from .forms import ThrottledLoginForm
from .models import Sale, Shift, Staff
from .services import (SaleError, ShiftError, close_shift, find_cashier_till, find_open_shift, open_shift,
                       parse_shillings, record_cash_movement, shift_report, why_shift_cannot_close)

NOT_STAFF_MESSAGE = (
    "Your login is not set up as staff of a shop, so it cannot use the till. "
    "Ask a manager to add you under Staff in the admin."
)


def _get_staff(user) -> Staff | None:
    # pos.backends.StaffBackend has already joined the Staff row to the user.
    if not user.is_authenticated:
        return None
    try:
        return user.staff
    except Staff.DoesNotExist:
        return None


def _staff_or_404(request) -> Staff:
    """The logged-in user's Staff row, with shop and default till loaded.

    A login that is not staff gets PermissionDenied (403, in words); a sale of another shop is a 404
    through `_sale_or_404`, so nobody learns which sale ids exist elsewhere.
    """
    staff = _get_staff(request.user)
    if staff is None:
        raise PermissionDenied(NOT_STAFF_MESSAGE)
    return staff


def _sale_or_404(staff: Staff, sale_id: int) -> Sale:
    return get_object_or_404(Sale.objects.select_related("till", "cashier"), pk=sale_id, shop_id=staff.shop_id)


def _staff_page(view):
    """Login required; a login without a Staff row sees a page saying what to do (403)."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        staff = _get_staff(request.user)
        if staff is None:
            return render(request, "pos/no_staff.html", {"message": NOT_STAFF_MESSAGE}, status=403)
        return view(request, staff, *args, **kwargs)

    return wrapper


class StaffLoginView(LoginView):
    """The login form: managers and owners land in the back office, everyone else on the till."""

    form_class = ThrottledLoginForm

    def get_redirect_url(self):
        # `login_required` sends everyone who opens the site to login with next=/ (the till): that is
        # not a wish for the till, so it does not overrule the back office for a manager.
        url = super().get_redirect_url()
        return "" if url == reverse("pos:home") else url

    def get_default_redirect_url(self):
        user = self.request.user
        staff = _get_staff(user)
        if user.is_staff and (staff is None or staff.role != Staff.Role.CASHIER):
            return reverse("admin:index")
        return super().get_default_redirect_url()


def _url_template(name: str) -> str:
    """A URL with `{id}` where the sale id goes, for the till's JavaScript."""
    return reverse(name, args=[987654321]).replace("987654321", "{id}")


@_staff_page
def home(request, staff):
    try:
        till, till_error = find_cashier_till(staff), ""
    except SaleError as error:
        till, till_error = None, str(error)
    if till is not None and find_open_shift(till_id=till.pk) is None:
        # Every sale belongs to a shift: the cashier counts the float in first.
        return redirect("pos:shift-open")
    config = {
        "urls": {
            "createSale": reverse("pos:create-sale"),
            "products": reverse("pos:products"),
            "sale": _url_template("pos:sale"),
            "saleCash": _url_template("pos:sale-cash"),
            "saleCancel": _url_template("pos:sale-cancel"),
            "recentSales": reverse("pos:recent-sales"),
        },
        "shop": staff.shop.name,
        "till": till.name if till else "",
    }
    return render(request, "pos/till.html", {
        "staff": staff, "till": till, "till_error": till_error, "till_config": config,
    })


@_staff_page
def recent_sales(request, staff):
    """Today's sales of this cashier in this shop, newest first, with a reprint link."""
    today = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    sales = (
        Sale.objects.filter(shop_id=staff.shop_id, cashier=request.user, created_at__gte=today)
        .select_related("till")
        .prefetch_related("payments")
    )
    rows = []
    for sale in sales:
        methods = sorted({payment.get_method_display() for payment in sale.payments.all()})
        rows.append({"sale": sale, "methods": " + ".join(methods) or "—",
                     "receipt_url": reverse("receipts:html", args=[sale.pk])})
    completed = [row["sale"] for row in rows if row["sale"].status == Sale.Status.COMPLETED]
    return render(request, "pos/recent_sales.html", {
        "staff": staff, "rows": rows, "today": timezone.localdate(),
        "completed_count": len(completed), "completed_total": sum(s.total for s in completed),
    })


# --- Shifts: open with a float, pay-ins and pay-outs, close with a blind count, X and Z reports ----

def _shift_till(staff: Staff):
    """The till the cashier works at, or None when the shop has none open (the till page says why)."""
    try:
        return find_cashier_till(staff)
    except SaleError:
        return None


@_staff_page
def shift_open(request, staff):
    till = _shift_till(staff)
    if till is None:
        return redirect("pos:home")
    if find_open_shift(till_id=till.pk) is not None:
        return redirect("pos:shift")
    error = ""
    if request.method == "POST":
        try:
            open_shift(till=till, user=request.user, opening_float=request.POST.get("opening_float"))
        except ShiftError as refusal:
            error = str(refusal)
        else:
            return redirect("pos:home")
    last = Shift.objects.filter(till=till, status=Shift.Status.CLOSED).select_related("closed_by").first()
    return render(request, "pos/shift_open.html", {
        "staff": staff, "till": till, "error": error, "value": request.POST.get("opening_float", ""),
        "last_shift": last,
    })


@_staff_page
def shift_detail(request, staff):
    """The open shift: its X report and the pay-in / pay-out form."""
    till = _shift_till(staff)
    shift = find_open_shift(till_id=till.pk) if till else None
    if shift is None:
        return redirect("pos:shift-open")
    error = ""
    if request.method == "POST":
        try:
            movement = record_cash_movement(
                shift_id=shift.pk, kind=request.POST.get("kind", ""), amount=request.POST.get("amount"),
                reason=request.POST.get("reason", ""), user=request.user,
            )
        except ShiftError as refusal:
            error = str(refusal)
        else:
            messages.success(request, f"{movement.get_kind_display().capitalize()} of KES {movement.amount:,.2f} "
                                      f"recorded: {movement.reason}.")
            return redirect("pos:shift")
    return render(request, "pos/shift_detail.html", {
        "staff": staff, "till": till, "shift": shift, "error": error, "form": request.POST,
        "report": shift_report(shift_id=shift.pk, user=request.user),
    })


@_staff_page
def shift_close(request, staff):
    """The blind count: the total counted, then a confirmation, then the Z report. The expected
    figure is never on this page."""
    till = _shift_till(staff)
    shift = find_open_shift(till_id=till.pk) if till else None
    if shift is None:
        closed = Shift.objects.filter(till=till, status=Shift.Status.CLOSED).first() if till else None
        if request.method == "POST" and closed is not None:
            # A second press of "Close shift": the first one closed it.
            return redirect("pos:shift-report", shift_id=closed.pk)
        return redirect("pos:shift-open")
    step, error, counted = "count", "", None
    note = request.POST.get("close_note", "")
    blocker = why_shift_cannot_close(shift=shift)
    if request.method == "POST" and not blocker:
        try:
            counted = parse_shillings(request.POST.get("counted_cash"), what="the cash counted")
            if request.POST.get("confirm") == "1":
                close_shift(shift_id=shift.pk, counted_cash=counted, user=request.user, note=note)
                return redirect("pos:shift-report", shift_id=shift.pk)
            step = "confirm"
        except ShiftError as refusal:
            error = str(refusal)
    return render(request, "pos/shift_close.html", {
        "staff": staff, "till": till, "shift": shift, "step": step, "error": error, "blocker": blocker,
        "counted": counted, "note": note, "value": request.POST.get("counted_cash", ""),
    })


@_staff_page
def shift_report_page(request, staff, shift_id: int):
    """A shift's X report (open) or Z report (closed), for any staff of its shop; printable."""
    shift = get_object_or_404(Shift.objects.select_related("till"), pk=shift_id, shop_id=staff.shop_id)
    return render(request, "pos/shift_report.html", {
        "staff": staff, "till": shift.till, "shift": shift,
        "report": shift_report(shift_id=shift.pk, user=request.user),
    })
