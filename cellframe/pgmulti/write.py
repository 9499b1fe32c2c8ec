"""Insert rows on a write master and get back the guids ``cellframe.guid()`` gave them.

Inserting is the only write a master accepts (its tables refuse UPDATE, DELETE and TRUNCATE);
a row is superseded by inserting a newer one, as the append-only design asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from ..errors import ConfigError
from .apply import translate_error
from .schema import Table

__all__ = ["insert_rows"]


def insert_rows(
    conn: psycopg.Connection[Any], table: Table, rows: Iterable[Mapping[str, Any]]
) -> list[int]:
    """Insert ``rows`` (column name -> value) into ``table`` in one statement; return their guids.

    The guids are the signed ``bigint`` values, in the order PostgreSQL inserted the rows (for
    a VALUES list, the list's order); ``cellframe.store.guid.decode`` accepts them as they are. The
    caller owns the transaction.
    """
    rows = list(rows)
    if not rows:
        return []
    names = [c.name for c in table.columns]
    for index, row in enumerate(rows):
        unknown = sorted(set(row) - set(names))
        if unknown:
            raise ConfigError(f"row {index}: {table.name} has no column {', '.join(unknown)}")
    statement = _insert_statement(table, len(rows))
    values = [row.get(name) for row in rows for name in names]
    try:
        with conn.cursor() as cur:
            cur.execute(statement, values)
            return [guid for (guid,) in cur.fetchall()]
    except psycopg.Error as exc:
        raise translate_error(exc, f"inserting into {table.name}") from exc


def _insert_statement(table: Table, count: int) -> sql.Composed:
    """``INSERT INTO public.<table> (...) VALUES (...), (...) RETURNING guid``."""
    columns = [sql.Identifier(c.name) for c in table.columns]
    row: sql.Composable = sql.SQL("(DEFAULT)")  # a table with no user columns: just a guid
    if columns:
        row = sql.SQL("({})").format(sql.SQL(", ").join([sql.Placeholder()] * len(columns)))
    return sql.SQL("INSERT INTO public.{} ({}) VALUES {} RETURNING guid").format(
        sql.Identifier(table.name),
        sql.SQL(", ").join(columns or [sql.Identifier("guid")]),
        sql.SQL(", ").join([row] * count),
    )
