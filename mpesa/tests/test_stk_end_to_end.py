"""The till's M-Pesa payment end to end: our client → the Daraja simulator over real HTTP (live
server) → its callback to our endpoint → ledger → sale, for every outcome in DESIGN.md §4.3."""

import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from inventory.models import StockLevel, StockMovement
from mpesa import services
from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.tests.factories import make_pending_sale
from pos.models import Payment, Sale


@pytest.fixture
def sale(daraja_sim, cashier, till, product):  # noqa: F811
    return make_pending_sale(cashier=cashier, till=till, product=product)


def start(client, sale, phone, **body):
    return client.post(reverse("mpesa:start-stk", args=[sale.pk]), data={"phone": phone, **body},
                       content_type="application/json")


def poll(client, sale):
    return client.get(reverse("mpesa:check-payment", args=[sale.pk])).json()


@pytest.mark.parametrize("phone, sale_status, poll_status, words", [
    ("0708374149", "completed", "paid", "Paid in full. M-Pesa code"),
    ("254700000001", "pending", "failed", "balance is too low"),
    ("254700001032", "pending", "failed", "cancelled the M-Pesa prompt"),
    ("254700001037", "pending", "failed", "could not be reached"),
    ("254700002001", "pending", "failed", "wrong M-Pesa PIN"),
    ("254700001019", "pending", "failed", "expired"),
    ("254700000017", "pending", "failed", "Wait 2 minutes or take another method"),
    ("254700009002", "completed", "paid", "Paid in full. M-Pesa code"),
    ("254700009003", "completed", "paid", "Paid in full. M-Pesa code"),
    ("254700009004", "completed", "paid", "Paid in full. M-Pesa code"),
])
def test_every_simulator_outcome_ends_in_the_right_sale_state_and_message(
        daraja_sim, cashier_client, sale, phone, sale_status, poll_status, words):  # noqa: F811
    response = start(cashier_client, sale, phone)
    assert response.status_code == 201, response.content
    assert response.json()["mpesa_checkout_id"].startswith("ws_CO_")
    assert "enter their M-Pesa PIN" in response.json()["message"]

    daraja_sim.deliver()

    sale.refresh_from_db()
    status = poll(cashier_client, sale)
    assert (sale.status, status["status"]) == (sale_status, poll_status)
    assert words in status["message"]
    if sale_status == "completed":
        payment = Payment.objects.get(sale=sale)
        assert payment.reference == status["mpesa_receipt"] != ""
        assert StockMovement.objects.filter(sale=sale).count() == 1
        assert MpesaTransaction.objects.get().match_status == MpesaTransaction.Match.MATCHED
    else:
        assert not Payment.objects.exists() and not MpesaTransaction.objects.exists()


def test_callback_delivered_twice_counts_once(daraja_sim, cashier_client, sale):  # noqa: F811
    start(cashier_client, sale, "254700009002")
    daraja_sim.deliver()

    assert CallbackLog.objects.filter(kind=CallbackLog.Kind.STK).count() == 2
    assert Payment.objects.count() == 1 and StockMovement.objects.filter(sale=sale).count() == 1


def test_callback_before_the_push_response_finds_its_request(daraja_sim, cashier_client, sale):  # noqa: F811
    response = start(cashier_client, sale, "254700009003")

    # Paid before deliver(): the simulator posted the result before answering the push.
    sale.refresh_from_db()
    stk = StkRequest.objects.get()
    assert sale.status == Sale.Status.COMPLETED and stk.status == StkRequest.Status.PAID
    assert stk.checkout_request_id == response.json()["mpesa_checkout_id"]


def test_a_busy_subscriber_refuses_the_push_and_leaves_nothing_open(daraja_sim, cashier_client, sale):  # noqa: F811
    response = start(cashier_client, sale, "254700009005")

    assert response.status_code == 400
    assert "busy with another M-Pesa transaction" in response.json()["error"]
    stk = StkRequest.objects.get()
    assert stk.status == StkRequest.Status.REFUSED and stk.result_code == "500.001.1001"
    status = poll(cashier_client, sale)
    assert status["status"] == "failed" and "busy" in status["message"]
    # Nothing open: the next prompt (another phone) goes out.
    assert start(cashier_client, sale, "0708374149").status_code == 201


def test_a_lost_callback_is_recovered_by_the_sweep(daraja_sim, cashier_client, sale, settings):  # noqa: F811
    settings.MPESA_SWEEP_AFTER = 0
    start(cashier_client, sale, "254700009001")
    daraja_sim.deliver()
    assert not CallbackLog.objects.exists() and poll(cashier_client, sale)["status"] == "waiting"

    summary = services.sweep_mpesa()

    assert "prompts paid" in summary
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and StockMovement.objects.filter(sale=sale).count() == 1
    tx = MpesaTransaction.objects.get()
    assert tx.source == MpesaTransaction.Source.STK_QUERY and tx.receipt_number is None
    assert poll(cashier_client, sale)["status"] == "paid"


def test_the_sweep_leaves_an_unanswered_prompt_pending_then_applies_the_answer(
        daraja_sim, cashier_client, sale, settings):  # noqa: F811
    settings.MPESA_SWEEP_AFTER = 0
    settings.MPESA_SWEEP_REQUERY_EVERY = 0
    settings.DARAJA_SIM_CALLBACK_DELAY = 3600
    start(cashier_client, sale, "254700001032")

    assert services.sweep_stk_requests() == {"prompts pending": 1}
    daraja_sim.deliver()  # the customer cancels; the callback also arrives
    assert StkRequest.objects.get().status == StkRequest.Status.FAILED
    assert services.sweep_stk_requests() == {}


def test_a_failure_found_by_the_sweep_fails_the_request(daraja_sim, cashier_client, sale, settings):  # noqa: F811
    settings.MPESA_SWEEP_AFTER = 0
    checkout_id = start(cashier_client, sale, "0708374149").json()["mpesa_checkout_id"]
    daraja_sim.answer(checkout_id, "cancel")

    # Nothing delivered: the query alone tells us the customer cancelled.
    assert services.sweep_stk_requests() == {"prompts failed": 1}
    stk = StkRequest.objects.get()
    assert stk.status == StkRequest.Status.FAILED and stk.result_code == "1032"
    assert "cancelled the M-Pesa prompt" in poll(cashier_client, sale)["message"]


def test_pay_with_mpesa_from_create_sale(daraja_sim, cashier_client, product):  # noqa: F811
    response = cashier_client.post(reverse("pos:create-sale"), data={
        "items": [{"sku": product.sku, "quantity": 3}], "payment_method": "mpesa", "customer_phone": "0708 374 149",
    }, content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["mpesa_checkout_id"].startswith("ws_CO_") and body["mpesa_amount"] == 348

    daraja_sim.deliver()
    sale = Sale.objects.get(pk=body["sale_id"])
    assert sale.status == Sale.Status.COMPLETED
    assert StockLevel.objects.get(shop=sale.shop, product=product).on_hand == 47


def test_a_total_with_cents_is_asked_rounded_up_and_settled_exactly(daraja_sim, cashier_client, cashier, till):  # noqa: F811
    sale = make_pending_sale(cashier=cashier, till=till, price=Decimal("99.50"))
    assert start(cashier_client, sale, "0708374149").json()["mpesa_amount"] == 100
    daraja_sim.deliver()

    sale.refresh_from_db()
    payment = Payment.objects.get(sale=sale)
    assert sale.status == Sale.Status.COMPLETED and sale.amount_paid == Decimal("99.50")
    assert (payment.tendered, payment.change_given) == (Decimal("100.00"), Decimal("0.50"))


def test_split_part_mpesa_then_retry_after_failure_then_cash(daraja_sim, cashier_client, sale):  # noqa: F811
    assert start(cashier_client, sale, "254700001032", amount="100").status_code == 201
    daraja_sim.deliver()
    assert poll(cashier_client, sale)["status"] == "failed"
    # Sending again at once to the same phone and amount breaks Daraja's 2-minute rule: refused here.
    assert "Wait" in start(cashier_client, sale, "254700001032", amount="100").json()["error"]

    assert start(cashier_client, sale, "0708374149", amount="100").status_code == 201
    daraja_sim.deliver()
    status = poll(cashier_client, sale)
    assert status["status"] == "partly_paid" and status["balance_due"] == "16.00"

    cash = cashier_client.post(reverse("pos:sale-cash", args=[sale.pk]), data={"amount_tendered": "20"},
                               content_type="application/json")
    assert cash.status_code == 200 and cash.json()["change_due"] == "4.00"
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED
    assert poll(cashier_client, sale)["status"] == "paid"


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_a_double_click_sends_one_prompt(daraja_sim, cashier, sale):  # noqa: F811
    barrier, answers = threading.Barrier(2), []

    def click():
        client = Client()
        client.force_login(cashier)
        barrier.wait()
        answers.append(start(client, sale, "0708374149"))
        connection.close()

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(a.status_code for a in answers) == [201, 400]
    assert "already open" in next(a.json()["error"] for a in answers if a.status_code == 400)
    assert StkRequest.objects.count() == 1 and len(daraja_sim.prompts()) == 1


def test_confirm_by_query_completes_a_genuine_payment(daraja_sim, cashier_client, sale, settings):  # noqa: F811
    settings.MPESA_STK_CONFIRM_BY_QUERY = True
    start(cashier_client, sale, "0708374149")
    daraja_sim.deliver()

    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED


def test_confirm_by_query_holds_a_forged_success_until_daraja_agrees(
        daraja_sim, cashier_client, sale, settings, client):  # noqa: F811
    from mpesa.tests.factories import stk_success

    settings.MPESA_STK_CONFIRM_BY_QUERY = True
    checkout_id = start(cashier_client, sale, "0708374149").json()["mpesa_checkout_id"]
    # Before the customer answers, someone posts a well-formed success for this very prompt.
    client.post("/mpesa/stk/callback", data=stk_success(checkout_id, amount=116, receipt="FORGED0001"),
                content_type="application/json")
    forged = CallbackLog.objects.get()
    assert forged.status == CallbackLog.Status.RECEIVED and "STK Query" in forged.error
    assert Sale.objects.get(pk=sale.pk).status == Sale.Status.PENDING and not MpesaTransaction.objects.exists()

    daraja_sim.answer(checkout_id, "cancel")
    daraja_sim.deliver()
    assert StkRequest.objects.get().status == StkRequest.Status.FAILED
    forged.refresh_from_db()
    services.process_callback(forged.pk)
    forged.refresh_from_db()
    assert forged.status == CallbackLog.Status.PROCESSED
    tx = MpesaTransaction.objects.get(receipt_number="FORGED0001")
    assert tx.match_status == MpesaTransaction.Match.REVIEW and "STK Query says it is not paid" in tx.review_reason
    assert StkRequest.objects.get().status == StkRequest.Status.FAILED
    assert not Payment.objects.exists() and Sale.objects.get(pk=sale.pk).status == Sale.Status.PENDING


def test_confirm_by_query_sends_a_success_daraja_denies_to_review(
        daraja_sim, cashier_client, sale, settings, client):  # noqa: F811
    from mpesa.tests.factories import stk_success

    settings.MPESA_STK_CONFIRM_BY_QUERY = True
    checkout_id = start(cashier_client, sale, "0708374149").json()["mpesa_checkout_id"]
    daraja_sim.answer(checkout_id, "cancel")  # decided, callback not yet delivered
    client.post("/mpesa/stk/callback", data=stk_success(checkout_id, amount=116, receipt="FORGED0002"),
                content_type="application/json")

    tx = MpesaTransaction.objects.get()
    assert tx.match_status == MpesaTransaction.Match.REVIEW and "STK Query says it is not paid" in tx.review_reason
    assert Sale.objects.get(pk=sale.pk).status == Sale.Status.PENDING and not Payment.objects.exists()
    daraja_sim.deliver()  # the real answer: cancelled
    assert StkRequest.objects.get().status == StkRequest.Status.FAILED
