from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from pos.models import Payment, Sale, SaleLine, Shift, Shop, Staff, Till


def _base36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return digits[n] if n < 36 else _base36(n // 36) + digits[n % 36]


class ShopFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Shop
        django_get_or_create = ["code"]

    # Shop codes are at most 4 characters: a long test run must not outgrow them.
    code = factory.Sequence(lambda n: "S" + _base36(n % 36**3).rjust(3, "0"))
    name = factory.Sequence(lambda n: f"Shop {n}")
    address = "Moi Avenue, Nairobi"
    kra_pin = "P051234567X"


class TillFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Till

    shop = factory.SubFactory(ShopFactory)
    name = factory.Sequence(lambda n: f"Till {n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "password")

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class StaffFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Staff

    user = factory.SubFactory(UserFactory)
    shop = factory.SubFactory(ShopFactory)
    role = Staff.Role.CASHIER


class ShiftFactory(factory.django.DjangoModelFactory):
    """An open shift; tests close one through pos.services.close_shift, as a cashier does."""

    class Meta:
        model = Shift

    till = factory.SubFactory(TillFactory)
    shop = factory.SelfAttribute("till.shop")
    opened_by = factory.SubFactory(UserFactory)
    opening_float = Decimal("0")


def _open_shift_of(sale) -> Shift:
    return Shift.objects.filter(till=sale.till, status=Shift.Status.OPEN).first() or ShiftFactory(till=sale.till)


class SaleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Sale

    till = factory.SubFactory(TillFactory)
    shop = factory.SelfAttribute("till.shop")
    shift = factory.LazyAttribute(_open_shift_of)
    cashier = factory.SubFactory(UserFactory)
    receipt_number = factory.Sequence(lambda n: f"T-{n:010d}")
    total = Decimal("116.00")
    vat_total = Decimal("16.00")


class SaleLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SaleLine

    sale = factory.SubFactory(SaleFactory)
    product = factory.SubFactory("inventory.tests.factories.ProductFactory")
    name = factory.SelfAttribute("product.name")
    quantity = 1
    unit_price = factory.SelfAttribute("product.price")
    tax_band = factory.SelfAttribute("product.tax_band")
    tax_rate = Decimal("16")
    line_total = factory.SelfAttribute("product.price")
    vat_amount = Decimal("16.00")


class PaymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payment

    sale = factory.SubFactory(SaleFactory)
    method = Payment.Method.CASH
    amount = Decimal("116.00")
