"""The login form sends each role where its work is: cashiers to the till, managers and owners to
the back office."""

import pytest
from django.urls import reverse

from pos.models import Staff
from pos.tests.factories import StaffFactory, UserFactory


def _log_in(client, username, next_url=None):
    data = {"username": username, "password": "password"}
    if next_url is not None:
        data["next"] = next_url
    return client.post(reverse("login"), data)


@pytest.mark.parametrize("role", [Staff.Role.MANAGER, Staff.Role.OWNER])
def test_a_manager_or_owner_logging_in_lands_in_the_back_office(client, shop, role):
    StaffFactory(user=UserFactory(username="akinyi", is_staff=True), shop=shop, role=role)

    response = _log_in(client, "akinyi")

    assert response.status_code == 302
    assert response.url == reverse("admin:index")


def test_a_manager_sent_to_login_from_the_site_root_still_lands_in_the_back_office(client, shop):
    StaffFactory(user=UserFactory(username="akinyi", is_staff=True), shop=shop, role=Staff.Role.MANAGER)

    response = _log_in(client, "akinyi", next_url=reverse("pos:home"))

    assert response.url == reverse("admin:index")


def test_a_manager_asking_for_another_page_gets_that_page(client, shop):
    StaffFactory(user=UserFactory(username="akinyi", is_staff=True), shop=shop, role=Staff.Role.MANAGER)

    response = _log_in(client, "akinyi", next_url=reverse("pos:recent-sales"))

    assert response.url == reverse("pos:recent-sales")


def test_a_cashier_logging_in_lands_on_the_till(client, cashier):
    response = _log_in(client, cashier.username, next_url=reverse("pos:home"))

    assert response.url == reverse("pos:home")


def test_a_manager_without_back_office_access_lands_on_the_till(client, shop):
    StaffFactory(user=UserFactory(username="akinyi", is_staff=False), shop=shop, role=Staff.Role.MANAGER)

    response = _log_in(client, "akinyi")

    assert response.url == reverse("pos:home")
