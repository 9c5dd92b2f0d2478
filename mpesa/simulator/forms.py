from django import forms

from . import services


class C2BPaymentForm(forms.Form):
    """A customer paying from the M-Pesa menu: a paybill with an account number, or a till."""

    shortcode = forms.ChoiceField(label="Pay to")
    amount = forms.IntegerField(label="Amount (KES)", min_value=1, max_value=services.MAX_AMOUNT)
    phone = forms.RegexField(
        label="From phone", regex=r"^254[17]\d{8}$", initial="254708374149",
        error_messages={"invalid": "Use the form 2547XXXXXXXX or 2541XXXXXXXX."},
    )
    account = forms.CharField(label="Account number (paybill only)", max_length=20, required=False)
    first_name = forms.CharField(max_length=40, initial="JOHN")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["shortcode"].choices = [
            (number, f"{number} ({'till' if is_till else 'paybill'})")
            for number, (_, is_till) in services.payable_numbers().items()
        ]
