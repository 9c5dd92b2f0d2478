from django.apps import AppConfig


class MpesaConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "mpesa"
    verbose_name = "M-Pesa"

    def ready(self):
        # Importing registers the receivers and checks; each module connects itself once.
        from mpesa import checks  # noqa: F401
        from mpesa import signals  # noqa: F401
