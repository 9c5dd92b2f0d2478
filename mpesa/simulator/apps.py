from django.apps import AppConfig


class DarajaSimulatorConfig(AppConfig):
    name = "mpesa.simulator"
    label = "daraja_sim"
    verbose_name = "Daraja simulator"
    default_auto_field = "django.db.models.BigAutoField"
