"""Pay-ins and pay-outs: cash into or out of the drawer other than by a sale, each with its reason."""

import pytest
from django.db import IntegrityError

from pos.models import CashMovement
from pos.services import ShiftError, close_shift, record_cash_movement
from pos.tests.factories import ShopFactory, StaffFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def shift(till):
    return till.shifts.get()


@pytest.mark.parametrize("kind, label", [("pay_in", "pay-in"), ("pay_out", "pay-out")])
def test_a_movement_is_recorded_with_its_reason_and_who(cashier, shift, kind, label):
    movement = record_cash_movement(shift_id=shift.pk, kind=kind, amount="1,500", reason="  change   from the safe ",
                                    user=cashier)

    assert (movement.shift, movement.kind, movement.amount, movement.reason, movement.created_by) == (
        shift, kind, 1500, "change from the safe", cashier)
    assert movement.get_kind_display() == label and movement.created_at


@pytest.mark.parametrize("kind, amount, reason, message", [
    ("refund", "100", "x", "Choose pay-in (cash put into the drawer) or pay-out (cash taken out of it)."),
    ("pay_out", "0", "airtime", "A pay-out must be more than zero."),
    ("pay_out", "-20", "airtime", "The pay-out amount cannot be negative."),
    ("pay_in", "", "float", "Enter the pay-in amount in shillings, e.g. 2000 or 1500.50."),
    ("pay_out", "300", "   ", 'Say what the pay-out was for, e.g. "paid the bread delivery": '
                              "the manager sees it in the report."),
    ("pay_in", "300", "", 'Say what the pay-in was for, e.g. "change from the safe": '
                          "the manager sees it in the report."),
    ("pay_out", "300", "x" * 201, "Keep the reason for the pay-out under 200 characters."),
])
def test_a_wrong_movement_is_refused_in_words_and_records_nothing(cashier, shift, kind, amount, reason, message):
    with pytest.raises(ShiftError) as refused:
        record_cash_movement(shift_id=shift.pk, kind=kind, amount=amount, reason=reason, user=cashier)

    assert str(refused.value) == message
    assert not CashMovement.objects.exists()


def test_a_closed_shift_takes_no_movement(cashier, shift):
    close_shift(shift_id=shift.pk, counted_cash="0", user=cashier)

    with pytest.raises(ShiftError, match=rf"^Shift #{shift.pk} is closed: it takes no more pay-ins or pay-outs\. "
                                         r"Open a new shift\.$"):
        record_cash_movement(shift_id=shift.pk, kind="pay_in", amount="100", reason="float", user=cashier)


def test_staff_of_another_shop_records_no_movement_on_this_shift(shift):
    stranger = StaffFactory(shop=ShopFactory(code="MSA", name="Mombasa Duka")).user

    with pytest.raises(ShiftError, match="Only staff of this shop work shifts on its tills"):
        record_cash_movement(shift_id=shift.pk, kind="pay_out", amount="100", reason="taxi", user=stranger)
    assert not CashMovement.objects.exists()


@pytest.mark.parametrize("fields, constraint", [
    ({"amount": 0, "reason": "float"}, "cash_movement_amount_positive"),
    ({"amount": 10, "reason": ""}, "cash_movement_has_a_reason"),
])
def test_the_database_refuses_a_movement_without_an_amount_or_a_reason(cashier, shift, fields, constraint):
    with pytest.raises(IntegrityError, match=constraint):
        CashMovement.objects.create(shift=shift, kind="pay_in", created_by=cashier, **fields)
