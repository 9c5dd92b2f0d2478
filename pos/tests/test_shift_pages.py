"""The cashier's shift pages: open with a float, pay-ins and pay-outs, the blind count, the reports."""

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from inventory.models import Product

from pos.models import CashMovement, Shift, Staff
from pos.services import ItemRequest, add_staff, close_shift, create_sale, sell_for_cash
from pos.tests.factories import ShopFactory, StaffFactory, TillFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def shift(till):
    return till.shifts.get()


@pytest.fixture
def closed_till(cashier_client, cashier, shift):
    """Till 1 after its shift was closed: nothing open."""
    close_shift(shift_id=shift.pk, counted_cash="0", user=cashier)
    return shift.till


def text(response) -> str:
    return response.content.decode()


def test_with_no_open_shift_the_till_asks_for_the_float(cashier_client, closed_till):
    response = cashier_client.get(reverse("pos:home"), follow=True)

    assert response.redirect_chain == [(reverse("pos:shift-open"), 302)]
    page = text(response)
    assert "Open a shift on Till 1" in page and 'name="opening_float"' in page and "autofocus" in page
    assert f'href="{reverse("pos:shift-report", args=[closed_till.shifts.get().pk])}"' in page  # the last Z report


def test_opening_the_shift_leads_to_the_till(cashier_client, closed_till):
    response = cashier_client.post(reverse("pos:shift-open"), {"opening_float": "2,500"}, follow=True)

    assert response.redirect_chain == [(reverse("pos:home"), 302)]
    assert response.templates[0].name == "pos/till.html"
    shift = Shift.objects.get(till=closed_till, status=Shift.Status.OPEN)
    assert shift.opening_float == 2500
    assert f'href="{reverse("pos:shift")}">Shift</a>' in text(response)  # the header's link


def test_a_wrong_float_is_explained_on_the_form_and_kept(cashier_client, closed_till):
    response = cashier_client.post(reverse("pos:shift-open"), {"opening_float": "20OO"})

    page = text(response)
    assert response.status_code == 200
    assert "The opening float must be an amount in shillings, e.g. 2000 or 1500.50 (not &quot;20OO&quot;)." in page
    assert 'value="20OO"' in page
    assert not Shift.objects.filter(till=closed_till, status=Shift.Status.OPEN).exists()


def test_the_open_page_sends_a_till_with_a_shift_to_the_shift_page(cashier_client, shift):
    assert cashier_client.get(reverse("pos:shift-open")).url == reverse("pos:shift")


def test_the_forms_need_the_csrf_token(cashier, closed_till):
    client = Client(enforce_csrf_checks=True)
    client.force_login(cashier)

    assert client.post(reverse("pos:shift-open"), {"opening_float": "100"}).status_code == 403
    assert not Shift.objects.filter(status=Shift.Status.OPEN).exists()


def test_the_shift_page_shows_a_blind_x_report_and_records_a_pay_out(cashier_client, shift, cashier, product):
    sell_for_cash(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=1, sku=product.sku)],
                  tendered=Decimal("500"))

    response = cashier_client.post(reverse("pos:shift"), {"kind": "pay_out", "amount": "250",
                                                          "reason": "paid the bread delivery"}, follow=True)

    page = text(response)
    assert response.redirect_chain == [(reverse("pos:shift"), 302)]
    assert "Pay-out of KES 250.00 recorded: paid the bread delivery." in page
    assert "X report" in page and "Blind count: the cash the drawer should hold is shown once the shift" in page
    assert "Expected in the drawer" in page and "500.00" not in page and "116.00" not in page
    assert "paid the bread delivery" in page
    movement = CashMovement.objects.get()
    assert (movement.shift, movement.kind, movement.amount, movement.created_by) == (shift, "pay_out", 250, cashier)


def test_a_wrong_pay_in_is_explained_and_the_form_keeps_what_was_typed(cashier_client, shift):
    response = cashier_client.post(reverse("pos:shift"), {"kind": "pay_in", "amount": "300", "reason": ""})

    page = text(response)
    assert "Say what the pay-in was for" in page and 'value="300"' in page
    assert 'value="pay_in" checked' in page and not CashMovement.objects.exists()


def test_a_manager_at_the_till_sees_the_x_report_with_the_expected_cash(client, shop, shift, cashier, product):
    manager = UserFactory(username="akinyi")
    add_staff(manager, shop, Staff.Role.MANAGER, default_till=shift.till)
    sell_for_cash(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=1, sku=product.sku)],
                  tendered=Decimal("500"))
    client.force_login(manager)

    page = text(client.get(reverse("pos:shift")))

    assert "Blind count" not in page and "Cash received from customers" in page and "384.00" in page


def test_the_close_is_a_blind_count_then_a_confirmation_then_the_z_report(cashier_client, shift, cashier, product):
    sell_for_cash(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=2, sku=product.sku)],
                  tendered=Decimal("300"))  # 232 of sales in the drawer

    count_page = text(cashier_client.get(reverse("pos:shift-close")))
    assert 'name="counted_cash"' in count_page and "232" not in count_page

    confirm = text(cashier_client.post(reverse("pos:shift-close"), {"counted_cash": "212", "close_note": "torn note"}))
    assert "You counted <strong>KES 212.00</strong>" in confirm and "232" not in confirm
    assert Shift.objects.get(pk=shift.pk).status == Shift.Status.OPEN

    response = cashier_client.post(reverse("pos:shift-close"),
                                   {"counted_cash": "212.00", "close_note": "torn note", "confirm": "1"}, follow=True)

    assert response.redirect_chain == [(reverse("pos:shift-report", args=[shift.pk]), 302)]
    page = text(response)
    assert "Z report · shift #" in page and "Cash is KES 20.00 short." in page and "-20.00 short" in page
    assert "232.00" in page and "212.00" in page and "torn note" in page
    closed = Shift.objects.get(pk=shift.pk)
    assert (closed.status, closed.counted_cash, closed.expected_cash, closed.close_note) == ("closed", 212, 232,
                                                                                            "torn note")


def test_pressing_close_twice_shows_the_z_report_again(cashier_client, shift):
    data = {"counted_cash": "0", "confirm": "1"}
    cashier_client.post(reverse("pos:shift-close"), data)

    response = cashier_client.post(reverse("pos:shift-close"), data)

    assert response.url == reverse("pos:shift-report", args=[shift.pk])
    assert Shift.objects.filter(till=shift.till).count() == 1


def test_a_wrong_count_is_explained_before_anything_is_locked(cashier_client, shift):
    page = text(cashier_client.post(reverse("pos:shift-close"), {"counted_cash": "-5"}))

    assert "The cash counted cannot be negative." in page and 'value="-5"' in page
    assert Shift.objects.get(pk=shift.pk).status == Shift.Status.OPEN


def test_a_sale_waiting_for_payment_is_named_before_the_cashier_counts(cashier_client, shift, cashier, product):
    sale = create_sale(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=1, sku=product.sku)])

    page = text(cashier_client.get(reverse("pos:shift-close")))
    assert f"Sale {sale.receipt_number} (KES 116.00 to pay) is still waiting for payment on Till 1" in page
    assert 'name="counted_cash"' not in page

    cashier_client.post(reverse("pos:shift-close"), {"counted_cash": "0", "confirm": "1"})
    assert Shift.objects.get(pk=shift.pk).status == Shift.Status.OPEN


def test_another_shops_shift_report_is_a_404(client, shift):
    other = ShopFactory(code="MSA", name="Mombasa Duka")
    client.force_login(StaffFactory(shop=other, default_till=TillFactory(shop=other)).user)

    assert client.get(reverse("pos:shift-report", args=[shift.pk])).status_code == 404


def test_the_shift_pages_need_a_login(client, shift):
    for url in (reverse("pos:shift"), reverse("pos:shift-open"), reverse("pos:shift-close"),
                reverse("pos:shift-report", args=[shift.pk])):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url


def test_a_colleague_sees_a_closed_shifts_z_report_with_its_figures(client, shop, closed_till):
    colleague = StaffFactory(user=UserFactory(username="otieno"), shop=shop, default_till=closed_till).user
    client.force_login(colleague)
    shift = closed_till.shifts.get()

    page = text(client.get(reverse("pos:shift-report", args=[shift.pk])))

    assert "Z report" in page and "Expected in the drawer" in page and "0.00 balanced" in page
    assert "Everything balances: every method's count matches the records." in page
    assert f'action="{reverse("receipts:shift-print", args=[shift.pk])}"' in page
    assert f'href="{reverse("receipts:shift-slip", args=[shift.pk])}?print=1"' in page


def test_right_after_seed_demo_the_demo_cashier_opens_a_shift_and_sells(client, settings):
    settings.DEBUG = True
    call_command("seed_demo", stdout=StringIO())

    response = client.post(reverse("login"), {"username": "cashier", "password": "cashier"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("pos:shift-open")
    assert client.post(reverse("pos:shift-open"), {"opening_float": "0"}).url == reverse("pos:home")

    item = {"barcode": Product.objects.order_by("pk").first().barcode, "quantity": 1}
    sale = client.post(reverse("pos:create-sale"), data=json.dumps(
        {"items": [item], "payment_method": "cash", "amount_tendered": "5000"}), content_type="application/json")
    assert sale.status_code == 201, sale.content
