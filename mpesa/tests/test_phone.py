import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpesa.phone import InvalidPhone, normalise_phone


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("0708374149", "254708374149"),
        ("0708 374-149", "254708374149"),
        ("708374149", "254708374149"),
        ("+254708374149", "254708374149"),
        ("+254 708 374 149", "254708374149"),
        ("254708374149", "254708374149"),
        ("0110 123 456", "254110123456"),
        ("110123456", "254110123456"),
        ("254-110-123-456", "254110123456"),
        ("  0712345678  ", "254712345678"),
    ],
)
def test_every_way_a_cashier_types_a_number_becomes_2547_or_2541(typed, expected):
    assert normalise_phone(typed) == expected


@pytest.mark.parametrize(
    "typed, words",
    [
        ("", "Enter the customer's M-Pesa phone number"),
        ("   ", "Enter the customer's M-Pesa phone number"),
        ("07083741", "wrong number of digits"),
        ("07083741499", "wrong number of digits"),
        ("0208374149", "not a mobile number"),
        ("254508374149", "not a mobile number"),
        ("+255708374149", "not a Kenyan number"),
        ("0708-37414x", "digits only"),
        ("(0708) 374149", "digits only"),
    ],
)
def test_anything_else_is_refused_in_words(typed, words):
    with pytest.raises(InvalidPhone) as refused:
        normalise_phone(typed)
    assert words in str(refused.value)


def test_invalid_phone_is_a_value_error_so_forms_can_catch_it():
    assert issubclass(InvalidPhone, ValueError)


@given(prefix=st.sampled_from(["0", "+254", "254", ""]), first=st.sampled_from("17"),
       rest=st.text("0123456789", min_size=8, max_size=8))
def test_normalising_is_stable_and_keeps_the_subscriber_digits(prefix, first, rest):
    normalised = normalise_phone(f"{prefix}{first}{rest}")
    assert normalised == f"254{first}{rest}"
    assert normalise_phone(normalised) == normalised
