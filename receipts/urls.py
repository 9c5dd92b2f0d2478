from django.urls import path

from . import views

app_name = "receipts"
urlpatterns = [
    path("<int:sale_id>/", views.receipt_html, name="html"),
    path("<int:sale_id>/preview.png", views.receipt_preview, name="preview"),
    path("<int:sale_id>/print-status", views.print_status, name="print-status"),
    path("<int:sale_id>/print", views.print_receipt, name="print"),
    path("<int:sale_id>/reprint", views.reprint_receipt, name="reprint"),
    path("verify/<str:receipt_number>/<str:token>/", views.verify_receipt, name="verify"),
    path("shift/<int:shift_id>/", views.shift_report_html, name="shift-slip"),
    path("shift/<int:shift_id>/print", views.print_shift_report, name="shift-print"),
]
