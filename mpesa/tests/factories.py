"""Factories and Daraja-shaped payloads (copied from docs/daraja.md §4.3) for the M-Pesa tests."""

import importlib
import json
from contextlib import contextmanager
from decimal import Decimal

import factory
from django.urls import clear_url_caches

from inventory.tests.factories import ProductFactory
from mpesa.models import MpesaTransaction, StkRequest
from pos.services import ItemRequest, create_sale
from pos.tests.factories import SaleFactory


class StkRequestFactory(factory.django.DjangoModelFactory):
    """A prompt Daraja accepted and the customer has not answered yet."""

    class Meta:
        model = StkRequest

    sale = factory.SubFactory(SaleFactory)
    shop = factory.SelfAttribute("sale.shop")
    phone = "254708374149"
    amount = 116
    account_reference = factory.LazyAttribute(lambda o: o.sale.receipt_number[:12])
    merchant_request_id = factory.Sequence(lambda n: f"29115-34620561-{n}")
    checkout_request_id = factory.Sequence(lambda n: f"ws_CO_19122019102036{n:06d}")
    callback_token = factory.Sequence(lambda n: f"token-{n:040d}")
    status = StkRequest.Status.PENDING


class MpesaTransactionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MpesaTransaction

    receipt_number = factory.Sequence(lambda n: f"NLJ{n:07d}")
    amount = Decimal("116.00")
    source = MpesaTransaction.Source.C2B
    match_status = MpesaTransaction.Match.UNMATCHED


def make_pending_sale(*, cashier, till, product=None, quantity=1, price=None):
    """A real pending sale through pos.services (lines, totals, receipt number)."""
    if product is None:
        from inventory.services import receive_stock

        product = ProductFactory(price=price or Decimal("116.00"))
        receive_stock(shop_id=till.shop_id, product_id=product.pk, quantity=10)
    return create_sale(cashier=cashier, till=till, items=[ItemRequest(quantity=quantity, product_id=product.pk)])


def stk_success(checkout_request_id: str, *, amount=1.00, receipt="NLJ7RT61SV", phone=254708374149,
                merchant_request_id="29115-34620561-1") -> bytes:
    return json.dumps({"Body": {"stkCallback": {
        "MerchantRequestID": merchant_request_id,
        "CheckoutRequestID": checkout_request_id,
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": amount},
            {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": 20191219102115},
            {"Name": "PhoneNumber", "Value": phone},
        ]},
    }}}).encode()


def stk_failure(checkout_request_id: str, *, result_code=1032, result_desc="Request cancelled by user",
                merchant_request_id="f1e2-4b95-a71d-b30d3cdbb7a7942864") -> bytes:
    return json.dumps({"Body": {"stkCallback": {
        "MerchantRequestID": merchant_request_id,
        "CheckoutRequestID": checkout_request_id,
        "ResultCode": result_code,
        "ResultDesc": result_desc,
    }}}).encode()


def c2b_confirmation(trans_id="RKTQDM7W6S", *, amount="116.00", bill_ref="DEMO-0000001", shortcode="600638"):
    return json.dumps({
        "TransactionType": "Pay Bill", "TransID": trans_id, "TransTime": "20191122063845",
        "TransAmount": amount, "BusinessShortCode": shortcode, "BillRefNumber": bill_ref,
        "InvoiceNumber": "", "OrgAccountBalance": "49197.00", "ThirdPartyTransID": "",
        "MSISDN": "25470****149", "FirstName": "John", "MiddleName": "", "LastName": "",
    }).encode()


def open_shop_with_cashier(code: str, *, username: str):
    """Another shop with a till open for selling and its cashier: → (shop, till, cashier)."""
    from pos.services import open_shift
    from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory

    shop = ShopFactory(code=code, name=f"{code.title()} Duka")
    till = TillFactory(shop=shop, name="Till 1")
    cashier = StaffFactory(user=UserFactory(username=username), shop=shop, default_till=till).user
    open_shift(till=till, user=cashier, opening_float=Decimal("0"))
    return shop, till, cashier


def register_c2b_urls(*, version: str = "v2", response_type: str = "Completed") -> str:
    """Every active shop account's C2B URLs registered with the simulator, as an operator would."""
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("mpesa_register_urls", "--c2b-version", version, "--response-type", response_type, stdout=out)
    return out.getvalue()


@contextmanager
def callback_paths(settings, *, prefix: str, token: str):
    """Callback URLs as production serves them (a neutral prefix and a path secret), then back.

    mpesa/urls.py reads these settings when imported, so the URLconf is rebuilt each way.
    """
    import comolor.urls
    import mpesa.urls

    def build():
        importlib.reload(mpesa.urls)
        importlib.reload(comolor.urls)
        clear_url_caches()

    settings.MPESA_CALLBACK_PREFIX, settings.MPESA_CALLBACK_TOKEN = prefix, token
    build()
    try:
        yield token
    finally:
        settings.MPESA_CALLBACK_PREFIX, settings.MPESA_CALLBACK_TOKEN = "mpesa", ""
        build()
