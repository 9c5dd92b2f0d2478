"""Every admin change list costs a fixed number of queries, however many rows it has or shows.

The lists are filled by seed_demo's bulk mode (sales, lines, payments, shifts, STK requests, raw
callbacks, the M-Pesa ledger, stock levels and movements in two shops), then grown.
"""

from io import StringIO

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

pytestmark = pytest.mark.django_db


def seed(sales: int) -> None:
    call_command("seed_demo", "--shops", "2", "--products", "60", "--sales", str(sales), "--days", "20",
                 stdout=StringIO())


def change_lists():
    for model, model_admin in sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label):
        yield model, model_admin, reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def query_counts(client, monkeypatch, per_page: int) -> dict[str, int]:
    counts = {}
    for model, model_admin, url in change_lists():
        monkeypatch.setattr(model_admin, "list_per_page", per_page)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        if response.status_code == 403:  # a model this role may not see at all
            continue
        assert response.status_code == 200, f"{url}: {response.status_code}"
        counts[model._meta.label] = len(queries)
    counts["dashboard"] = len_queries(client, reverse("admin:pos_sale_dashboard"))
    counts["index"] = len_queries(client, reverse("admin:index"))
    return counts


def len_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize("username", ["admin", "manager"])
def test_no_list_costs_more_queries_for_more_rows_or_a_longer_page(client, settings, monkeypatch, username):
    settings.DEBUG = True  # seed_demo refuses to run without it
    seed(120)
    client.force_login(User.objects.get(username=username))
    client.get(reverse("admin:index"))  # the session's first request loads what later ones reuse
    short_page = query_counts(client, monkeypatch, 20)
    long_page = query_counts(client, monkeypatch, 100)
    assert long_page == short_page
    seed(360)
    assert query_counts(client, monkeypatch, 100) == long_page
    assert len(long_page) > 12  # the lists really were visited
