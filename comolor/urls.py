from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from pos.views import StaffLoginView

urlpatterns = [
    path("accounts/login/", StaffLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("receipts/", include("receipts.urls")),
    path("", include("pos.urls")),
    path("", include("mpesa.urls")),
]

if settings.MPESA_ENVIRONMENT == "simulator":
    # Daraja's own paths under /daraja-sim/; never routed outside simulator mode.
    urlpatterns.insert(0, path("daraja-sim/", include("mpesa.simulator.urls")))
