"""Insert-or-update many rows at once: the write under every metric upsert.

Django's ``bulk_create(update_conflicts=True)`` builds a model instance per row and an
``INSERT ... VALUES`` with a parameter per field; at 2,000 points a batch that cost more
than the database's own work (17.5k points/s through the whole upsert on PostgreSQL).
Here rows are plain tuples, sent by binary ``COPY`` on PostgreSQL (psycopg packs the rows
in C, given the columns' types: a fifth of the client's time of the text format, and less
parsing for the server) and by ``executemany`` on SQLite (in-process, no round trips to save).

Rows known to be new (the caller has read what is stored there, under a lock) are copied
straight into the table: PostgreSQL's ``ON CONFLICT`` checks each row against the unique
index before inserting it, which made the upsert of a batch twice as slow as its insert.
The rest are upserted by one ``INSERT ... VALUES`` when they are few, else copied into a
temporary table of the session and upserted from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection
from django.db.models import Model

# Up to this many rows an upsert is one INSERT ... VALUES: a batch's keys, the few summary
# rows it changes beside the new ones, the points a resumed attempt re-logs one at a time.
SMALL = 200


def insert_rows(
    model: type[Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[object]],
    meanwhile: Callable[[], None] | None = None,
) -> bool:
    """Add ``rows`` (tuples in ``fields`` order), none of which may exist yet.

    ``meanwhile``: called (on PostgreSQL, with rows) once the rows are sent, while the
    database is still storing them: the client's next work overlaps the database's. Should
    it raise, the COPY is abandoned and the exception raised. Returns whether it was called.
    """
    if not rows:
        return False
    meta = model._meta
    quote = connection.ops.quote_name
    names = ", ".join(quote(meta.get_field(name).column) for name in fields)
    table = quote(meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _copy(cursor, f"COPY {table} ({names}) FROM STDIN", _types(model, fields), rows, meanwhile)
            return meanwhile is not None
        marks = ", ".join(["%s"] * len(fields))
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
        return False


def upsert_rows(
    model: type[Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[object]],
    unique: Sequence[str],
    update: Sequence[str] = (),
) -> None:
    """Write ``rows`` (tuples in ``fields`` order); a row whose ``unique`` fields exist updates ``update``.

    With no ``update`` fields an existing row is left as it is. The rows must not repeat a
    ``unique`` key (PostgreSQL refuses to touch one row twice in a statement).
    """
    if not rows:
        return
    meta = model._meta
    quote = connection.ops.quote_name
    columns = [quote(meta.get_field(name).column) for name in fields]
    names = ", ".join(columns)
    target = ", ".join(quote(meta.get_field(name).column) for name in unique)
    if update:
        changed = (quote(meta.get_field(name).column) for name in update)
        action = "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in changed)
    else:
        action = "DO NOTHING"
    table = quote(meta.db_table)
    with connection.cursor() as cursor:
        marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
        if connection.vendor != "postgresql":
            cursor.executemany(
                f"INSERT INTO {table} ({names}) VALUES {marks} ON CONFLICT ({target}) {action}", rows
            )
            return
        if len(rows) <= SMALL:  # one statement beats three (copy, upsert, empty the staging table)
            values = ", ".join([marks] * len(rows))
            params = [value for row in rows for value in row]
            cursor.execute(
                f"INSERT INTO {table} ({names}) VALUES {values} ON CONFLICT ({target}) {action}", params
            )
            return
        # One staging table per target table and session, emptied after each use (and at
        # commit, should a statement below fail inside a savepoint that is then released).
        staging = quote(f"upsert_{meta.db_table}")
        types = ", ".join(
            f"{c} {meta.get_field(n).db_type(connection)}" for c, n in zip(columns, fields, strict=True)
        )
        cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({types}) ON COMMIT DELETE ROWS")
        _copy(cursor, f"COPY {staging} ({names}) FROM STDIN", _types(model, fields), rows)
        cursor.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} ON CONFLICT ({target}) {action}"
        )
        cursor.execute(f"DELETE FROM {staging}")


def _types(model: type[Model], fields: Sequence[str]) -> list[str]:
    """The PostgreSQL type of each field's column, as binary COPY needs them (``varchar(200)``: ``varchar``)."""
    return [model._meta.get_field(name).db_type(connection).split("(")[0] for name in fields]


def _copy(
    cursor: Any,
    statement: str,
    types: list[str],
    rows: Sequence[Sequence[object]],
    meanwhile: Callable[[], None] | None = None,
) -> None:
    # psycopg's cursor under Django's: its errors are wrapped as Django's own are (a lost
    # connection an OperationalError, which ingestion retries; a refused row an IntegrityError).
    from psycopg.copy import LibpqWriter  # here: an embedded (SQLite) install never needs psycopg

    raw = cursor.cursor
    # Each block sent as soon as it is packed (not held until a megabyte is), so the
    # database has every row but the last block's when ``meanwhile`` runs.
    writer = LibpqWriter(raw, flush_threshold=0) if meanwhile is not None else None
    with connection.wrap_database_errors, raw.copy(statement + " (FORMAT BINARY)", writer=writer) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
        if meanwhile is not None:
            meanwhile()
