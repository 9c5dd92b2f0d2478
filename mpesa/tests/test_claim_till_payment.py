""""Customer paid to our till": the cashier types the code from the SMS or picks a payment from
the list; only Safaricom's confirmation (through the simulator over HTTP) pays the sale (T14, T15)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from inventory.models import StockMovement
from mpesa import services
from mpesa.models import MpesaAccount, MpesaTransaction, PaymentClaim
from mpesa.tests.factories import make_pending_sale, open_shop_with_cashier, register_c2b_urls
from pos.models import Payment, Sale
from pos.services import SaleError
from pos.tests.factories import UserFactory

TILL, OTHER_TILL = "5200200", "5200300"


@pytest.fixture
def tills(daraja_sim, settings, shop):
    """The demo shop sells on Buy Goods till 5200200 (store 600200); another shop on 5200300."""
    settings.DARAJA_SIM_EXTRA_SHORTCODES = [f"600200:{TILL}", f"600300:{OTHER_TILL}"]
    MpesaAccount.objects.create(shop=shop, kind=MpesaAccount.Kind.TILL, shortcode="600200", till_number=TILL)
    other_shop, other_till, other_cashier = open_shop_with_cashier("MAWE", username="otieno")
    MpesaAccount.objects.create(shop=other_shop, kind=MpesaAccount.Kind.TILL, shortcode="600300",
                                till_number=OTHER_TILL)
    register_c2b_urls()
    daraja_sim.other = (other_shop, other_till, other_cashier)
    return daraja_sim


@pytest.fixture
def sale(tills, cashier, till, product):
    return make_pending_sale(cashier=cashier, till=till, product=product)


def paid_to_till(sim, amount=116, till=TILL, *, deliver=True, **kwargs):
    payment = sim.send_c2b(amount=amount, shortcode=till, **kwargs)
    if deliver:
        sim.deliver()
    return payment


def claim(client, sale, code):
    return client.post(reverse("mpesa:claim-payment", args=[sale.pk]), data={"code": code},
                       content_type="application/json")


def claim_status(client, sale, claim_id):
    return client.get(reverse("mpesa:claim-status", args=[sale.pk, claim_id]))


def test_a_code_whose_confirmation_has_arrived_pays_the_sale_at_once(tills, sale, cashier_client, cashier):
    payment = paid_to_till(tills)
    tx = MpesaTransaction.objects.get()
    assert (tx.match_status, tx.sale, tx.bill_ref_number) == ("unmatched", None, "")

    # Typed from the SMS as people do: lower case, spaces.
    response = claim(cashier_client, sale, f" {payment.receipt_number[:5].lower()} {payment.receipt_number[5:]}")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["success"], body["status"], body["mpesa_receipt"]) == (True, "paid", payment.receipt_number)
    assert body["balance_due"] == "0.00" and "Hand over the goods" in body["message"]
    sale.refresh_from_db()
    tx.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED and StockMovement.objects.filter(sale=sale).count() == 1
    assert (tx.sale, tx.match_status, tx.claimed_by) == (sale, "matched", cashier)
    assert Payment.objects.get(sale=sale).received_by == cashier
    assert PaymentClaim.objects.get().status == PaymentClaim.Status.PAID


def test_a_code_claimed_before_its_confirmation_waits_then_pays_when_it_comes(tills, sale, cashier_client):
    payment = paid_to_till(tills, deliver=False)

    response = claim(cashier_client, sale, payment.receipt_number)
    assert response.status_code == 202
    waiting = response.json()
    assert waiting["status"] == "waiting" and waiting["timeout_after"] == 90
    assert "do not hand over the goods" in waiting["message"]
    assert claim_status(cashier_client, sale, waiting["claim_id"]).json()["status"] == "waiting"
    sale.refresh_from_db()
    assert sale.status == Sale.Status.PENDING

    tills.deliver()  # Safaricom's confirmation: it settles the waiting claim

    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED
    response = claim_status(cashier_client, sale, waiting["claim_id"])
    assert (response.status_code, response.json()["status"]) == (200, "paid")
    assert MpesaTransaction.objects.get().claimed_by is not None


def test_a_fake_code_never_confirmed_expires_and_the_sale_is_not_paid(tills, sale, cashier_client, settings):
    waiting = claim(cashier_client, sale, "QK12AB34CD").json()
    assert waiting["status"] == "waiting"

    settings.MPESA_CLAIM_WAIT_SECONDS = 0
    response = claim_status(cashier_client, sale, waiting["claim_id"])

    body = response.json()
    assert (response.status_code, body["success"], body["status"]) == (200, False, "expired")
    assert "is NOT paid. Do not hand over the goods" in body["error"]
    sale.refresh_from_db()
    assert sale.status == Sale.Status.PENDING and not Payment.objects.exists()


def test_the_sweep_expires_a_claim_nobody_is_watching(tills, sale, cashier, settings):
    result = services.claim_mpesa_payment(sale_id=sale.pk, code="QK12AB34CD", user=cashier)
    PaymentClaim.objects.filter(pk=result["claim_id"]).update(created_at=timezone.now() - timedelta(seconds=91))

    assert "1 claims expired" in services.sweep_mpesa()
    assert PaymentClaim.objects.get().status == PaymentClaim.Status.EXPIRED


def test_a_code_already_used_for_another_sale_is_refused_with_that_sale(tills, sale, cashier, cashier_client, till,
                                                                        product):
    payment = paid_to_till(tills)
    assert claim(cashier_client, sale, payment.receipt_number).status_code == 200
    second = make_pending_sale(cashier=cashier, till=till, product=product)

    response = claim(cashier_client, second, payment.receipt_number)

    assert response.status_code == 400
    error = response.json()["error"]
    assert f"M-Pesa code {payment.receipt_number} was already used for sale {sale.receipt_number}" in error
    assert "do not hand over the goods" in error
    second.refresh_from_db()
    assert second.status == Sale.Status.PENDING and Payment.objects.count() == 1
    refused = PaymentClaim.objects.get(sale=second)
    assert refused.status == PaymentClaim.Status.REFUSED and refused.claimed_by == cashier


def test_a_code_waiting_for_one_sale_is_refused_for_another(tills, sale, cashier, cashier_client, till, product):
    claim(cashier_client, sale, "QK12AB34CD")
    second = make_pending_sale(cashier=cashier, till=till, product=product)

    response = claim(cashier_client, second, "QK12AB34CD")

    assert response.status_code == 400
    assert f"already claimed for sale {sale.receipt_number}" in response.json()["error"]


def test_a_payment_to_another_shops_till_is_refused(tills, sale, cashier_client):
    payment = paid_to_till(tills, till=OTHER_TILL)
    other_shop = tills.other[0]
    assert MpesaTransaction.objects.get().shop == other_shop

    response = claim(cashier_client, sale, payment.receipt_number)

    assert response.status_code == 400
    assert "was made to another shop's till or paybill (5200300), not to Demo Duka" in response.json()["error"]
    assert MpesaTransaction.objects.get().match_status == "unmatched"


@pytest.mark.parametrize("amount, words", [
    (100, "is KES 100.00 but sale DEMO-0000001 needs KES 116. Nothing was applied. Take the KES 16.00 difference"),
    (200, "is KES 200.00 but sale DEMO-0000001 needs only KES 116. Nothing was applied. Ask a manager to apply "
          "it and refund the KES 84.00"),
])
def test_a_payment_of_another_amount_is_refused_with_both_amounts(tills, sale, cashier_client, amount, words):
    payment = paid_to_till(tills, amount=amount)

    response = claim(cashier_client, sale, payment.receipt_number)

    assert response.status_code == 400 and words in response.json()["error"]
    assert MpesaTransaction.objects.get().match_status == "unmatched" and not Payment.objects.exists()


def test_a_payment_arriving_for_a_waiting_claim_with_another_amount_refuses_the_claim(tills, sale, cashier_client):
    payment = paid_to_till(tills, amount=100, deliver=False)
    waiting = claim(cashier_client, sale, payment.receipt_number).json()
    tills.deliver()

    body = claim_status(cashier_client, sale, waiting["claim_id"]).json()
    assert (body["status"], body["success"]) == ("refused", False)
    assert "is KES 100.00 but sale DEMO-0000001 needs KES 116" in body["message"]
    assert MpesaTransaction.objects.get().match_status == "unmatched"


def test_the_till_takes_a_balance_with_cents_rounded_up(tills, cashier, cashier_client, till):
    sale = make_pending_sale(cashier=cashier, till=till, price=Decimal("99.50"))
    payment = paid_to_till(tills, amount=100)

    assert claim(cashier_client, sale, payment.receipt_number).json()["status"] == "paid"
    assert Payment.objects.get(sale=sale).change_given == Decimal("0.50")


@pytest.mark.parametrize("typed", ["12345", "QK12AB34C", "QK12AB34CD1", "QK12-AB34CD", "1K12AB34CD"])
def test_something_that_is_not_an_mpesa_code_is_refused_in_words(tills, sale, cashier_client, typed):
    response = claim(cashier_client, sale, typed)

    assert response.status_code == 400
    assert "is not an M-Pesa code: a code is 10 letters and digits" in response.json()["error"]
    assert not PaymentClaim.objects.exists()


def test_an_empty_code_is_refused_in_words(tills, sale, cashier_client):
    response = claim(cashier_client, sale, "")
    assert (response.status_code, response.json()["error"]) == (
        400, "Type the M-Pesa code from the customer's SMS, e.g. QK12AB34CD.")


def test_claiming_again_for_the_same_sale_answers_with_the_same_claim(tills, sale, cashier_client):
    first = claim(cashier_client, sale, "QK12AB34CD").json()
    again = claim(cashier_client, sale, "qk12ab34cd").json()
    assert again["claim_id"] == first["claim_id"] and again["status"] == "waiting"
    assert PaymentClaim.objects.count() == 1


def test_another_shops_sale_or_claim_is_not_found(tills, sale, cashier_client):
    other_cashier = tills.other[2]
    other_client = Client()
    other_client.force_login(other_cashier)
    waiting = claim(cashier_client, sale, "QK12AB34CD").json()

    assert claim(other_client, sale, "QK12AB34CD").status_code == 404
    assert claim_status(other_client, sale, waiting["claim_id"]).status_code == 404
    other_sale = make_pending_sale(cashier=other_cashier, till=tills.other[1])
    assert claim_status(other_client, other_sale, waiting["claim_id"]).status_code == 404


def test_a_claim_needs_the_csrf_token(tills, sale, cashier):
    client = Client(enforce_csrf_checks=True)
    client.force_login(cashier)
    response = claim(client, sale, "QK12AB34CD")
    assert response.status_code == 403 and "Reload the page" in response.json()["error"]
    assert not PaymentClaim.objects.exists()


def test_the_unclaimed_list_shows_this_shops_recent_payments_masked(tills, sale, cashier_client):
    ours = paid_to_till(tills, amount=116, phone="254712345678", first_name="AMINA")
    paid_to_till(tills, amount=50, till=OTHER_TILL)
    old = paid_to_till(tills, amount=75, phone="254711000003")
    MpesaTransaction.objects.filter(receipt_number=old.receipt_number).update(
        created_at=timezone.now() - timedelta(minutes=31))

    response = cashier_client.get(reverse("mpesa:unclaimed-payments"))

    payments = response.json()["payments"]
    assert [p["receipt_number"] for p in payments] == [ours.receipt_number]
    row = payments[0]
    assert (row["amount"], row["first_name"], row["bill_ref"]) == ("116.00", "Amina", "")
    assert "678" in row["phone"] and "12345678" not in row["phone"]
    assert "just now" in row["time_label"] and row["time"]

    claim(cashier_client, sale, ours.receipt_number)
    assert cashier_client.get(reverse("mpesa:unclaimed-payments")).json()["payments"] == []


def test_a_hashed_msisdn_is_not_shown_in_the_list(tills, sale, cashier_client):
    register_c2b_urls(version="v1")
    paid_to_till(tills)
    assert cashier_client.get(reverse("mpesa:unclaimed-payments")).json()["payments"][0]["phone"] == ""


def test_a_till_payment_matching_one_or_two_open_sales_by_amount_waits_for_a_person(tills, sale, cashier, till,
                                                                                    product, shop):
    paid_to_till(tills)
    assert MpesaTransaction.objects.get().match_status == "unmatched"
    make_pending_sale(cashier=cashier, till=till, product=product)
    second = paid_to_till(tills, phone="254711000004")

    assert MpesaTransaction.objects.filter(match_status="unmatched").count() == 2
    assert not Payment.objects.exists()
    listed = [p["receipt_number"] for p in services.list_unclaimed_payments(shop_id=shop.pk)]
    assert second.receipt_number in listed and len(listed) == 2


def test_a_manager_may_apply_less_as_part_payment(tills, sale, shop):
    payment = paid_to_till(tills, amount=100)
    manager = UserFactory(username="manager")

    result = services.claim_mpesa_payment(sale_id=sale.pk, code=payment.receipt_number, user=manager, via="admin")

    assert (result["status"], result["balance_due"]) == ("partly_paid", "16.00")
    sale.refresh_from_db()
    assert sale.status == Sale.Status.PENDING and sale.amount_paid == 100


def test_a_manager_may_apply_more_keeping_the_excess_to_refund(tills, sale):
    payment = paid_to_till(tills, amount=200)
    manager = UserFactory(username="manager")

    result = services.claim_mpesa_payment(sale_id=sale.pk, code=payment.receipt_number, user=manager, via="admin")

    assert result["status"] == "paid"
    tx = MpesaTransaction.objects.get()
    assert (tx.excess_amount, tx.claimed_by) == (Decimal("84.00"), manager)


def test_a_manager_cannot_apply_a_code_that_is_not_in_the_ledger(tills, sale):
    manager = UserFactory(username="manager")
    with pytest.raises(SaleError, match="No M-Pesa payment with code QK12AB34CD is in the ledger"):
        services.claim_mpesa_payment(sale_id=sale.pk, code="QK12AB34CD", user=manager, via="admin")
