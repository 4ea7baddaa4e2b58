"""Plain multi-row inserts for the hot paths, where Django building a model object per row costs more than the
work the rows record (two notices per ledger transfer; a dozen tags per item). Callers give finished values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import connection
from django.db.models import Model

# Parameters per statement: well under SQLite's 32,766 and PostgreSQL's 65,535.
MAX_PARAMS = 10_000
# PostgreSQL takes this many rows or more by COPY (and reads keys back with a SELECT); fewer by one INSERT.
COPY_FROM = 20


def insert_rows(model: type[Model], columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """INSERT the rows (values in `columns` order) as multi-row statements, in the caller's transaction."""
    rows = list(rows)
    if not rows:
        return
    quote = connection.ops.quote_name
    if connection.vendor == "postgresql" and len(rows) >= COPY_FROM:  # a tenth of the time of any INSERT
        sql = f"COPY {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
        return
    if connection.vendor == "postgresql":  # a few rows: one INSERT is one round trip, COPY three
        insert_returning(model, columns, rows, ())
        return
    # SQLite: one prepared statement run per row by the driver (executemany), on the driver's own cursor: Django's
    # wrapper rewrites every placeholder of a statement with a regular expression, which cost more than the insert.
    sql = (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
           f"VALUES ({', '.join(['?'] * len(columns))})")
    connection.ensure_connection()
    with connection.wrap_database_errors:
        connection.connection.executemany(sql, rows)


def insert_returning(model: type[Model], columns: Sequence[str], rows: Sequence[Sequence[object]],
                     returning: Sequence[str]) -> list[tuple[object, ...]]:
    """INSERT the rows and return the `returning` columns of each inserted row, in no particular order; the first
    `returning` column is a unique column among `columns`, by which callers match rows.

    PostgreSQL, from COPY_FROM rows: COPY, then one SELECT by that column (a multi-row INSERT ... RETURNING of a
    few thousand parameters cost ~0.2 ms a row to plan and bind); fewer: one INSERT ... RETURNING. SQLite (3.35+):
    INSERT ... RETURNING on the driver's cursor. An empty `returning` inserts and returns nothing."""
    if not rows:
        return []
    quote = connection.ops.quote_name
    if connection.vendor == "postgresql" and len(rows) >= COPY_FROM:
        insert_rows(model, columns, rows)
        key = columns.index(returning[0])
        keys = [row[key] for row in rows]
        found = model._default_manager.filter(**{f"{returning[0]}__in": keys}).values_list(*returning)
        return [tuple(r) for r in found]
    head = f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) VALUES "
    tail = f" RETURNING {', '.join(quote(c) for c in returning)}" if returning else ""
    sqlite = connection.vendor == "sqlite"
    one = f"({', '.join(['?' if sqlite else '%s'] * len(columns))})"
    per_statement = max(1, MAX_PARAMS // len(columns))
    out: list[tuple[object, ...]] = []
    connection.ensure_connection()
    with connection.cursor() as cursor, connection.wrap_database_errors:
        raw = connection.connection.cursor() if sqlite else cursor  # SQLite: the driver's cursor (insert_rows)
        for start in range(0, len(rows), per_statement):
            chunk = rows[start:start + per_statement]
            raw.execute(head + ", ".join([one] * len(chunk)) + tail, [value for row in chunk for value in row])
            if returning:
                out.extend(tuple(r) for r in raw.fetchall())
    return out
