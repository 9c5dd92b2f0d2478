"""Tenancy (reliability.md §4, S1–S3) over every admin registered, so a new one is covered as soon
as it exists: two shops with rows of every kind; the manager of shop A must never see, choose,
find, open, change or act on shop B's rows; cashiers never reach the admin; and a cashier of shop A
gets 404 for shop B's sale, receipt, payment and claim on every cashier URL that takes an id.

A new admin fails `test_every_admin_is_scoped_or_declared` until it is a ShopScopedAdmin, a
ChainWideAdmin, or listed in NOT_PER_SHOP with the reason; a new shop-scoped model fails until the
`world` fixture below holds a row of it in each shop.
"""

from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from inventory.admin import ShopScopedAdmin
from inventory.services import receive_stock
from mpesa.admin import ChainWideAdmin
from mpesa.models import CallbackLog, DarajaCall, MpesaTransaction, PaymentClaim
from mpesa.tests.factories import MpesaTransactionFactory, StkRequestFactory, make_pending_sale
from pos.models import ManagerAction, Sale, Shop
from pos.services import ItemRequest, record_manager_action, sell_for_cash
from pos.tests.backoffice import (manager, manager_client, other_manager, other_shop, other_till,  # noqa: F401
                                  owner)
from receipts.tests.factories import PrinterFactory

User = get_user_model()

# Admins whose rows belong to no one shop, and why a manager of one shop may (or may not) use them.
NOT_PER_SHOP = {
    "auth.Group": "the role groups; only owners and superusers have the permission",
    "auth.User": "logins; only owners (chain-wide) and superusers manage them",
    "inventory.Product": "one catalogue for the chain; stock on hand is per shop (StockLevel)",
}
REGISTRY = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)
SCOPED = [model for model, model_admin in REGISTRY if isinstance(model_admin, ShopScopedAdmin)]
CHAIN_WIDE = [model for model, model_admin in REGISTRY if isinstance(model_admin, ChainWideAdmin)]


def label(model):
    return model._meta.label


def admin_url(model, action, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{action}", args=args)


def of_shop(model, shop):
    """The rows of `model` that belong to `shop`, or None for a model that belongs to no shop."""
    model_admin = admin.site._registry.get(model)
    if isinstance(model_admin, ShopScopedAdmin):
        return model._default_manager.filter(**{model_admin.shop_path: shop.pk})
    if model is Shop:
        return Shop.objects.filter(pk=shop.pk)
    if model is User:
        return User.objects.filter(staff__shop=shop)
    names = {field.name for field in model._meta.fields}
    for path in ("shop", "till"):
        if path in names:
            return model._default_manager.filter(**{"shop" if path == "shop" else "till__shop": shop})
    return None


@pytest.fixture
def world(shop, till, cashier, product, other_shop, other_till, manager, other_manager, owner, settings,
          django_capture_on_commit_callbacks):
    """Rows of every shop-scoped kind in both shops (cash sales with their receipts and print jobs,
    pending sales with prompts and claims, ledger rows, printers, manager actions, admin log entries),
    plus raw callbacks and Daraja calls that belong to no shop."""
    receive_stock(shop_id=other_shop.pk, product_id=product.pk, quantity=20)
    rows = {}
    for key, shop_, till_, person, boss in [("a", shop, till, cashier, manager),
                                            ("b", other_shop, other_till, other_till.shifts.get().opened_by,
                                             other_manager)]:
        PrinterFactory(till=till_, kind="file", host="", device=str(settings.BASE_DIR / "var" / "test-receipts"))
        with django_capture_on_commit_callbacks(execute=True):  # the receipt's print job
            sold = sell_for_cash(cashier=person, till=till_, items=[ItemRequest(quantity=1, product_id=product.pk)],
                                 tendered=Decimal("200"))[0]
        pending = make_pending_sale(cashier=person, till=till_, product=product)
        StkRequestFactory(sale=pending)
        tx = MpesaTransactionFactory(shop=shop_, amount=Decimal("116"), receipt_number=f"QK{key.upper()}0000001")
        claim = PaymentClaim.objects.create(sale=pending, shop=shop_, code=f"QK{key.upper()}0000002",
                                            claimed_by=person)
        record_manager_action(user=boss, shop_id=shop_.pk, action=ManagerAction.Action.CANCEL_SALE,
                              target=f"sale {pending.receipt_number}", reason="test")
        LogEntry.objects.create(user=boss, content_type=ContentType.objects.get_for_model(Sale),
                                object_id=str(sold.pk), object_repr=sold.receipt_number, action_flag=CHANGE)
        rows[key] = {"shop": shop_, "sale": sold, "pending": pending, "tx": tx, "claim": claim}
    CallbackLog.objects.create(kind="stk", body=b"{}", status="orphan")
    DarajaCall.objects.create(endpoint="/mpesa/stkpushquery/v1/query", status_code=200)
    return rows


def test_every_admin_is_scoped_or_declared():
    undeclared = [label(model) for model, model_admin in REGISTRY
                  if not isinstance(model_admin, (ShopScopedAdmin, ChainWideAdmin))
                  and label(model) not in NOT_PER_SHOP]
    assert not undeclared, (f"{undeclared}: make each a ShopScopedAdmin (with its shop_path) or a "
                            "ChainWideAdmin, or add it to NOT_PER_SHOP with the reason")


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_the_world_has_rows_of_every_scoped_kind_in_both_shops(world, model):
    for key in "ab":
        assert of_shop(model, world[key]["shop"]).exists(), (
            f"add a {label(model)} of shop {key.upper()} to the world fixture so its scoping is tested")


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_a_managers_change_list_holds_only_their_shop(manager_client, world, model):
    response = manager_client.get(admin_url(model, "changelist"))
    if response.status_code == 403:
        return  # no view permission at all: nothing of either shop is shown
    assert response.status_code == 200
    shown = set(response.context["cl"].queryset.values_list("pk", flat=True))
    assert shown and shown <= set(of_shop(model, world["a"]["shop"]).values_list("pk", flat=True))
    page = response.content.decode()
    assert world["b"]["shop"].name not in page  # not in a row, nor among the filter's choices
    assert world["b"]["sale"].receipt_number not in page


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_another_shops_rows_are_404_by_url(manager_client, world, model):
    for pk in of_shop(model, world["b"]["shop"]).values_list("pk", flat=True)[:3]:
        for action in ["change", "history", "delete"]:
            url = admin_url(model, action, pk)
            assert manager_client.get(url).status_code in (403, 404), url
            assert manager_client.post(url, {"post": "yes"}).status_code in (403, 404), url


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_search_never_finds_another_shops_rows(manager_client, world, model):
    model_admin = admin.site._registry[model]
    others = set(of_shop(model, world["b"]["shop"]).values_list("pk", flat=True))
    for field in model_admin.search_fields:
        lookup = field.lstrip("=^@")
        for value in of_shop(model, world["b"]["shop"]).values_list(lookup, flat=True)[:2]:
            if value in (None, ""):
                continue
            response = manager_client.get(admin_url(model, "changelist"), {"q": str(value)})
            if response.status_code == 403:
                return
            found = set(response.context["cl"].queryset.values_list("pk", flat=True))
            assert not found & others, f"searching {field}={value!r}"


def _choice_fields(response):
    forms = [response.context["adminform"].form]
    for inline in response.context.get("inline_admin_formsets", []):
        forms += list(inline.formset.forms) + [inline.formset.empty_form]
    for form in forms:
        for name, field in form.fields.items():
            # A hidden one is a formset's own row id, checked against the formset's scoped rows.
            if hasattr(field, "queryset") and field.queryset is not None and not field.widget.is_hidden:
                yield f"{type(form).__name__}.{name}", field.queryset


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_foreign_key_choices_hold_only_the_managers_shop(manager_client, world, model):
    model_admin_url = admin_url(model, "add")
    response = manager_client.get(model_admin_url)
    if response.status_code == 403:
        own = of_shop(model, world["a"]["shop"]).first()
        response = manager_client.get(admin_url(model, "change", own.pk))
    assert response.status_code in (200, 403)
    if response.status_code == 403:
        return
    for name, queryset in _choice_fields(response):
        theirs = of_shop(queryset.model, world["b"]["shop"])
        if theirs is not None:
            assert not queryset.filter(pk__in=theirs.values("pk")).exists(), f"{label(model)}: {name}"


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_actions_on_another_shops_rows_change_nothing(manager_client, world, model):
    model_admin = admin.site._registry[model]
    request = manager_client.get(admin_url(model, "changelist")).wsgi_request
    theirs = of_shop(model, world["b"]["shop"])
    before = list(theirs.order_by("pk").values())
    for action in model_admin.get_actions(request):
        response = manager_client.post(admin_url(model, "changelist"), {
            "action": action, "_selected_action": list(theirs.values_list("pk", flat=True)),
            "apply": "1", "post": "yes", "reason": "not my shop", "method": "cash",
        })
        assert response.status_code in (200, 302), action
        if response.status_code == 200:
            assert world["b"]["sale"].receipt_number not in response.content.decode(), action
    assert list(theirs.order_by("pk").values()) == before
    assert not ManagerAction.objects.filter(shop=world["b"]["shop"]).exclude(reason="test").exists()


@pytest.mark.parametrize("model", CHAIN_WIDE, ids=label)
def test_rows_of_no_shop_are_for_owners_only(manager_client, client, owner, world, model):
    obj = model._default_manager.first()
    assert manager_client.get(admin_url(model, "changelist")).context["cl"].result_count == 0
    assert manager_client.get(admin_url(model, "change", obj.pk)).status_code == 404
    client.force_login(owner)
    assert client.get(admin_url(model, "change", obj.pk)).status_code == 200


@pytest.mark.parametrize("model", [model for model, _ in REGISTRY], ids=label)
def test_a_cashier_has_no_admin_page_at_all(cashier_client, world, model):
    response = cashier_client.get(admin_url(model, "changelist"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


def test_a_cashier_has_no_admin_index(cashier_client):
    response = cashier_client.get(reverse("admin:index"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


def test_the_back_office_pages_of_another_shop_are_404(manager_client, world):
    other = world["b"]
    urls = [
        reverse("admin:mpesa_mpesatransaction_assign", args=[other["tx"].pk]),
        reverse("admin:mpesa_mpesatransaction_settlement") + f"?shop={other['shop'].pk}",
        reverse("admin:mpesa_mpesatransaction_settlement") + f"?shop={other['shop'].pk}&format=csv",
        reverse("admin:receipts_salereceipt_preview", args=[other["sale"].pk]),
        reverse("admin:pos_sale_dashboard") + f"?shop={other['shop'].pk}",
        reverse("admin:pos_sale_export") + f"?shop={other['shop'].pk}",
        reverse("admin:inventory_stocklevel_export") + f"?shop={other['shop'].pk}",
    ]
    for url in urls:
        assert manager_client.get(url).status_code == 404, url


def test_the_sale_picker_offers_only_the_managers_shop(manager_client, world):
    url = reverse("admin:mpesa_mpesatransaction_assign", args=[world["a"]["tx"].pk])
    theirs = world["b"]["pending"]

    offered = [sale for sale, _ in manager_client.get(url).context["candidates"]]
    assert offered and all(sale.shop_id == world["a"]["shop"].pk for sale in offered)
    assert manager_client.get(url, {"q": theirs.receipt_number}).context["candidates"] == []
    page = manager_client.post(url, {"sale": theirs.pk, "reason": "theirs"})
    assert "That sale is not one this payment can pay" in page.content.decode()


def test_a_payment_of_no_shop_is_not_a_managers_to_place(manager_client, world):
    tx = world["a"]["tx"]
    MpesaTransaction.objects.filter(pk=tx.pk).update(shop=None)  # paid to an account no shop has

    assert manager_client.get(reverse("admin:mpesa_mpesatransaction_assign", args=[tx.pk])).status_code == 404


# --- S1: the cashier's own pages --------------------------------------------------------------------

def _cashier_urls():
    """Every non-admin URL that takes an object id (the till's JSON, receipts, claims, shifts…)."""
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if str(pattern.pattern) not in ("admin/", "daraja-sim/"):
                    yield from walk(pattern.url_patterns, prefix + (pattern.namespace + ":" if pattern.namespace
                                                                    else ""))
            elif isinstance(pattern, URLPattern) and pattern.name:
                ints = [name for name, conv in pattern.pattern.converters.items()
                        if type(conv).__name__ == "IntConverter"]
                if ints:
                    yield prefix + pattern.name, ints
    return sorted(set((name, tuple(ints)) for name, ints in walk(get_resolver().url_patterns)))


def test_every_cashier_url_with_an_id_is_404_for_another_shops_object(cashier_client, world):
    other = world["b"]
    ids = {"sale_id": other["pending"].pk, "claim_id": other["claim"].pk,
           "shift_id": other["sale"].shift_id, "pk": other["sale"].pk}
    completed = {"sale_id": other["sale"].pk}
    checked = []
    for name, kwargs in _cashier_urls():
        unknown = set(kwargs) - set(ids)
        assert not unknown, f"{name}: say which shop-B object {unknown} names in this test's `ids`"
        for values in (ids, {**ids, **completed}):
            url = reverse(name, kwargs={key: values[key] for key in kwargs})
            for method in (cashier_client.get, cashier_client.post):
                status = method(url).status_code
                # 405: the method is not served at all there, so nothing about the object is told.
                assert status in (404, 405), f"{url}: {status}"
            checked.append(url)
    assert any("/cashier/sales/" in url for url in checked) and any("/receipts/" in url for url in checked)


# --- S3: the till's list of payments nobody has claimed --------------------------------------------

def test_the_unclaimed_payments_list_shows_only_the_cashiers_shop(cashier_client, world):
    payments = cashier_client.get(reverse("mpesa:unclaimed-payments")).json()["payments"]

    codes = {payment["receipt_number"] for payment in payments}
    assert world["a"]["tx"].receipt_number in codes and world["b"]["tx"].receipt_number not in codes


def test_models_with_a_shop_field_are_all_shop_scoped():
    """A shop-owned model registered with a plain admin would leak: every admin of a model with a
    shop (or till) link must be a ShopScopedAdmin."""
    for model, model_admin in REGISTRY:
        links = {field.name for field in model._meta.fields if isinstance(field, models.ForeignKey)}
        if links & {"shop", "till", "sale"}:
            assert isinstance(model_admin, ShopScopedAdmin), label(model)
