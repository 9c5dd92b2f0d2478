"""Plain SQL for the statements every M-Pesa payment runs (the callback, the ledger, the sale, the stock).

The ORM spends about 0.3 ms of Python building a query and reading its row; plain SQL through
Django's cursor, 0.07 ms. A payment runs a dozen such statements, and the shop must take hundreds of
callbacks a second on two cores (bench/bench_callbacks.py), so those few are written out here and
everything else stays ORM. The SQL is the portable subset: the same statements run on SQLite (the
Quick start) and PostgreSQL. Values go in and out as Python values: `db_time` for datetimes
written, `model_instance` for rows read back (SQLite keeps amounts as numbers, times without zone).
"""

from contextlib import nullcontext
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection, models, transaction
from django.db.backends.utils import CursorDebugWrapper

CENT = Decimal("0.01")


def fetch_one(sql: str, params=()) -> tuple | None:
    cursor = _cursor()
    cursor.execute(sql, params)
    return cursor.fetchone()


def fetch_all(sql: str, params=()) -> list[tuple]:
    cursor = _cursor()
    cursor.execute(sql, params)
    return cursor.fetchall()


def execute(sql: str, params=()) -> int:
    """Run one INSERT, UPDATE or DELETE; the number of rows it touched."""
    cursor = _cursor()
    cursor.execute(sql, params)
    return cursor.rowcount


def execute_many(sql: str, rows: list) -> None:
    _cursor().executemany(sql, rows)


def _cursor():
    """One cursor per database connection, used by every statement here: opening a cursor costs a
    third of running a short statement. A new connection, or Django starting or stopping counting
    queries (the debug cursor), gets a new one."""
    connection.ensure_connection()  # and, once per request, Django's health check (CONN_HEALTH_CHECKS)
    cursor = getattr(connection, "plain_sql_cursor", None)
    if (cursor is None or cursor.cursor.connection is not connection.connection
            or isinstance(cursor, CursorDebugWrapper) != connection.queries_logged):
        cursor = connection.plain_sql_cursor = connection.cursor()
    return cursor


def for_update(*, skip_locked: bool = False) -> str:
    """The row-lock clause for a SELECT, or nothing where the database locks whole files (SQLite)."""
    if not connection.features.has_select_for_update:
        return ""
    return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"


def in_list(values) -> str:
    """Placeholders for `IN (…)`: one per value."""
    return ", ".join(["%s"] * len(values))


def db_time(moment: datetime | None):
    return connection.ops.adapt_datetimefield_value(moment)


def money(value) -> Decimal:
    """An amount as read by plain SQL: a Decimal from PostgreSQL, an int or float from SQLite."""
    return value if isinstance(value, Decimal) else Decimal(str(value)).quantize(CENT)


def fields_of(model: type[models.Model], names) -> list[models.Field]:
    """The named fields in the model's own order, the order Model.from_db reads values in."""
    wanted = {model._meta.get_field(name) for name in names}
    return [field for field in model._meta.concrete_fields if field in wanted]


def model_instance(fields: list[models.Field], values) -> models.Model | None:
    """An instance of the fields' model made of `values` (read by plain SQL, in `fields` order); the
    other fields load on first use, as with only(). None when the first value (the id) is NULL, as
    after a LEFT JOIN that found no row."""
    values = [_as_the_orm_reads(field, value) for field, value in zip(fields, values)]
    if values[0] is None:
        return None
    return fields[0].model.from_db(connection.alias, [field.attname for field in fields], values)


def _as_the_orm_reads(field: models.Field, value):
    # SQLite returns amounts as numbers and times without their zone (they are UTC).
    if value is None:
        return None
    if isinstance(field, models.DecimalField):
        return money(value)
    if isinstance(field, models.DateTimeField) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def locked_row(model: type[models.Model], fields: list[str], where: str, params=(), *, skip_locked: bool = False):
    """`model.objects.select_for_update().only(*fields).filter(…)` for one row, at a quarter of the cost.

    `where` is SQL over the table's columns. The other fields load on first use, as with only().
    """
    chosen = fields_of(model, fields)
    row = fetch_one(
        f"SELECT {', '.join(field.column for field in chosen)} FROM {model._meta.db_table} WHERE {where}"
        + for_update(skip_locked=skip_locked),
        params,
    )
    return None if row is None else model_instance(chosen, row)


def insert(instance: models.Model) -> models.Model:
    """`instance.save()` for a new row, at a third of the cost: the field values are prepared as the
    ORM prepares them (auto_now_add and defaults included), but no query is compiled and no
    pre_save/post_save signal is sent, so never use it for a model with receivers (MpesaTransaction).
    """
    meta = instance._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    values = [field.get_db_prep_save(field.pre_save(instance, add=True), connection) for field in fields]
    instance.pk = fetch_one(
        f"INSERT INTO {meta.db_table} ({', '.join(field.column for field in fields)}) "
        f"VALUES ({in_list(fields)}) RETURNING {meta.pk.column}",
        values,
    )[0]
    instance._state.adding, instance._state.db = False, connection.alias
    return instance


def within_transaction():
    """The caller's transaction when there is one, else a new one.

    Joining without a savepoint saves two statements per step; it is right only for a step that
    raises its refusals before its first write, so that a caller who catches one carries on in a
    clean transaction (inventory.services._move_stock, pos.services.record_payment).
    """
    return nullcontext() if connection.in_atomic_block else transaction.atomic()
