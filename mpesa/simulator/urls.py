"""Mounted at /daraja-sim/ only when MPESA_ENVIRONMENT=simulator (comolor/urls.py)."""

from django.urls import path, re_path

from . import views

app_name = "daraja_sim"

urlpatterns = [
    path("oauth/v1/generate", views.oauth_generate, name="oauth"),
    path("mpesa/stkpush/v1/processrequest", views.stk_push, name="stk-push"),
    path("mpesa/stkpushquery/v1/query", views.stk_query, name="stk-query"),
    re_path(r"^mpesa/c2b/(?P<version>v[12])/registerurl$", views.c2b_register, name="c2b-register"),
    re_path(r"^mpesa/c2b/(?P<version>v[12])/simulate$", views.c2b_simulate, name="c2b-simulate"),
    path("mpesa/transactionstatus/v1/query", views.transaction_status, name="transaction-status"),
    path("pulltransactions/v1/register", views.pull_register, name="pull-register"),
    path("pulltransactions/v1/query", views.pull_query, name="pull-query"),
    path("phone/", views.phone, name="phone"),
    path("phone/<str:checkout_request_id>/answer", views.phone_answer, name="phone-answer"),
    path("phone/c2b", views.phone_pay_c2b, name="phone-c2b"),
    path("traffic/", views.traffic, name="traffic"),
    re_path(r"^(?P<path>.*)$", views.not_found),
]
