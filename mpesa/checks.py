"""System checks: a bad M-Pesa configuration is reported in words at start-up and by `check`."""

from django.core.checks import Error, Tags, Warning, register

from mpesa.conf import configuration_problems, mpesa_config


@register(Tags.compatibility, "mpesa")
def check_mpesa_configuration(app_configs=None, **kwargs):
    return [
        (Error if problem.is_error else Warning)(problem.message, hint=problem.hint or None, id=problem.id)
        for problem in configuration_problems(mpesa_config())
    ]


@register(Tags.security, "mpesa", deploy=True)
def check_mpesa_not_simulated(app_configs=None, **kwargs):
    if mpesa_config().environment != "simulator":
        return []
    return [Error(
        "MPESA_ENVIRONMENT=simulator: payments go to the built-in Daraja simulator and no real money moves.",
        hint="Set MPESA_ENVIRONMENT=production (or sandbox) and the MPESA_* credentials before deploying.",
        id="mpesa.E100",
    )]
