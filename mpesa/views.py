"""Safaricom's callbacks (stored raw first, answered fast) and the till's M-Pesa endpoints."""

import logging

from django.conf import settings
from django.db import DatabaseError, transaction
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from rest_framework import serializers, status
from rest_framework.response import Response

from pos.api import CashierAPIView, cashier_get
from pos.views import _sale_or_404, _staff_or_404

from . import services
from .models import CallbackLog

logger = logging.getLogger(__name__)
# Never stored: a session or credentials sent to a callback URL by mistake.
_UNSTORED_HEADERS = {"cookie", "authorization", "proxy-authorization"}


class _AnswerThenProcess(JsonResponse):
    """Safaricom's answer, sent before the stored callback is applied.

    A WSGI server calls close() once the response is on the wire (PEP 3333: gunicorn, runserver and
    Django's test client alike), and the callback is applied there, in the same worker. The raw row
    is committed already: if the worker dies in between, it stays received and the sweep applies it.
    """

    def __init__(self, answer: dict, log_id: int):
        super().__init__(answer)
        self.log_id = log_id

    def close(self):
        try:
            services.process_callback(self.log_id)
        finally:
            super().close()


def _receive(request, kind: str, answer: dict) -> JsonResponse:
    limit = settings.MPESA_CALLBACK_MAX_BYTES
    body = request.read(limit + 1)
    try:
        log = services.record_callback(
            kind=kind, body=body[:limit], truncated=len(body) > limit,
            headers={k: v for k, v in request.headers.items() if k.lower() not in _UNSTORED_HEADERS},
            remote_addr=request.META.get("REMOTE_ADDR", ""),
            forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR", ""), path=request.path,
        )
    except DatabaseError:
        # Only here does Safaricom get a non-200: nothing was stored, so nothing may be acknowledged.
        logger.exception("could not store a %s callback", kind)
        return JsonResponse({"ResultCode": 1, "ResultDesc": "Temporarily unavailable"}, status=503)
    if log.status != CallbackLog.Status.RECEIVED:
        return JsonResponse(answer)
    if settings.MPESA_CALLBACK_ANSWER_FIRST:
        return _AnswerThenProcess(answer, log.pk)
    services.process_callback(log.pk)
    return JsonResponse(answer)


def _callback_view(kind: str, answer: dict):
    # Outside ATOMIC_REQUESTS, or the raw row would roll back with a processing error.
    @csrf_exempt
    @transaction.non_atomic_requests
    @require_POST
    def view(request, token: str | None = None):
        return _receive(request, kind, answer)

    view.__name__ = f"{kind}_callback"
    return view


stk_callback = _callback_view(CallbackLog.Kind.STK, services.ACCEPTED)
c2b_confirmation = _callback_view(CallbackLog.Kind.C2B_CONFIRMATION, services.ACCEPTED)
c2b_timeout = _callback_view(CallbackLog.Kind.C2B_TIMEOUT, services.ACCEPTED)


@csrf_exempt
@transaction.non_atomic_requests
@require_POST
def c2b_validation(request, token: str | None = None):
    """Whether M-Pesa may take a C2B payment: answered within a second, whatever the database does."""
    limit = settings.MPESA_CALLBACK_MAX_BYTES
    body = request.read(limit + 1)
    answer = services.answer_c2b_validation(
        body=body[:limit], truncated=len(body) > limit,
        headers={k: v for k, v in request.headers.items() if k.lower() not in _UNSTORED_HEADERS},
        remote_addr=request.META.get("REMOTE_ADDR", ""), forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR", ""),
        path=request.path,
    )
    return JsonResponse(answer)


def healthz(request):
    return JsonResponse({"ok": True})


@cashier_get
def check_mpesa_payment(request, sale_id: int) -> dict:
    """GET /cashier/check-mpesa-payment/<id>: polled every second by the till, so one query and no DRF."""
    status = services.get_payment_status(sale_id=sale_id, user_id=request.user.pk)
    if status is None:
        raise Http404
    return status


class StartStkPaymentView(CashierAPIView):
    """POST /cashier/sales/<id>/mpesa {phone, amount?}: a prompt for a pending sale's balance or part of it."""

    class InputSerializer(serializers.Serializer):
        phone = serializers.CharField(required=False, allow_blank=True, max_length=20, default="")
        amount = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=20,
                                       default=None)

    def post(self, request, sale_id: int):
        sale = _sale_or_404(_staff_or_404(request), sale_id)
        data = self.validated(request, self.InputSerializer)
        started = services.start_stk_payment(
            sale=sale, phone=data["phone"] or sale.customer_phone, user=request.user, amount=data["amount"],
        )
        return Response({"success": True, "sale_id": sale.pk, **started}, status=status.HTTP_201_CREATED)


def _claim_response(result: dict, *, refused_status: int) -> Response:
    if result["status"] in ("refused", "expired"):
        return Response({"success": False, "error": result["message"], **result}, status=refused_status)
    code = status.HTTP_202_ACCEPTED if result["status"] == "waiting" else status.HTTP_200_OK
    return Response({"success": True, **result}, status=code)


class UnclaimedMpesaPaymentsView(CashierAPIView):
    """GET /cashier/mpesa/unclaimed: this shop's recent M-Pesa payments that paid no sale yet."""

    def get(self, request):
        staff = _staff_or_404(request)
        return Response({"success": True, "payments": services.list_unclaimed_payments(shop_id=staff.shop_id)})


class ClaimMpesaPaymentView(CashierAPIView):
    """POST /cashier/sales/<id>/mpesa-claim {code}: "the customer paid to our till", by M-Pesa code."""

    class InputSerializer(serializers.Serializer):
        code = serializers.CharField(max_length=40, error_messages={
            "required": "Type the M-Pesa code from the customer's SMS, e.g. QK12AB34CD.",
            "blank": "Type the M-Pesa code from the customer's SMS, e.g. QK12AB34CD.",
            "null": "Type the M-Pesa code from the customer's SMS, e.g. QK12AB34CD.",
            "max_length": "That is too long for an M-Pesa code (10 letters and digits, e.g. QK12AB34CD).",
            "invalid": "Type the M-Pesa code from the customer's SMS, e.g. QK12AB34CD.",
        })

    def post(self, request, sale_id: int):
        sale = _sale_or_404(_staff_or_404(request), sale_id)
        data = self.validated(request, self.InputSerializer)
        result = services.claim_mpesa_payment(sale_id=sale.pk, code=data["code"], user=request.user)
        return _claim_response(result, refused_status=status.HTTP_400_BAD_REQUEST)


class MpesaClaimStatusView(CashierAPIView):
    """GET /cashier/sales/<id>/mpesa-claim/<claim_id>: polled by the till while a claim waits."""

    def get(self, request, sale_id: int, claim_id: int):
        sale = _sale_or_404(_staff_or_404(request), sale_id)
        result = services.get_claim_status(claim_id=claim_id, user_id=request.user.pk)
        if result is None or result["sale_id"] != sale.pk:
            raise Http404
        return _claim_response(result, refused_status=status.HTTP_200_OK)
