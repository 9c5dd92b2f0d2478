"""The read-only back office for prompts, raw callbacks, the ledger and Daraja calls."""

import pytest
from django.urls import reverse

from mpesa.models import CallbackLog, DarajaCall, MpesaTransaction, StkRequest
from mpesa.tests.factories import MpesaTransactionFactory, StkRequestFactory, make_pending_sale, stk_success
from pos.services import add_staff
from pos.tests.factories import UserFactory

MODELS = [StkRequest, CallbackLog, MpesaTransaction, DarajaCall]


@pytest.fixture
def records(client, cashier, till, product):
    stk = StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product), amount=116)
    client.post("/mpesa/stk/callback", data=stk_success(stk.checkout_request_id, amount=116),
                content_type="application/json")
    MpesaTransactionFactory()
    DarajaCall.objects.create(endpoint="/mpesa/stkpush/v1/processrequest", status_code=200)
    return stk


def url(model, action="changelist", *args):
    return reverse(f"admin:mpesa_{model._meta.model_name}_{action}", args=args)


@pytest.mark.parametrize("model", MODELS)
def test_a_superuser_sees_every_list_and_record_read_only(admin_client, records, model, django_assert_max_num_queries):
    with django_assert_max_num_queries(12):
        assert admin_client.get(url(model)).status_code == 200
    obj = model.objects.first()
    page = admin_client.get(url(model, "change", obj.pk))
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert admin_client.get(url(model, "add")).status_code == 403


def test_raw_bodies_are_shown_with_phone_numbers_masked(admin_client, records):
    log = CallbackLog.objects.get()
    page = admin_client.get(url(CallbackLog, "change", log.pk)).content.decode()
    assert "NLJ7RT61SV" in page and "254708374149" not in page


def test_a_manager_sees_their_shops_prompts_but_no_raw_callbacks(client, shop, records):
    manager = UserFactory(username="manager")
    add_staff(manager, shop, "manager")
    client.force_login(manager)
    assert client.get(url(StkRequest)).context["cl"].result_count == 1
    assert client.get(url(CallbackLog)).context["cl"].result_count == 0
