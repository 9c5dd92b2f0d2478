"""The X and Z reports: per payment method, what the records expect against what was counted or
received, and the difference; the drawer's expected cash kept from a cashier until the count."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from inventory.services import receive_stock
from inventory.tests.factories import ProductFactory
from mpesa.models import MpesaAccount, MpesaTransaction
from mpesa.services import claim_mpesa_payment, refund_overpayment
from mpesa.tests.factories import MpesaTransactionFactory, c2b_confirmation
from pos.models import Staff
from pos.services import (ItemRequest, add_staff, cancel_sale, close_shift, create_sale, open_shift,
                          record_cash_movement, sell_for_cash, shift_report)
from pos.tests.factories import ShopFactory, TillFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def shift(shop, cashier):
    return open_shift(till=TillFactory(shop=shop, name="Till 2"), user=cashier, opening_float="2000")


@pytest.fixture
def manager(shop):
    user = UserFactory(username="akinyi")
    add_staff(user, shop, Staff.Role.MANAGER)
    return user


def sell_cash(cashier, shift, product, *, quantity=1, tendered):
    return sell_for_cash(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=quantity, sku=product.sku)],
                         tendered=Decimal(tendered))[0]


def sell_mpesa(cashier, shift, product, *, sent=None, receipt):
    """A sale paid by M-Pesa the way the ledger pays it: a matched transaction, applied by the signal."""
    sale = create_sale(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=1, sku=product.sku)])
    MpesaTransactionFactory(receipt_number=receipt, amount=sent or sale.total, sale=sale, shop=sale.shop,
                            source=MpesaTransaction.Source.STK_CALLBACK, match_status=MpesaTransaction.Match.MATCHED,
                            msisdn="254708374149")
    sale.refresh_from_db()
    assert sale.status == "completed"
    return sale


def paid_to_the_shop(client, *, receipt, amount, when=None):
    """A customer pays the shop's paybill from the M-Pesa menu, naming no sale: Safaricom confirms it."""
    body = json.loads(c2b_confirmation(receipt, amount=amount, bill_ref="", shortcode="600638"))
    body["TransTime"] = f"{timezone.localtime(when or timezone.now()):%Y%m%d%H%M%S}"
    response = client.post(reverse("mpesa:c2b-confirmation"), data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    return MpesaTransaction.objects.get(receipt_number=receipt)


def row(report, method):
    return next(item for item in report["methods"] if item["method"] == method)


def lines(report, method):
    return {line["label"]: line["amount"] for line in row(report, method)["lines"]}


def test_the_cash_expected_is_the_cash_handed_over_less_change_and_pay_outs(cashier, manager, shift, product):
    sell_cash(cashier, shift, product, quantity=2, tendered="500")  # 232, change 268
    sell_cash(cashier, shift, product, tendered="116")  # exact
    record_cash_movement(shift_id=shift.pk, kind="pay_in", amount="1000", reason="change from the safe", user=cashier)
    record_cash_movement(shift_id=shift.pk, kind="pay_out", amount="300", reason="bread delivery", user=cashier)

    report = shift_report(shift_id=shift.pk, user=manager)

    assert (report["kind"], report["title"], report["blind"], report["balanced"]) == ("X", "X report", False, False)
    assert lines(report, "cash") == {
        "Opening float": Decimal("2000"), "Cash received from customers": Decimal("616"),
        "Change given": Decimal("-268"), "Pay-ins": Decimal("1000"), "Pay-outs": Decimal("-300"),
    }
    cash = row(report, "cash")
    # 2,000 + 348 of sales + 1,000 − 300: the change was never the shop's money.
    assert (cash["expected"], cash["received"], cash["difference"]) == (Decimal("3048"), None, None)
    assert report["sales"] == {"completed": 2, "completed_total": Decimal("348"), "vat_total": Decimal("48"),
                               "cancelled": 0, "pending": 0}
    assert [(m["label"], m["amount"], m["reason"], m["by"]) for m in report["movements"]] == [
        ("pay-in", 1000, "change from the safe", "wanjiru"), ("pay-out", 300, "bread delivery", "wanjiru")]


def test_a_cashier_sees_no_figure_that_gives_away_the_drawer_before_the_count(cashier, shift, product):
    sell_cash(cashier, shift, product, tendered="200")
    record_cash_movement(shift_id=shift.pk, kind="pay_out", amount="50", reason="airtime", user=cashier)

    report = shift_report(shift_id=shift.pk, user=cashier)

    cash = row(report, "cash")
    assert report["blind"] is True and cash["expected"] is None and cash["received"] is None
    assert lines(report, "cash") == {"Opening float": 2000, "Pay-ins": 0, "Pay-outs": -50}
    assert report["sales"]["completed"] == 1 and report["sales"]["completed_total"] is None
    assert report["sales"]["vat_total"] is None


def test_the_z_report_shows_a_shortage_per_method_to_the_cashier_once_counted(cashier, shift, product):
    sell_cash(cashier, shift, product, tendered="1000")  # 116, change 884
    sell_mpesa(cashier, shift, product, receipt="TKR0000001")
    close_shift(shift_id=shift.pk, counted_cash="1916", user=cashier, note="200 short, will explain")

    report = shift_report(shift_id=shift.pk, user=cashier)

    assert (report["kind"], report["blind"], report["closed_by"], report["close_note"]) == (
        "Z", False, "wanjiru", "200 short, will explain")
    cash, mpesa = row(report, "cash"), row(report, "mpesa")
    assert (cash["expected"], cash["received"], cash["difference"]) == (2116, 1916, -200)
    assert (mpesa["expected"], mpesa["received"], mpesa["difference"]) == (116, 116, 0)
    assert mpesa["expected_label"] == "Sales paid by M-Pesa (1)" and mpesa["attention"] == []
    assert report["summary"] == ["Cash is KES 200.00 short."] and report["balanced"] is False


def test_an_over_count_reads_as_over(cashier, shift):
    close_shift(shift_id=shift.pk, counted_cash="2100", user=cashier)

    report = shift_report(shift_id=shift.pk)

    assert row(report, "cash")["difference"] == 100 and report["summary"] == ["Cash is KES 100.00 over."]


def test_a_balanced_shift_says_so(cashier, shift):
    close_shift(shift_id=shift.pk, counted_cash="2000", user=cashier)

    report = shift_report(shift_id=shift.pk)

    assert report["balanced"] is True and report["summary"] == []


def test_change_given_on_an_mpesa_payment_comes_out_of_the_drawer(cashier, shop, shift):
    loaf = ProductFactory(sku="LOAF", price=Decimal("99.50"))
    receive_stock(shop_id=shop.pk, product_id=loaf.pk, quantity=5)
    sell_mpesa(cashier, shift, loaf, sent=Decimal("100"), receipt="TKR0000002")  # whole shillings: 0.50 back

    report = shift_report(shift_id=shift.pk)

    assert lines(report, "cash")["Change given on M-Pesa payments"] == Decimal("-0.50")
    assert row(report, "cash")["expected"] == Decimal("1999.50")
    assert (row(report, "mpesa")["expected"], row(report, "mpesa")["received"]) == (100, 100)


def test_an_unmatched_mpesa_payment_in_the_shift_is_listed_for_the_manager(client, cashier, shop, shift, product):
    MpesaAccount.objects.create(shop=shop, shortcode="600638")
    other_shop = ShopFactory(code="MSA", name="Mombasa Duka")
    MpesaAccount.objects.create(shop=other_shop, shortcode="600999")
    sell_mpesa(cashier, shift, product, receipt="TKR0000003")
    paid_to_the_shop(client, receipt="UNM0000001", amount="500.00")
    paid_to_the_shop(client, receipt="OLD0000001", amount="80.00", when=shift.opened_at - timedelta(hours=2))
    elsewhere = json.loads(c2b_confirmation("MSA0000001", amount="70.00", bill_ref="", shortcode="600999"))
    elsewhere["TransTime"] = f"{timezone.localtime():%Y%m%d%H%M%S}"
    client.post(reverse("mpesa:c2b-confirmation"), data=json.dumps(elsewhere), content_type="application/json")
    close_shift(shift_id=shift.pk, counted_cash="2000", user=cashier)

    report = shift_report(shift_id=shift.pk)

    mpesa = row(report, "mpesa")
    assert (mpesa["expected"], mpesa["received"], mpesa["difference"]) == (116, 116, 0)
    [unmatched] = mpesa["attention"]
    assert unmatched["title"] == "Unmatched M-Pesa payments to the shop during this shift (any till)"
    assert unmatched["total"] == 500
    [item] = unmatched["items"]
    assert (item["reference"], item["amount"]) == ("UNM0000001", 500)
    assert item["detail"].startswith("25470****149 · John")
    assert report["summary"] == [
        "1 M-Pesa payment (KES 500.00) to the shop during this shift matches no sale: a manager assigns it to the "
        "right sale in the back office."]


def test_a_closed_shifts_unmatched_payment_refunded_by_a_manager_leaves_it_balanced(client, cashier, manager, shop,
                                                                                      shift):
    MpesaAccount.objects.create(shop=shop, shortcode="600638")
    stray = paid_to_the_shop(client, receipt="UNM0000002", amount="300.00")
    close_shift(shift_id=shift.pk, counted_cash="2000", user=cashier)
    assert shift_report(shift_id=shift.pk)["balanced"] is False

    refund_overpayment(transaction_id=stray.pk, user=manager, method="outside",
                       reason="customer paid the wrong shop, reversed by Safaricom")

    report = shift_report(shift_id=shift.pk)
    assert row(report, "mpesa")["attention"] == [] and report["summary"] == [] and report["balanced"] is True


def test_an_overpayment_assigned_by_a_manager_shows_the_excess_to_refund(client, cashier, manager, shop, shift,
                                                                       product):
    MpesaAccount.objects.create(shop=shop, shortcode="600638")
    sale = create_sale(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=1, sku=product.sku)])
    paid_to_the_shop(client, receipt="OVR0000001", amount="200.00")
    claim_mpesa_payment(sale_id=sale.pk, code="OVR0000001", user=manager, via="admin")

    mpesa = row(shift_report(shift_id=shift.pk), "mpesa")

    [excess] = mpesa["attention"]  # no longer unmatched: it paid the sale
    assert excess["title"] == "Overpaid by M-Pesa, excess to refund" and excess["total"] == 84
    assert [(item["reference"], item["amount"]) for item in excess["items"]] == [("OVR0000001", 84)]
    assert excess["summary"] == ("1 M-Pesa payment paid more than the sale needed: refund the excess (KES 84.00) "
                                 "and mark it refunded in the back office.")


def test_mpesa_money_for_a_cancelled_sale_of_the_shift_shows_as_a_difference(cashier, shop, shift, product):
    sale = create_sale(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=1, sku=product.sku)])
    cancel_sale(sale_id=sale.pk, user=cashier, reason="customer walked away")
    # The prompt was answered after all: the money is real, and goes to review.
    MpesaTransactionFactory(receipt_number="LATE000001", amount=sale.total, sale=sale, shop=shop, msisdn="254712345678",
                            source=MpesaTransaction.Source.STK_CALLBACK, match_status=MpesaTransaction.Match.MATCHED)

    report = shift_report(shift_id=shift.pk)

    mpesa = row(report, "mpesa")
    assert (mpesa["expected"], mpesa["received"], mpesa["difference"]) == (0, 116, 116)
    assert lines(report, "mpesa") == {"Paid sales (0 in the ledger)": 0, "Held for review, paid no sale": 116}
    [held] = mpesa["attention"]
    assert [entry["reference"] for entry in held["items"]] == ["LATE000001"]
    detail = held["items"][0]["detail"]
    assert f"sale {sale.receipt_number}" in detail
    assert detail.startswith("2547*****678 · ") and "254712345678" not in detail  # no full phone number
    assert report["summary"][0] == "M-Pesa is KES 116.00 over."
    assert report["sales"]["cancelled"] == 1


def test_money_held_for_a_cancelled_sale_and_refunded_stays_a_fact_but_needs_nothing_more(cashier, manager, shop,
                                                                                         shift, product):
    sale = create_sale(cashier=cashier, till=shift.till, items=[ItemRequest(quantity=1, sku=product.sku)])
    cancel_sale(sale_id=sale.pk, user=cashier, reason="customer walked away")
    late = MpesaTransactionFactory(receipt_number="LATE000002", amount=sale.total, sale=sale, shop=shop,
                                   source=MpesaTransaction.Source.STK_CALLBACK,
                                   match_status=MpesaTransaction.Match.MATCHED)

    refund_overpayment(transaction_id=late.pk, user=manager, method="outside", reason="reversed by Safaricom")

    report = shift_report(shift_id=shift.pk)
    mpesa = row(report, "mpesa")
    assert (mpesa["received"], mpesa["difference"], mpesa["attention"]) == (116, 116, [])
    assert report["summary"] == ["M-Pesa is KES 116.00 over (KES 116.00 of it since resolved by a manager)."]


def test_without_a_section_for_mpesa_its_sales_still_show_unchecked(settings, cashier, shift, product):
    settings.POS_SHIFT_REPORT_SECTIONS = []
    sell_mpesa(cashier, shift, product, receipt="TKR0000004")

    mpesa = row(shift_report(shift_id=shift.pk), "mpesa")

    assert (mpesa["label"], mpesa["expected"], mpesa["received"], mpesa["difference"]) == ("M-Pesa", 116, None, None)


def test_the_report_costs_the_same_queries_for_one_sale_or_twenty(django_assert_max_num_queries, cashier, shift,
                                                                    product):
    sell_cash(cashier, shift, product, tendered="200")
    with django_assert_max_num_queries(12) as few:
        shift_report(shift_id=shift.pk)
    for number in range(19):
        sell_cash(cashier, shift, product, tendered="200")
        sell_mpesa(cashier, shift, product, receipt=f"TKR10{number:05d}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        shift_report(shift_id=shift.pk)
