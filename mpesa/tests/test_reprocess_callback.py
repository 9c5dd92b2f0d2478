"""An owner runs a stored orphan or failed callback again now; processed, rejected and unreadable
ones are refused in words."""

import pytest

from mpesa.models import CallbackLog, MpesaTransaction, StkRequest
from mpesa.services import process_callback, record_callback, reprocess_callback, stuck_callbacks
from mpesa.tests.factories import StkRequestFactory, stk_success
from pos.models import ManagerAction, Sale
from pos.services import SaleError
from pos.tests.backoffice import manager, owner  # noqa: F401

REASON = "the prompt row was restored from the backup"


def store(body, remote_addr="127.0.0.1"):
    return record_callback(kind=CallbackLog.Kind.STK, body=body, headers={}, remote_addr=remote_addr,
                           forwarded_for="", path="/mpesa/stk/callback")


def test_an_orphan_is_applied_once_its_request_exists(sale, owner):
    log = store(stk_success("ws_CO_ORPHAN0001", amount=116, receipt="QK12AB34CD"))
    assert process_callback(log.pk) == "orphan"
    assert list(stuck_callbacks()) == [log]
    StkRequestFactory(sale=sale, checkout_request_id="ws_CO_ORPHAN0001", amount=116)

    outcome = reprocess_callback(callback_id=log.pk, user=owner, reason=REASON)

    assert outcome == "Processed again: paid."
    assert Sale.objects.get().status == Sale.Status.COMPLETED
    assert MpesaTransaction.objects.get().receipt_number == "QK12AB34CD"
    assert not stuck_callbacks().exists()
    action = ManagerAction.objects.get()
    assert (action.action, action.shop, action.target, action.outcome) == (
        "reprocess_callback", None, f"callback #{log.pk} (STK result)", outcome)


def test_a_failed_callback_is_run_again_after_the_sweep_gave_up(sale, owner):
    stk = StkRequestFactory(sale=sale, amount=116)
    log = store(stk_success(stk.checkout_request_id, amount=116))
    CallbackLog.objects.filter(pk=log.pk).update(status=CallbackLog.Status.FAILED, attempts=10, error="bug, fixed")

    assert reprocess_callback(callback_id=log.pk, user=owner, reason=REASON) == "Processed again: paid."
    assert StkRequest.objects.get().status == StkRequest.Status.PAID


def test_a_still_orphan_callback_says_so(owner):
    log = store(stk_success("ws_CO_NOBODY", amount=116))
    process_callback(log.pk)

    outcome = reprocess_callback(callback_id=log.pk, user=owner, reason=REASON)

    assert outcome == "Processed again: orphan. No STK request with this CheckoutRequestID yet."


def test_a_processed_callback_is_refused(sale, owner):
    stk = StkRequestFactory(sale=sale, amount=116)
    log = store(stk_success(stk.checkout_request_id, amount=116))
    process_callback(log.pk)

    with pytest.raises(SaleError, match="processed already; running it again would change nothing"):
        reprocess_callback(callback_id=log.pk, user=owner, reason=REASON)
    assert not ManagerAction.objects.exists()


def test_a_rejected_callback_is_never_processed(sale, owner):
    stk = StkRequestFactory(sale=sale, amount=116)
    log = store(stk_success(stk.checkout_request_id, amount=116), remote_addr="203.0.113.9")

    with pytest.raises(SaleError, match="was rejected .* and is never processed"):
        reprocess_callback(callback_id=log.pk, user=owner, reason=REASON)
    assert Sale.objects.get().status == Sale.Status.PENDING


def test_an_unreadable_callback_is_refused(owner):
    log = store(b"not json")
    process_callback(log.pk)

    with pytest.raises(SaleError, match="could not be read"):
        reprocess_callback(callback_id=log.pk, user=owner, reason=REASON)


def test_managers_leave_raw_callbacks_to_owners(manager):
    log = store(stk_success("ws_CO_ORPHAN0002", amount=116))

    with pytest.raises(SaleError, match="only an owner"):
        reprocess_callback(callback_id=log.pk, user=manager, reason=REASON)
