"""Receipt pages for the till (HTML, PNG preview, print status and buttons) and the public QR check."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from pos.models import Shift
from pos.services import shift_report
from pos.views import _get_staff, _sale_or_404

from . import services
from .printing import PrintError
from .rendering import QrCode, columns_for, layout_receipt, layout_shift_report, qr_svg, render_png

PRINTABLE_MM = {58: 48, 80: 72}


def _get_sale(request, sale_id: int):
    """The sale, if the logged-in user is staff of its shop; anyone else gets a 404."""
    staff = _get_staff(request.user)
    if staff is None:
        raise Http404
    return _sale_or_404(staff, sale_id)


@require_GET
@login_required
def receipt_html(request, sale_id: int):
    sale = _get_sale(request, sale_id)
    receipt = services.build_receipt(sale.pk, copy=request.GET.get("copy") == "1")
    paper = _paper(request, sale.till_id)
    rows = [
        {"qr": mark_safe(qr_svg(op.data, op.size))} if isinstance(op, QrCode) else {"row": op}
        for op in layout_receipt(receipt, paper["columns"])
    ]
    context = {"receipt": receipt, "sale": sale, "rows": rows, **paper}
    return render(request, "receipts/receipt.html", context)


def _paper(request, till_id: int) -> dict:
    """How a slip page lays out: the till printer's paper (or ?width=58|80) in printer columns."""
    paper_width, profile = services.choose_paper(till_id, request.GET.get("width"))
    columns = columns_for(paper_width, profile)
    # A printer column is the printable width over the columns; a monospace glyph is 0.6 em wide.
    font_mm = PRINTABLE_MM[paper_width] / columns / 0.6
    return {"columns": columns, "paper_width": paper_width, "font_mm": f"{font_mm:.3f}",
            "autoprint": request.GET.get("print") == "1"}


@require_GET
@login_required
def receipt_preview(request, sale_id: int):
    sale = _get_sale(request, sale_id)
    paper_width, profile = services.choose_paper(sale.till_id, request.GET.get("width"))
    receipt = services.build_receipt(sale.pk, copy=request.GET.get("copy") == "1")
    response = HttpResponse(render_png(receipt, paper_width=paper_width, profile=profile), content_type="image/png")
    response["Cache-Control"] = "private, no-store"
    return response


@require_GET
def print_status(request, sale_id: int):
    sale = _get_sale(request, sale_id)
    return JsonResponse(services.describe_print_status(sale.pk))


@require_POST
def print_receipt(request, sale_id: int):
    """Retry print: resend a failed receipt, or print it if it never was."""
    sale = _get_sale(request, sale_id)
    try:
        services.retry_sale_print(sale.pk)
    except PrintError as error:
        return JsonResponse({"success": False, "error": str(error)}, status=400)
    return JsonResponse({"success": True, **services.describe_print_status(sale.pk)})


@require_POST
def reprint_receipt(request, sale_id: int):
    sale = _get_sale(request, sale_id)
    try:
        services.reprint_receipt(sale.pk)
    except PrintError as error:
        return JsonResponse({"success": False, "error": str(error)}, status=400)
    return JsonResponse({"success": True, **services.describe_print_status(sale.pk)})


@require_GET
def verify_receipt(request, receipt_number: str, token: str):
    """Public: what a customer or KRA officer sees after scanning the receipt's QR code."""
    sale = services.verify_receipt(receipt_number, token)
    if sale is None:
        return render(request, "receipts/verify.html", {"receipt_number": receipt_number}, status=404)
    receipt = services.build_receipt(sale.pk)
    return render(request, "receipts/verify.html", {"sale": sale, "receipt": receipt,
                                                    "base_url": settings.RECEIPTS_VERIFY_BASE_URL})


def _get_shift(request, shift_id: int) -> Shift:
    """The shift, if the logged-in user is staff of its shop; anyone else gets a 404."""
    staff = _get_staff(request.user)
    if staff is None:
        raise Http404
    return get_object_or_404(Shift, pk=shift_id, shop_id=staff.shop_id)


@require_GET
@login_required
def shift_report_html(request, shift_id: int):
    """A shift's X or Z report as the receipt printer lays it out, for printing from the browser."""
    shift = _get_shift(request, shift_id)
    report = shift_report(shift_id=shift.pk, user=request.user)
    paper = _paper(request, shift.till_id)
    rows = [{"row": op} for op in layout_shift_report(report, paper["columns"])]
    return render(request, "receipts/shift_report.html", {"report": report, "rows": rows, **paper})


@require_POST
def print_shift_report(request, shift_id: int):
    """Print a shift's report on its till's printer; back to the page it was asked from."""
    shift = _get_shift(request, shift_id)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("pos:shift-report", args=[shift.pk])
    try:
        where = services.print_shift_report(shift.pk, user=request.user)
    except PrintError as error:
        messages.error(request, f"{error} The report is not lost: print it again, or press Print in browser.")
    else:
        if where is None:
            messages.info(request, "This till prints from the browser: press Print in browser.")
        else:
            messages.success(request, "The report was sent to the receipt printer.")
    return redirect(back)
