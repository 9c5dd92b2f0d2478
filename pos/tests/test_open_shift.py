"""Opening a shift: the float in words, one open shift per till (enforced by the database)."""

import threading
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, connections
from django.utils import timezone

from pos.models import Shift
from pos.services import ShiftError, close_shift, find_open_shift, open_shift
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def till2(shop):
    return TillFactory(shop=shop, name="Till 2")


def test_a_cashier_opens_a_shift_with_the_float_in_the_drawer(till2, cashier):
    shift = open_shift(till=till2, user=cashier, opening_float=Decimal("2000"))

    assert (shift.till, shift.shop_id, shift.opened_by, shift.opening_float) == (till2, till2.shop_id, cashier, 2000)
    assert shift.status == Shift.Status.OPEN and shift.closed_at is None and shift.counted_cash is None
    assert find_open_shift(till_id=till2.pk) == shift


@pytest.mark.parametrize("typed, amount", [
    ("2000", "2000.00"), ("2,000", "2000.00"), ("KES 1,500.50", "1500.50"), ("Ksh 750", "750.00"),
    (" 0 ", "0.00"), (0, "0.00"), (Decimal("99.9"), "99.90"),
])
def test_the_float_is_read_as_the_cashier_typed_it(till2, cashier, typed, amount):
    assert open_shift(till=till2, user=cashier, opening_float=typed).opening_float == Decimal(amount)


@pytest.mark.parametrize("typed, message", [
    ("", "Enter the opening float in shillings, e.g. 2000 or 1500.50."),
    (None, "Enter the opening float in shillings, e.g. 2000 or 1500.50."),
    ("two thousand", 'The opening float must be an amount in shillings, e.g. 2000 or 1500.50 (not "two thousand").'),
    ("NaN", 'The opening float must be an amount in shillings, e.g. 2000 or 1500.50 (not "NaN").'),
    ("-500", "The opening float cannot be negative."),
    ("100.005", "The opening float can have at most 2 decimal places (cents)."),
    ("6161100000017", 'The opening float is far too large ("6161100000017"): check the amount. '
                      "Was a barcode scanned into the box?"),
])
def test_a_wrong_float_is_refused_in_words_and_opens_nothing(till2, cashier, typed, message):
    with pytest.raises(ShiftError) as refused:
        open_shift(till=till2, user=cashier, opening_float=typed)

    assert str(refused.value) == message
    assert not till2.shifts.exists()


def test_a_second_shift_on_the_till_is_refused_and_names_the_open_one(till, cashier):
    shift = till.shifts.get()
    colleague = StaffFactory(user=UserFactory(username="otieno", first_name="Otieno", last_name="Odhiambo"),
                             shop=till.shop).user

    with pytest.raises(ShiftError) as refused:
        open_shift(till=till, user=colleague, opening_float="500")

    assert str(refused.value) == (
        f"Till 1 already has an open shift (#{shift.pk}), opened by wanjiru at "
        f"{timezone.localtime(shift.opened_at):%H:%M} with a float of KES 0.00. Sell on it, or close it first."
    )
    assert till.shifts.count() == 1


def test_each_till_of_the_shop_has_its_own_shift(till, till2, cashier):
    open_shift(till=till2, user=cashier, opening_float="1000")

    assert Shift.objects.filter(shop=till.shop, status=Shift.Status.OPEN).count() == 2


def test_the_till_opens_again_once_its_shift_is_closed(till, cashier):
    close_shift(shift_id=till.shifts.get().pk, counted_cash="0", user=cashier)

    shift = open_shift(till=till, user=cashier, opening_float="3000")

    assert find_open_shift(till_id=till.pk) == shift and till.shifts.count() == 2


def test_an_inactive_till_opens_no_shift(shop, cashier):
    closed = TillFactory(shop=shop, name="Back till", is_active=False)

    with pytest.raises(ShiftError, match=r"^Back till is closed \(inactive\)\. Choose another till or ask a manager"):
        open_shift(till=closed, user=cashier, opening_float="0")


def test_staff_of_another_shop_cannot_open_a_shift_on_this_till(till2):
    stranger = StaffFactory(shop=ShopFactory(code="MSA", name="Mombasa Duka")).user

    with pytest.raises(ShiftError, match="Only staff of this shop work shifts on its tills"):
        open_shift(till=till2, user=stranger, opening_float="0")
    assert not till2.shifts.exists()


def test_the_database_itself_refuses_a_second_open_shift(till, cashier):
    # PostgreSQL names the constraint; SQLite names its columns.
    with pytest.raises(IntegrityError, match="one_open_shift_per_till|pos_shift.till_id"):
        Shift.objects.create(shop=till.shop, till=till, opened_by=cashier, opening_float=0)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks across threads need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_two_opens_of_the_same_till_at_once_make_one_shift():
    shop = ShopFactory(code="RACE", name="Race Duka")
    till = TillFactory(shop=shop, name="Till 1")
    cashiers = [StaffFactory(shop=shop, default_till=till).user for _ in range(4)]
    start = threading.Barrier(len(cashiers))
    opened, refused = [], []

    def press_open(user):
        try:
            start.wait()
            opened.append(open_shift(till=till, user=user, opening_float="1000").pk)
        except ShiftError as error:
            refused.append(str(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=press_open, args=(user,)) for user in cashiers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(opened) == 1 and len(refused) == 3
    assert Shift.objects.filter(till=till).count() == 1
    assert all(message.startswith(f"Till 1 already has an open shift (#{opened[0]})") for message in refused)
