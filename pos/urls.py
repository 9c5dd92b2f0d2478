from django.urls import path

from . import api, views

app_name = "pos"
urlpatterns = [
    path("", views.home, name="home"),
    path("cashier/recent-sales", views.recent_sales, name="recent-sales"),
    path("cashier/shift/", views.shift_detail, name="shift"),
    path("cashier/shift/open", views.shift_open, name="shift-open"),
    path("cashier/shift/close", views.shift_close, name="shift-close"),
    path("cashier/shift/<int:shift_id>/report", views.shift_report_page, name="shift-report"),
    path("cashier/create-sale", api.CreateSaleView.as_view(), name="create-sale"),
    path("cashier/products", api.ProductSearchView.as_view(), name="products"),
    path("cashier/sales/<int:sale_id>", api.SaleDetailView.as_view(), name="sale"),
    path("cashier/sales/<int:sale_id>/cash", api.SaleCashView.as_view(), name="sale-cash"),
    path("cashier/sales/<int:sale_id>/cancel", api.SaleCancelView.as_view(), name="sale-cancel"),
]
