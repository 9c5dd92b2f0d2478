"""One M-Pesa payment pays one sale, under concurrency on PostgreSQL: two cashiers claiming the
same code at the same moment, before or after its confirmation, and a claim racing the confirmation."""

import pytest
from django.db import IntegrityError, connection, transaction

from comolor.testing.concurrency import at_once
from mpesa import services
from mpesa.models import MpesaAccount, MpesaTransaction, PaymentClaim
from mpesa.tests.factories import make_pending_sale, register_c2b_urls
from pos.models import Payment, Sale
from pos.tests.factories import StaffFactory, UserFactory

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="real row locks need PostgreSQL")
ROUNDS = 4


@pytest.fixture
def till_account(daraja_sim, settings, shop):
    settings.DARAJA_SIM_EXTRA_SHORTCODES = ["600200:5200200"]
    MpesaAccount.objects.create(shop=shop, kind=MpesaAccount.Kind.TILL, shortcode="600200", till_number="5200200")
    register_c2b_urls()
    return daraja_sim


@pytest.fixture
def cashiers(cashier, shop, till):
    second = StaffFactory(user=UserFactory(username="akinyi"), shop=shop, default_till=till).user
    return cashier, second


def two_sales(cashiers, till, product):
    return [make_pending_sale(cashier=cashier, till=till, product=product) for cashier in cashiers]


def claims_at_once(sales, cashiers, code):
    return at_once(*[
        (lambda sale=sale, user=user: services.claim_mpesa_payment(sale_id=sale.pk, code=code, user=user))
        for sale, user in zip(sales, cashiers)
    ])


def test_two_cashiers_claiming_one_confirmed_code_at_once_only_one_sale_is_paid(till_account, cashiers, till,
                                                                                product):
    for _ in range(ROUNDS):
        payment = till_account.send_c2b(amount=116, shortcode="5200200")
        till_account.deliver()
        sales = two_sales(cashiers, till, product)

        outcomes = claims_at_once(sales, cashiers, payment.receipt_number)

        assert sorted(kind for kind, _ in outcomes) == ["ok", "refused"], outcomes
        winner = sales[[kind for kind, _ in outcomes].index("ok")]
        refusal = next(text for kind, text in outcomes if kind == "refused")
        assert f"already used for sale {winner.receipt_number}" in refusal
        tx = MpesaTransaction.objects.get(receipt_number=payment.receipt_number)
        assert tx.sale_id == winner.pk and tx.payment.sale_id == winner.pk
        assert Payment.objects.filter(reference=payment.receipt_number).count() == 1
        statuses = sorted(Sale.objects.filter(pk__in=[s.pk for s in sales]).values_list("status", flat=True))
        assert statuses == ["completed", "pending"]


def test_two_cashiers_claiming_a_code_not_yet_confirmed_only_one_waits_and_only_it_is_paid(till_account, cashiers,
                                                                                           till, product):
    for _ in range(ROUNDS):
        payment = till_account.send_c2b(amount=116, shortcode="5200200")
        sales = two_sales(cashiers, till, product)

        outcomes = claims_at_once(sales, cashiers, payment.receipt_number)

        assert sorted(kind for kind, _ in outcomes) == ["ok", "refused"], outcomes
        winner = sales[[kind for kind, _ in outcomes].index("ok")]
        assert next(result for kind, result in outcomes if kind == "ok")["status"] == "waiting"
        assert PaymentClaim.objects.filter(code=payment.receipt_number, status__in=PaymentClaim.LIVE).count() == 1

        till_account.deliver()

        paid = Sale.objects.filter(pk__in=[s.pk for s in sales], status=Sale.Status.COMPLETED)
        assert list(paid) == [winner]
        assert Payment.objects.filter(reference=payment.receipt_number).count() == 1


def test_a_claim_racing_its_confirmation_pays_the_sale_exactly_once(till_account, cashier, till, product):
    for _ in range(ROUNDS):
        payment = till_account.send_c2b(amount=116, shortcode="5200200")
        sale = make_pending_sale(cashier=cashier, till=till, product=product)

        outcomes = at_once(
            lambda: services.claim_mpesa_payment(sale_id=sale.pk, code=payment.receipt_number, user=cashier),
            till_account.deliver,
        )

        assert outcomes[0][0] == "ok", outcomes
        # Whichever came first, the till's next poll sees the sale paid.
        status = services.get_claim_status(claim_id=outcomes[0][1]["claim_id"], user_id=cashier.pk)
        assert status["status"] == "paid", status
        assert Payment.objects.filter(reference=payment.receipt_number, sale=sale).count() == 1
        assert MpesaTransaction.objects.get(receipt_number=payment.receipt_number).sale == sale


def test_the_database_refuses_a_second_live_claim_of_one_code(till_account, cashiers, till, product):
    sales = two_sales(cashiers, till, product)
    PaymentClaim.objects.create(sale=sales[0], shop_id=sales[0].shop_id, code="QK12AB34CD", claimed_by=cashiers[0])
    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentClaim.objects.create(sale=sales[1], shop_id=sales[1].shop_id, code="QK12AB34CD",
                                    claimed_by=cashiers[1], status=PaymentClaim.Status.PAID)
