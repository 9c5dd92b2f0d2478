"""Callback paths (built from settings, never typed: DESIGN.md §4.1) and the till's M-Pesa endpoints."""

from django.conf import settings
from django.urls import path

from . import views

app_name = "mpesa"


def _callback_patterns() -> list:
    prefix = settings.MPESA_CALLBACK_PREFIX.strip("/")
    # With a secret token the token-less paths are not served at all.
    base = f"{prefix}/{settings.MPESA_CALLBACK_TOKEN}/" if settings.MPESA_CALLBACK_TOKEN else f"{prefix}/"
    return [
        path(f"{base}stk/callback", views.stk_callback, name="stk-callback"),
        # Each push carries its own unguessable token: callback_url("stk-callback", token=...).
        path(f"{base}stk/callback/<str:token>", views.stk_callback, name="stk-callback"),
        path(f"{base}c2b/validation", views.c2b_validation, name="c2b-validation"),
        path(f"{base}c2b/confirmation", views.c2b_confirmation, name="c2b-confirmation"),
        path(f"{base}c2b/timeout", views.c2b_timeout, name="c2b-timeout"),
    ]


urlpatterns = _callback_patterns() + [
    path("cashier/check-mpesa-payment/<int:sale_id>", views.check_mpesa_payment, name="check-payment"),
    path("cashier/sales/<int:sale_id>/mpesa", views.StartStkPaymentView.as_view(), name="start-stk"),
    path("cashier/mpesa/unclaimed", views.UnclaimedMpesaPaymentsView.as_view(), name="unclaimed-payments"),
    path("cashier/sales/<int:sale_id>/mpesa-claim", views.ClaimMpesaPaymentView.as_view(), name="claim-payment"),
    path("cashier/sales/<int:sale_id>/mpesa-claim/<int:claim_id>", views.MpesaClaimStatusView.as_view(),
         name="claim-status"),
    path("healthz", views.healthz, name="healthz"),
]
