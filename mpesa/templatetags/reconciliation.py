from django import template

from mpesa.admin import reconciliation_queues

register = template.Library()


@register.inclusion_tag("admin/_reconciliation_queues.html", takes_context=True)
def reconciliation_panel(context):
    return {"queues": reconciliation_queues(context["request"])}
