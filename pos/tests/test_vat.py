from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pos.services import vat_in


@pytest.mark.parametrize("gross, rate, vat", [
    ("116.00", "16", "16.00"),
    ("1.00", "16", "0.14"),
    ("1250.00", "8", "92.59"),
    ("65.00", "0", "0.00"),
])
def test_vat_is_gross_times_rate_over_100_plus_rate(gross, rate, vat):
    assert vat_in(Decimal(gross), Decimal(rate)) == Decimal(vat)


def test_an_exact_half_cent_rounds_up():
    # At 16% and 8% a whole-cent price never gives an exact half cent; 100% shows the rounding mode.
    assert vat_in(Decimal("0.01"), Decimal("100")) == Decimal("0.01")
    assert vat_in(Decimal("0.03"), Decimal("100")) == Decimal("0.02")


@given(cents=st.integers(min_value=0, max_value=10**9), rate=st.sampled_from(["0", "8", "16"]))
def test_vat_is_whole_cents_within_half_a_cent_of_the_exact_share(cents, rate):
    gross, rate = Decimal(cents) / 100, Decimal(rate)
    vat = vat_in(gross, rate)
    exact = gross * rate / (100 + rate)
    assert vat == vat.quantize(Decimal("0.01"))
    assert abs(vat - exact) <= Decimal("0.005")
