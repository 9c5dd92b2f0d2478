"""JSON endpoints of the till (DESIGN.md §4.1). Each parses its input and calls one service.

Every answer the till gets is `{success: bool, ...}`; a refusal carries `error`, a sentence the
cashier can act on. Session login and CSRF come from DRF's SessionAuthentication.
"""

from decimal import Decimal
from functools import wraps

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, parsers, renderers, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory.services import StockError

from . import services
from .models import Sale
from .services import PaymentNotStarted, SaleError
from .views import _sale_or_404, _staff_or_404


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else f"{amount:.2f}"


def _sale_json(sale: Sale) -> dict:
    return {
        "sale_id": sale.pk,
        "receipt_number": sale.receipt_number,
        "status": sale.status,
        "total": _money(sale.total),
        "vat_total": _money(sale.vat_total),
        "amount_paid": _money(sale.amount_paid),
        "balance_due": _money(sale.balance_due),
        "customer_phone": sale.customer_phone,
        "till": sale.till.name,
        "cashier": sale.cashier.get_username(),
        "created_at": sale.created_at.isoformat(),
        "completed_at": sale.completed_at and sale.completed_at.isoformat(),
        "receipt_url": reverse("receipts:html", args=[sale.pk]),
        "lines": [
            {"product_id": line.product_id, "name": line.name, "quantity": line.quantity,
             "unit_price": _money(line.unit_price), "line_total": _money(line.line_total),
             "tax_band": line.tax_band, "vat_amount": _money(line.vat_amount)}
            for line in sale.lines.all()
        ],
        "payments": [
            {"method": payment.method, "amount": _money(payment.amount), "tendered": _money(payment.tendered),
             "change_given": _money(payment.change_given), "reference": payment.reference,
             "created_at": payment.created_at.isoformat()}
            for payment in sale.payments.all()
        ],
    }


def _first_message(detail) -> str:
    """The first message of DRF's nested error structure (dicts of lists of dicts...)."""
    while isinstance(detail, (dict, list)):
        detail = next(iter(detail.values() if isinstance(detail, dict) else detail), "")
    return str(detail)


class _PhoneField(serializers.RegexField):
    """A phone number as typed (07.., 254.., +254 7.., spaces, dashes); kept as its digits.

    The app that takes the payment turns it into 2547XXXXXXXX; here it only has to fit a sale row.
    """

    def __init__(self, **kwargs):
        super().__init__(r"^\+?(?:\d[ -]?){9,12}$", **kwargs)

    def to_internal_value(self, data):
        return "".join(ch for ch in super().to_internal_value(data) if ch.isdigit())


class _JSONParser(parsers.JSONParser):
    """JSON nested deeper than Python can follow is a malformed request like any other, not a crash."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON nested too deeply.") from None


class _JSONRenderer(renderers.JSONRenderer):
    # Escaped ASCII: an error that quotes a hostile request's lone surrogate is still valid JSON.
    ensure_ascii = True


LOGGED_OUT = "You are logged out. Log in again to use the till."
NO_SUCH_SALE = "No such sale in this shop."


class CashierAPIView(APIView):
    """Turns every refusal into `{success: false, error}` with a status the till understands."""

    parser_classes = [_JSONParser, parsers.FormParser, parsers.MultiPartParser]
    renderer_classes = [_JSONRenderer]

    def handle_exception(self, exc):
        if isinstance(exc, (SaleError, StockError)):
            return Response({"success": False, "error": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        if isinstance(exc, RequestDataTooBig):
            # Django would answer with an HTML page the till cannot show.
            exc = exceptions.ParseError(
                "The till sent far more data than a sale needs, so the server did not read it. Reload the page "
                "and try again."
            )
        elif isinstance(exc, exceptions.UnsupportedMediaType):
            exc = exceptions.ParseError(
                "The till sent a request the server could not read (not JSON). Reload the page and try again."
            )
        elif isinstance(exc, exceptions.ParseError):
            exc = exceptions.ParseError(
                "The till sent a request the server could not read (malformed JSON). Reload the page and try again."
            )
        response = super().handle_exception(exc)
        if response.status_code == status.HTTP_404_NOT_FOUND:
            error = NO_SUCH_SALE
        elif isinstance(exc, exceptions.NotAuthenticated):
            error = LOGGED_OUT
        elif "CSRF" in _first_message(response.data):
            error = "This page is out of date (security check failed). Reload the page and try again."
        else:
            error = _first_message(response.data)
        response.data = {"success": False, "error": error}
        return response

    def validated(self, request, serializer_class) -> dict:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


def _till_json(data: dict, status: int = 200) -> JsonResponse:
    # The bytes _JSONRenderer sends: compact, escaped ASCII.
    return JsonResponse(data, status=status, json_dumps_params={"separators": (",", ":")})


def cashier_get(view):
    """A read-only till endpoint as a plain Django view that returns a dict, for what the till polls.

    DRF's request cycle (negotiation, parsers, renderer, permission and throttle checks) costs about
    0.2 ms of Python per request, as much as the poll's own query.
    The refusals are CashierAPIView's, in the same words: logged out 403, Http404 404, and 405 for
    any method but GET and HEAD.
    """

    # Nothing but GET and HEAD reaches the view: a POST is refused in JSON, not by Django's CSRF page.
    @csrf_exempt
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return _till_json({"success": False, "error": LOGGED_OUT}, status=status.HTTP_403_FORBIDDEN)
        if request.method not in ("GET", "HEAD"):
            response = _till_json({"success": False, "error": f'Method "{request.method}" not allowed.'},
                                  status=status.HTTP_405_METHOD_NOT_ALLOWED)
            response["Allow"] = "GET, HEAD"
            return response
        try:
            return _till_json(view(request, *args, **kwargs))
        except Http404:
            return _till_json({"success": False, "error": NO_SUCH_SALE}, status=status.HTTP_404_NOT_FOUND)

    return wrapper


_TENDERED_ERRORS = {
    "invalid": "Cash tendered must be an amount in shillings, e.g. 500 or 99.50.",
    "max_digits": "Cash tendered is far too large. Check the amount.",
    "max_whole_digits": "Cash tendered is far too large. Check the amount.",
    "max_decimal_places": "Cash tendered can have at most 2 decimal places (cents).",
    "min_value": "Cash tendered cannot be negative.",
    "null": "Enter the cash the customer handed over.",
    "required": "Enter the cash the customer handed over.",
}
_NOT_AN_OBJECT = "The till sent a request the server could not read (expected a JSON object). Reload the page."


class CreateSaleView(CashierAPIView):
    """POST /cashier/create-sale: cash sales complete at once; M-Pesa sales start a prompt; "later"
    keeps the sale pending for a payment that follows (a payment to the shop's till, claimed by its code)."""

    class InputSerializer(serializers.Serializer):
        default_error_messages = {"invalid": _NOT_AN_OBJECT}

        items = serializers.ListField(
            child=serializers.DictField(error_messages={
                # DRF formats these messages: braces are doubled.
                "not_a_dict": "Each item must be an object such as {{\"barcode\": \"…\", \"quantity\": 1}}.",
            }),
            error_messages={
                "required": "The cart is empty. Scan or search for an item first.",
                "null": "The cart is empty. Scan or search for an item first.",
                "not_a_list": "The items must be a list of {{barcode | sku | product_id, quantity}}.",
            },
        )
        payment_method = serializers.ChoiceField(
            choices=["cash", "mpesa", "later"],
            error_messages={
                "required": "Choose a payment method: cash or M-Pesa.",
                "null": "Choose a payment method: cash or M-Pesa.",
                "invalid_choice": "Unknown payment method \"{input}\". Choose cash or M-Pesa.",
            },
        )
        customer_phone = _PhoneField(
            required=False, allow_blank=True, allow_null=True, default="",
            error_messages={"invalid": "Check the customer's phone number, e.g. 0712 345 678 or 254712345678."},
        )
        amount_tendered = serializers.DecimalField(
            max_digits=12, decimal_places=2, min_value=Decimal("0"), required=False, allow_null=True,
            error_messages=_TENDERED_ERRORS,
        )

    def post(self, request):
        staff = _staff_or_404(request)
        data = self.validated(request, self.InputSerializer)
        till = services.find_cashier_till(staff)
        items = services.parse_items(data["items"])
        phone = data.get("customer_phone") or ""
        if data["payment_method"] == "cash":
            sale, payment = services.sell_for_cash(
                cashier=request.user, till=till, items=items, tendered=data.get("amount_tendered"),
                customer_phone=phone,
            )
            body = {"change_due": _money(payment.change_given), "mpesa_checkout_id": None}
        elif data["payment_method"] == "later":
            sale = services.create_sale(cashier=request.user, till=till, items=items, customer_phone=phone)
            body = {"change_due": "0.00", "mpesa_checkout_id": None}
        else:
            try:
                sale, started = services.start_sale(
                    cashier=request.user, till=till, items=items, method=data["payment_method"],
                    customer_phone=phone,
                )
            except PaymentNotStarted as error:
                # The sale is committed and pending: the till offers cash, a retry or cancel.
                sale = error.sale
                kept = (f"Sale {sale.receipt_number} is saved and waiting for payment: send the prompt again, "
                        "take cash, or cancel it.")
                return Response(
                    {"success": False, "error": str(error), "message": kept, **self._summary(sale),
                     "sale": _sale_json(sale)},
                    status=status.HTTP_400_BAD_REQUEST,
                )
            body = {"change_due": "0.00", "mpesa_checkout_id": None, **started}
        return Response(
            {"success": True, **self._summary(sale), **body, "sale": _sale_json(sale)},
            status=status.HTTP_201_CREATED,
        )

    @staticmethod
    def _summary(sale: Sale) -> dict:
        return {"sale_id": sale.pk, "receipt_number": sale.receipt_number, "total": _money(sale.total)}


class SaleDetailView(CashierAPIView):
    """GET /cashier/sales/<id>: the sale as the till shows it."""

    def get(self, request, sale_id: int):
        sale = _sale_or_404(_staff_or_404(request), sale_id)
        return Response({"success": True, **_sale_json(sale)})


class SaleCashView(CashierAPIView):
    """POST /cashier/sales/<id>/cash: cash towards a pending sale (all of it, or part: split tender)."""

    class InputSerializer(serializers.Serializer):
        default_error_messages = {"invalid": _NOT_AN_OBJECT}

        amount_tendered = serializers.DecimalField(
            max_digits=12, decimal_places=2, min_value=Decimal("0"), error_messages=_TENDERED_ERRORS,
        )

    def post(self, request, sale_id: int):
        staff = _staff_or_404(request)
        sale = _sale_or_404(staff, sale_id)
        data = self.validated(request, self.InputSerializer)
        payment = services.take_cash(sale_id=sale.pk, tendered=data["amount_tendered"], user=request.user)
        sale.refresh_from_db()
        return Response({
            "success": True, **_sale_json(sale), "change_due": _money(payment.change_given),
            "cash_applied": _money(payment.amount),
        })


class SaleCancelView(CashierAPIView):
    """POST /cashier/sales/<id>/cancel: give up a pending sale (money taken stays on record)."""

    class InputSerializer(serializers.Serializer):
        default_error_messages = {"invalid": _NOT_AN_OBJECT}

        reason = serializers.CharField(
            required=False, allow_blank=True, max_length=200, default="",
            error_messages={"max_length": "Keep the reason under 200 characters."},
        )

    def post(self, request, sale_id: int):
        staff = _staff_or_404(request)
        sale = _sale_or_404(staff, sale_id)
        data = self.validated(request, self.InputSerializer)
        sale = services.cancel_sale(sale_id=sale.pk, user=request.user, reason=data["reason"])
        body = {"success": True, **_sale_json(sale)}
        if sale.amount_paid:
            body["message"] = (
                f"Sale {sale.receipt_number} cancelled. KES {sale.amount_paid:,.2f} was already paid: "
                "ask a manager to refund it."
            )
        return Response(body)


class ProductSearchView(CashierAPIView):
    """GET /cashier/products?q=: the till's search box and barcode lookup."""

    def get(self, request):
        staff = _staff_or_404(request)
        return Response(services.search_products(shop_id=staff.shop_id, query=request.query_params.get("q", "")))
