"""HTTP for the simulator: Daraja's own routes (JSON, bearer-checked, every exchange written to
the traffic table) and the virtual-phone and traffic pages for people."""

import functools
import json
import time

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from comolor.logging import redact

from . import services
from .forms import C2BPaymentForm
from .models import Delivery, StkPrompt, TrafficEntry
from .scheduler import wake_delivery_thread
from .services import DarajaFault, InvalidCredentials

_LOGGED_HEADERS = ("Authorization", "Content-Type")


def _json_body(request) -> dict:
    # Without a JSON Content-Type Daraja reads no fields, so it reports the first one as invalid.
    if request.content_type != "application/json":
        return {}
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise DarajaFault(400, "400.002.05", "Invalid Request Payload")
    return body


def _record_exchange(request, response, started: float) -> None:
    headers = "\n".join(
        f"{name}: {redact(request.headers[name]) if name == 'Authorization' else request.headers[name]}"
        for name in _LOGGED_HEADERS if name in request.headers
    )
    TrafficEntry.objects.create(
        direction=TrafficEntry.Direction.IN,
        method=request.method[:7],
        url=request.get_full_path()[:500],
        request_headers=headers,
        request_body=request.body.decode("utf-8", "replace")[:10000],
        status_code=response.status_code,
        response_body=response.content.decode("utf-8", "replace")[:10000],
        duration_ms=int((time.monotonic() - started) * 1000),
    )


def _respond(request, answer) -> HttpResponse:
    """Run one Daraja exchange: the answer's dict as JSON, or the fault Daraja would give."""
    started = time.monotonic()
    try:
        services.check_rate_limit()
        response = JsonResponse(answer())
    except InvalidCredentials as fault:
        response = HttpResponse(status=400, reason=fault.error_message)
    except DarajaFault as fault:
        response = JsonResponse(fault.envelope(), status=fault.http_status)
    _record_exchange(request, response, started)
    return response


def daraja_api(product: str):
    """A Daraja product route: POST only, then the bearer check with the product's error code."""

    def decorator(handler):
        @csrf_exempt
        @functools.wraps(handler)
        def view(request, **kwargs):
            def answer():
                if request.method != "POST":
                    raise DarajaFault(405, "405.001", "Method Not Allowed")
                services.authenticate_bearer(authorization=request.headers.get("Authorization", ""), product=product)
                return handler(_json_body(request), **kwargs)

            return _respond(request, answer)

        return view

    return decorator


@csrf_exempt
def oauth_generate(request):
    def answer():
        if request.method != "GET":
            raise DarajaFault(405, "405.001", "Method Not Allowed")
        return services.issue_token(
            authorization=request.headers.get("Authorization", ""), grant_type=request.GET.get("grant_type")
        )

    return _respond(request, answer)


@daraja_api("stk")
def stk_push(body):
    return services.push_stk(body=body)


@daraja_api("stk")
def stk_query(body):
    return services.query_stk(body=body, settle_due=settings.DARAJA_SIM_DELIVERY == "thread")


@daraja_api("c2b")
def c2b_register(body, version):
    return services.register_c2b_urls(body=body, version=version)


@daraja_api("c2b")
def c2b_simulate(body, version):
    return services.simulate_c2b(body=body)


@daraja_api("status")
def transaction_status(body):
    return services.query_transaction_status(body=body)


@daraja_api("pull")
def pull_register(body):
    return services.register_pull(body=body)


@daraja_api("pull")
def pull_query(body):
    return services.query_pull(body=body)


@csrf_exempt
def not_found(request, path=""):
    def answer():
        raise DarajaFault(404, "404.001.01", "Resource not found")

    return _respond(request, answer)


# --- pages for people ------------------------------------------------------------------------

def phone(request):
    if settings.DARAJA_SIM_DELIVERY == "thread":
        # Picks up work left by a restarted server.
        wake_delivery_thread()
    return render(request, "daraja_sim/phone.html", {
        "open_prompts": StkPrompt.objects.filter(decided_at__isnull=True).order_by("created_at"),
        "recent_prompts": StkPrompt.objects.filter(decided_at__isnull=False)[:15],
        "form": C2BPaymentForm(),
        "outcomes": services.PHONE_OUTCOMES,
        "locked_phone": services.LOCKED_PHONE,
        "manual_phone": settings.DARAJA_SIM_MANUAL_PHONE,
        "prompt_timeout": settings.DARAJA_SIM_PROMPT_TIMEOUT,
    })


@require_POST
def phone_answer(request, checkout_request_id):
    answer = request.POST.get("answer", "")
    if answer not in (*services.ANSWERS, "ignore"):
        messages.error(request, "Choose pay, cancel, wrong PIN or ignore.")
        return redirect("daraja_sim:phone")
    prompt = get_object_or_404(StkPrompt, checkout_request_id=checkout_request_id)
    if not prompt.is_open:
        messages.error(request, f"That prompt was already answered ({prompt.result_desc}).")
        return redirect("daraja_sim:phone")
    prompt = services.answer_prompt(checkout_request_id=checkout_request_id, answer=answer)
    if answer == "ignore":
        messages.info(request, "Ignored: the prompt times out (1037) when its time runs out.")
    else:
        messages.success(request, f"Answered: {prompt.result_desc}")
    return redirect("daraja_sim:phone")


@require_POST
def phone_pay_c2b(request):
    form = C2BPaymentForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            payment = services.pay_c2b(
                shortcode=data["shortcode"], amount=data["amount"], phone=data["phone"],
                account=data["account"], first_name=data["first_name"].upper(),
            )
        except services.PaymentRefused as refused:
            messages.error(request, str(refused))
        else:
            messages.success(request, f"Paid KES {payment.amount} to {payment.shortcode}: {payment.receipt_number}")
            return redirect("daraja_sim:phone")
    else:
        messages.error(request, "Payment not sent: " + "; ".join(
            f"{form.fields[name].label or name}: {' '.join(errors)}" if name in form.fields else " ".join(errors)
            for name, errors in form.errors.items()
        ))
    return redirect("daraja_sim:phone")


def traffic(request):
    services.prune_traffic()
    return render(request, "daraja_sim/traffic.html", {
        "entries": TrafficEntry.objects.all()[:200],
        "queued": Delivery.objects.filter(state=Delivery.State.QUEUED).order_by("due_at")[:50],
    })
