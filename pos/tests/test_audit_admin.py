"""The audit trail in the admin is read-only for everyone, superusers included: raw callbacks,
Daraja calls, the ledgers, shifts and their cash movements, the admin's own log and the managers'
actions. Nobody can add, change or delete a row there."""

from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from mpesa.models import CallbackLog, DarajaCall
from mpesa.services import process_callback, record_callback
from mpesa.tests.factories import MpesaTransactionFactory, StkRequestFactory, make_pending_sale, stk_success
from inventory.admin import ReadOnlyAdminMixin
from pos.models import CashMovement, ManagerAction, Sale, Shift
from pos.services import ItemRequest, close_shift, record_cash_movement, record_manager_action, sell_for_cash
from pos.tests.backoffice import manager, manager_client  # noqa: F401

AUDIT = ["admin.LogEntry", "inventory.StockMovement", "mpesa.CallbackLog", "mpesa.DarajaCall",
         "mpesa.MpesaTransaction", "mpesa.StkRequest", "pos.ManagerAction",
         "pos.Sale", "pos.Shift"]


def admin_url(model, action, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{action}", args=args)


@pytest.fixture
def trail(shop, till, cashier, product, manager):
    """A row of every audited kind."""
    sale = sell_for_cash(cashier=cashier, till=till, items=[ItemRequest(quantity=1, product_id=product.pk)],
                         tendered=Decimal("200"))[0]
    stk = StkRequestFactory(sale=make_pending_sale(cashier=cashier, till=till, product=product), amount=116)
    log = record_callback(kind="stk", body=stk_success(stk.checkout_request_id, amount=116), headers={},
                          remote_addr="127.0.0.1", forwarded_for="", path="/mpesa/stk/callback")
    process_callback(log.pk)
    MpesaTransactionFactory(shop=shop)
    DarajaCall.objects.create(endpoint="/mpesa/stkpush/v1/processrequest", status_code=200,
                              request_body={"PhoneNumber": "2547****149", "Password": "[redacted]"})
    record_manager_action(user=manager, shop_id=shop.pk, action=ManagerAction.Action.CANCEL_SALE,
                          target="sale DEMO-0000009", reason="left")
    LogEntry.objects.create(user=manager, content_type=ContentType.objects.get_for_model(Sale),
                            object_id=str(sale.pk), object_repr=sale.receipt_number, action_flag=CHANGE)
    shift = till.shifts.get()
    record_cash_movement(shift_id=shift.pk, kind="pay_out", amount=Decimal("50"), reason="bread", user=cashier)
    close_shift(shift_id=shift.pk, counted_cash=Decimal("60"), user=cashier)
    return log


@pytest.mark.parametrize("label", AUDIT)
def test_an_audit_record_cannot_be_added_changed_or_deleted_even_by_a_superuser(admin_client, trail, label):
    model = apps.get_model(label)
    assert model in admin.site._registry, f"{label} must be in the admin, read-only"
    obj = model._default_manager.first()
    before = model._default_manager.filter(pk=obj.pk).values().get()

    change = admin_client.get(admin_url(model, "change", obj.pk))
    assert change.status_code == 200 and b'name="_save"' not in change.content
    assert admin_client.post(admin_url(model, "change", obj.pk), {}).status_code == 403
    assert admin_client.get(admin_url(model, "add")).status_code == 403
    assert admin_client.post(admin_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    changelist = admin_client.get(admin_url(model, "changelist"))
    assert "delete_selected" not in changelist.context["cl"].model_admin.get_actions(changelist.wsgi_request)
    assert model._default_manager.filter(pk=obj.pk).values().get() == before


def test_a_shifts_cash_movements_show_on_it_read_only(admin_client, trail):
    shift = Shift.objects.get()
    inline = next(inline for inline in admin.site._registry[Shift].inlines if inline.model is CashMovement)

    assert issubclass(inline, ReadOnlyAdminMixin)
    response = admin_client.get(admin_url(Shift, "change", shift.pk))
    movements = next(f for f in response.context["inline_admin_formsets"] if f.opts.model is CashMovement)
    assert "bread" in response.content.decode()
    assert (movements.has_add_permission, movements.has_change_permission, movements.has_delete_permission) == (
        False, False, False)


def test_a_raw_callback_shows_its_body_source_address_and_verdict(admin_client, trail):
    page = admin_client.get(admin_url(CallbackLog, "change", trail.pk)).content.decode()

    assert "NLJ7RT61SV" in page and "127.0.0.1" in page and "processed" in page
    assert "254708374149" not in page  # the payer's number is masked even here


def test_a_managers_actions_list_shows_who_what_and_why(manager_client, trail):
    page = manager_client.get(admin_url(ManagerAction, "changelist")).content.decode()

    assert "akinyi" in page and "sale DEMO-0000009" in page and "left" in page


def test_a_manager_reads_the_admin_log_of_their_shop(manager_client, trail):
    response = manager_client.get(admin_url(LogEntry, "changelist"))

    assert response.status_code == 200 and response.context["cl"].result_count == 1
