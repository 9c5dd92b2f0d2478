"""The reconciliation queues on the admin index and the actions behind them, as a manager uses them."""

from decimal import Decimal

import pytest
from django.urls import reverse

from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.services import process_callback, record_callback
from mpesa.tests.factories import MpesaTransactionFactory, StkRequestFactory, make_pending_sale, stk_success
from pos.models import ManagerAction, Sale
from pos.tests.backoffice import (age, manager, manager_client, other_shop, other_till, owner,  # noqa: F401
                                  owner_client)

CHANGELIST = reverse("admin:mpesa_mpesatransaction_changelist")


def assign_url(tx):
    return reverse("admin:mpesa_mpesatransaction_assign", args=[tx.pk])


@pytest.fixture
def sale(cashier, till, product):
    return make_pending_sale(cashier=cashier, till=till, product=product, quantity=2)  # KES 232


@pytest.fixture
def queues(shop, other_shop, sale, other_till, cashier, till, product):
    """Something in every queue, in both shops."""
    MpesaTransactionFactory(shop=shop, amount=Decimal("232"), receipt_number="QK12AB34CD")
    MpesaTransactionFactory(shop=other_shop, amount=Decimal("50"), receipt_number="QK99ZZ99ZZ")
    MpesaTransactionFactory(shop=shop, amount=Decimal("116"), receipt_number="QK55RV55RV", match_status="review",
                            review_reason="sale DEMO-0000009 is completed and owed nothing")
    age(make_pending_sale(cashier=cashier, till=till, product=product), 60)
    stk = StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product), amount=116)
    StkRequest.objects.filter(pk=stk.pk).update(created_at=stk.created_at.replace(year=2020))
    log = record_callback(kind="stk", body=stk_success("ws_CO_NOBODY"), headers={}, remote_addr="127.0.0.1",
                          forwarded_for="", path="/mpesa/stk/callback")
    process_callback(log.pk)


def counts(page):
    return {queue["label"]: queue["count"] for queue in page.context["queues"]}


def test_a_manager_sees_their_shops_queues_with_counts_on_the_index(manager_client, queues):
    page = manager_client.get(reverse("admin:index"))

    assert counts(page) == {"Unmatched M-Pesa payments": 1, "Sales pending too long": 1, "Amount mismatches": 1,
                            "M-Pesa prompts with no outcome": 1}
    assert f'href="{CHANGELIST}?queue=unmatched"' in page.content.decode()


def test_an_owner_sees_the_chain_and_the_stuck_callbacks(owner_client, queues):
    page = owner_client.get(reverse("admin:index"))

    assert counts(page)["Unmatched M-Pesa payments"] == 2
    assert counts(page)["Orphan and failed callbacks"] == 1


def test_each_count_links_to_the_rows_it_counts(manager_client, queues):
    for queue in manager_client.get(reverse("admin:index")).context["queues"]:
        listed = manager_client.get(queue["url"])
        assert listed.status_code == 200
        assert listed.context["cl"].result_count == queue["count"], queue["label"]


def test_the_unmatched_queue_lists_this_shops_payments_with_an_assign_button(manager_client, queues):
    page = manager_client.get(CHANGELIST + "?queue=unmatched").content.decode()

    assert "QK12AB34CD" in page and "QK99ZZ99ZZ" not in page and "QK55RV55RV" not in page
    tx = MpesaTransaction.objects.get(receipt_number="QK12AB34CD")
    assert assign_url(tx) in page


def test_a_manager_assigns_a_payment_to_a_sale_picked_from_the_pending_ones(manager_client, manager, sale, shop):
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("232"), receipt_number="QK12AB34CD")
    page = manager_client.get(assign_url(tx))
    assert page.status_code == 200
    assert [s for s, _ in page.context["candidates"]] == [sale]
    assert page.context["candidates"][0][1] is True  # the amount matches the balance
    assert "amount matches" in page.content.decode()

    response = manager_client.post(assign_url(tx), {"sale": sale.pk, "reason": "paid to till, not claimed"})

    assert response.status_code == 302 and response["Location"] == CHANGELIST + "?queue=unmatched"
    sale.refresh_from_db()
    assert sale.status == Sale.Status.COMPLETED
    assert ManagerAction.objects.get().user == manager
    messages = [str(m) for m in manager_client.get(response["Location"]).context["messages"]]
    assert messages == ["Paid: M-Pesa payment QK12AB34CD of KES 232.00 confirmed by Safaricom. Hand over the goods."]


def test_the_sale_picker_finds_a_sale_by_its_receipt_digits_in_this_shop_only(manager_client, sale, shop,
                                                                              other_till, cashier, product):
    other_sale = make_pending_sale(cashier=other_till.shifts.get().opened_by, till=other_till)
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("232"), receipt_number="QK12AB34CD")
    digits = str(int(sale.receipt_number.split("-")[1]))

    assert [s for s, _ in manager_client.get(assign_url(tx), {"q": digits}).context["candidates"]] == [sale]
    found = manager_client.get(assign_url(tx), {"q": other_sale.receipt_number.lower()}).context["candidates"]
    assert found == []


def test_another_shops_sale_posted_by_hand_is_refused_in_words(manager_client, shop, other_till, product):
    other_sale = make_pending_sale(cashier=other_till.shifts.get().opened_by, till=other_till)
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("116"), receipt_number="QK12AB34CD")

    page = manager_client.post(assign_url(tx), {"sale": other_sale.pk, "reason": "sneaky"})

    assert page.status_code == 200
    assert "That sale is not one this payment can pay" in page.content.decode()
    assert Sale.objects.get(pk=other_sale.pk).status == Sale.Status.PENDING


def test_assigning_without_a_reason_is_refused_in_words(manager_client, sale, shop):
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("232"), receipt_number="QK12AB34CD")

    page = manager_client.post(assign_url(tx), {"sale": sale.pk, "reason": ""})

    assert "Say why: every correction is recorded with its reason." in page.content.decode()
    assert Sale.objects.get().status == Sale.Status.PENDING


def test_a_refusal_of_the_claim_rules_is_shown_on_the_page(manager_client, sale, shop, cashier, till, product):
    tx = MpesaTransactionFactory(shop=shop, amount=Decimal("232"), receipt_number="QK12AB34CD")
    manager_client.post(assign_url(tx), {"sale": sale.pk, "reason": "paid to till"})
    MpesaTransaction.objects.filter(pk=tx.pk).update(match_status="unmatched")  # as if listed again by mistake
    second = make_pending_sale(cashier=cashier, till=till, product=product)

    page = manager_client.post(assign_url(tx), {"sale": second.pk, "reason": "again"})

    assert f"already used for sale {sale.receipt_number}" in page.content.decode()


def test_another_shops_payment_assign_page_is_404(manager_client, other_shop):
    tx = MpesaTransactionFactory(shop=other_shop, amount=Decimal("116"), receipt_number="QK12AB34CD")

    assert manager_client.get(assign_url(tx)).status_code == 404
    assert manager_client.post(assign_url(tx), {"sale": 1, "reason": "x"}).status_code == 404


def _action(client, url, action, rows, **data):
    return client.post(url, {"action": action, "_selected_action": [row.pk for row in rows], **data})


def test_the_refund_action_asks_how_and_why_then_marks_the_rows(manager_client, manager, shop):
    review = MpesaTransactionFactory(shop=shop, amount=Decimal("116"), match_status="review",
                                     review_reason="paid twice")

    ask = _action(manager_client, CHANGELIST + "?queue=mismatch", "refund_overpayments", [review])
    assert ask.status_code == 200 and "Mark refunded" in ask.content.decode()
    assert b'name="method"' in ask.content and b'name="reason"' in ask.content
    done = _action(manager_client, CHANGELIST + "?queue=mismatch", "refund_overpayments", [review],
                   apply="1", method="cash", reason="gave it back")

    assert done.status_code == 302
    review.refresh_from_db()
    assert review.match_status == "resolved" and review.resolved_by == manager
    messages = [str(m) for m in manager_client.get(done["Location"]).context["messages"]]
    assert messages == [f"M-Pesa {review.receipt_number} (KES 116.00): KES 116.00 refunded in cash: gave it back"]


def test_a_refused_action_says_why_per_row(manager_client, shop, sale, manager):
    exact = MpesaTransactionFactory(shop=shop, amount=Decimal("232"), receipt_number="QK12AB34CD")
    manager_client.post(assign_url(exact), {"sale": sale.pk, "reason": "paid to till"})

    done = _action(manager_client, CHANGELIST, "refund_overpayments", [exact], apply="1", method="cash",
                   reason="by mistake")

    messages = [str(m) for m in manager_client.get(done["Location"]).context["messages"]]
    assert messages[-1] == ("M-Pesa QK12AB34CD (KES 232.00): M-Pesa QK12AB34CD paid its sale exactly: there is "
                            "nothing to refund.")


def test_an_action_on_another_shops_rows_touches_nothing(manager_client, other_shop):
    other = MpesaTransactionFactory(shop=other_shop, amount=Decimal("116"), match_status="review")

    ask = _action(manager_client, CHANGELIST, "refund_overpayments", [other], apply="1", method="cash",
                  reason="not mine")

    assert ask.status_code == 302
    other.refresh_from_db()
    assert other.match_status == "review" and not ManagerAction.objects.exists()


def test_the_query_action_reports_each_prompt(manager_client, sale):
    stk = StkRequestFactory(sale=sale, status=StkRequest.Status.FAILED, result_code="1032")
    url = reverse("admin:mpesa_stkrequest_changelist")

    done = _action(manager_client, url, "query_now", [stk], apply="1", reason="customer insists")

    messages = [str(m) for m in manager_client.get(done["Location"]).context["messages"]]
    assert messages == [f"Prompt for sale {sale.receipt_number} (KES 116): This prompt has its outcome already: "
                        "failed. Nothing to ask."]


def test_the_reprocess_action_runs_a_callback_for_an_owner(owner_client, sale):
    stk = StkRequestFactory(sale=sale, amount=232)
    log = record_callback(kind="stk", body=stk_success(stk.checkout_request_id, amount=232), headers={},
                          remote_addr="127.0.0.1", forwarded_for="", path="/mpesa/stk/callback")
    CallbackLog.objects.filter(pk=log.pk).update(status="failed", attempts=10)

    done = _action(owner_client, reverse("admin:mpesa_callbacklog_changelist") + "?queue=stuck", "reprocess",
                   [log], apply="1", reason="bug fixed")

    assert done.status_code == 302
    assert Sale.objects.get().status == Sale.Status.COMPLETED
    assert ManagerAction.objects.get().action == "reprocess_callback"


def test_the_cancel_action_cancels_only_stale_sales(manager_client, sale, cashier, till, product):
    fresh = make_pending_sale(cashier=cashier, till=till, product=product)
    age(sale, 60)
    url = reverse("admin:pos_sale_changelist")

    done = _action(manager_client, url, "cancel_stale_sales", [sale, fresh], apply="1", reason="left the shop")

    messages = {str(m) for m in manager_client.get(done["Location"]).context["messages"]}
    assert f"Sale {sale.receipt_number} (KES 232.00): cancelled." in messages
    assert any(m.startswith(f"Sale {fresh.receipt_number} (KES 116.00): Sale {fresh.receipt_number} was started 0 min")
               for m in messages)
    assert Sale.objects.get(pk=sale.pk).status == "cancelled" and Sale.objects.get(pk=fresh.pk).status == "pending"


def test_the_actions_ask_for_a_reason_first(manager_client, sale):
    age(sale, 60)
    url = reverse("admin:pos_sale_changelist")

    page = _action(manager_client, url, "cancel_stale_sales", [sale], apply="1", reason="")

    assert page.status_code == 200 and "Say why" in page.content.decode()
    assert Sale.objects.get().status == Sale.Status.PENDING


def test_cashiers_never_reach_the_actions(cashier_client, sale):
    age(sale, 60)

    response = _action(cashier_client, reverse("admin:pos_sale_changelist"), "cancel_stale_sales", [sale],
                       apply="1", reason="mine")

    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert Sale.objects.get().status == Sale.Status.PENDING
