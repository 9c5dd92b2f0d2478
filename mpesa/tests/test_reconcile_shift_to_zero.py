"""Must show (issue 7): a shift closed with a cash shortage, an M-Pesa over-count and an unmatched
M-Pesa payment, reconciled to zero through the admin.

The story: a customer's M-Pesa went through twice for one sale (two prompts, both paid); the cashier
handed the second KES 232 back in cash from the drawer without recording it. Another customer paid
KES 500 to the till by mistake. The cashier's blind count is KES 232 short; the Z report shows M-Pesa
KES 232 over and KES 500 unmatched. The manager marks the double payment refunded in cash and the
KES 500 refunded outside (M-Pesa reversal), in the admin, with reasons. The Z report keeps its facts
(counted vs expected); every difference is now covered by a recorded resolution, the queues are empty
and the day's settlement explains every shilling.
"""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from mpesa.models import CallbackLog, MpesaAccount, MpesaTransaction, StkRequest
from mpesa.services import daily_settlement, process_callback, record_callback
from mpesa.tests.factories import StkRequestFactory, c2b_confirmation, make_pending_sale, stk_success
from pos.models import ManagerAction, Sale, Shift
from pos.services import ItemRequest, close_shift, sell_for_cash, shift_report
from pos.tests.backoffice import manager, manager_client  # noqa: F401

CHANGELIST = reverse("admin:mpesa_mpesatransaction_changelist")


def callback(kind, body):
    log = record_callback(kind=kind, body=body, headers={}, remote_addr="127.0.0.1", forwarded_for="",
                          path="/mpesa/stk/callback" if kind == "stk" else "/mpesa/c2b/confirmation")
    return process_callback(log.pk)


def queue_counts(client):
    return {queue["label"]: queue["count"] for queue in client.get(reverse("admin:index")).context["queues"]}


@pytest.fixture
def closed_shift(shop, till, cashier, product):
    MpesaAccount.objects.create(shop=shop, shortcode="600638")
    shift = till.shifts.get()
    Shift.objects.filter(pk=shift.pk).update(opened_at=timezone.now() - timedelta(hours=1))  # the morning's shift
    sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=3, product_id=product.pk)],
                  tendered=Decimal("348"))
    twice = make_pending_sale(cashier=cashier, till=till, product=product, quantity=2)  # KES 232
    first = StkRequestFactory(sale=twice, amount=232)
    second = StkRequestFactory(sale=twice, amount=232, status=StkRequest.Status.UNKNOWN)  # sent again, no answer
    assert callback("stk", stk_success(first.checkout_request_id, amount=232, receipt="QK11111111")) == "paid"
    assert callback("stk", stk_success(second.checkout_request_id, amount=232, receipt="QK22222222")) == "paid"
    stray = json.loads(c2b_confirmation("QK33333333", amount="500", bill_ref=""))
    stray["TransTime"] = f"{timezone.localtime():%Y%m%d%H%M%S}"  # paid during the shift
    assert callback("c2b_confirmation", json.dumps(stray).encode()) == "unmatched"
    # KES 348 of cash sales went into the drawer; KES 232 of it went back to the double-paying customer.
    return close_shift(shift_id=shift.pk, counted_cash=Decimal("116"), user=cashier)


def test_a_shift_short_over_and_with_an_unmatched_payment_is_reconciled_to_zero_in_the_admin(
        closed_shift, manager_client, manager, shop):
    z = shift_report(shift_id=closed_shift.pk)
    cash, mpesa = z["methods"][0], z["methods"][1]
    assert (cash["expected"], cash["received"], cash["difference"]) == (Decimal("348"), Decimal("116"),
                                                                       Decimal("-232"))
    assert (mpesa["expected"], mpesa["received"], mpesa["difference"]) == (Decimal("232"), Decimal("464"),
                                                                          Decimal("232"))
    assert "KES 500.00" in " ".join(z["summary"])
    assert queue_counts(manager_client) == {"Unmatched M-Pesa payments": 1, "Sales pending too long": 0,
                                            "Amount mismatches": 1, "M-Pesa prompts with no outcome": 0}
    double = MpesaTransaction.objects.get(receipt_number="QK22222222")
    stray = MpesaTransaction.objects.get(receipt_number="QK33333333")
    assert (double.match_status, double.payment_id) == ("review", None)

    # In the admin: each queue, its row, the action, a reason.
    for queue, tx, method, reason in [
        ("mismatch", double, "cash", "customer paid twice; the cashier gave KES 232 back from the drawer"),
        ("unmatched", stray, "outside", "paid to us by mistake; reversed through Safaricom"),
    ]:
        url = f"{CHANGELIST}?queue={queue}"
        assert tx in manager_client.get(url).context["cl"].result_list
        asked = manager_client.post(url, {"action": "refund_overpayments", "_selected_action": [tx.pk]})
        assert "Mark refunded" in asked.content.decode()
        done = manager_client.post(url, {"action": "refund_overpayments", "_selected_action": [tx.pk],
                                         "apply": "1", "method": method, "reason": reason})
        assert done.status_code == 302

    assert set(queue_counts(manager_client).values()) == {0}
    actions = {a.target: a for a in ManagerAction.objects.filter(user=manager, action="refund_overpayment")}
    assert actions["M-Pesa QK22222222"].outcome.startswith("KES 232.00 refunded in cash")
    assert actions["M-Pesa QK33333333"].outcome.startswith("KES 500.00 refunded outside")
    resolved = MpesaTransaction.objects.filter(resolved_by=manager, match_status="resolved")
    refunded_in_cash = sum(tx.amount for tx in resolved if " refunded in cash" in tx.resolution)
    refunded_outside = sum(tx.amount for tx in resolved if " refunded outside" in tx.resolution)

    # The Z report keeps what was counted; the resolutions bring each difference to zero.
    z = shift_report(shift_id=closed_shift.pk)
    cash, mpesa = z["methods"][0], z["methods"][1]
    assert cash["difference"] + refunded_in_cash == 0  # the shortage is the cash handed back
    assert mpesa["difference"] - refunded_in_cash == 0  # the over-count is the money handed back
    stray.refresh_from_db()
    assert stray.amount - refunded_outside == 0 and stray.match_status == "resolved"
    settlement = daily_settlement(shop_id=shop.pk, day=timezone.localdate())
    assert (settlement["unexplained"], settlement["excess_to_refund"]) == (0, 0)
    assert Sale.objects.filter(status="pending").count() == 0
    assert CallbackLog.objects.filter(status__in=["orphan", "failed"]).count() == 0
