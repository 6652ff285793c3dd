"""Many rows in few statements, straight on a driver cursor.

SQLite: multi-row `INSERT ... VALUES (...), (...)`, up to hundreds of rows per
statement, which saves the per-row statement steps of `executemany`.
PostgreSQL: one `INSERT ... SELECT FROM unnest(<arrays>)` with one array per
column sent in binary: a short statement whatever the row count (psycopg parses
a long statement's placeholders slowly), and one round trip.
"""

import functools
import itertools
from typing import NamedTuple

MAX_PARAMETERS = 30_000  # SQLite allows 32,766 per statement
MAX_ROWS = 500


class Table(NamedTuple):
    """A table's name, the columns written, and their PostgreSQL types (for `unnest`)."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]


def insert_rows(cursor, dialect_name, table, rows, tail=""):
    """INSERT `rows` (tuples in `table.columns` order) into `table`, then `tail` (ON CONFLICT...).

    Example:
        `insert_rows(cursor, "sqlite", Table("t", ("a", "b"), ("integer", "text")), [(1, "x")])`
    """
    if not rows:
        return
    if dialect_name == "postgresql":
        columns = [list(column) for column in zip(*rows, strict=True)]
        cursor.execute(_unnest_statement(table, tail), columns)
        return
    width = len(table.columns)
    per_statement = max(1, min(MAX_ROWS, MAX_PARAMETERS // width))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        cursor.execute(
            _values_statement(table, len(chunk), tail),
            list(itertools.chain.from_iterable(chunk)),
        )


@functools.lru_cache(maxsize=256)
def _values_statement(table, count, tail):
    row = f"({', '.join(['?'] * len(table.columns))})"
    return _join(
        f"INSERT INTO {table.name} ({', '.join(table.columns)})",
        "VALUES",
        ", ".join([row] * count),
        tail,
    )


@functools.lru_cache(maxsize=64)
def _unnest_statement(table, tail):
    # JSON travels as text (json[] has no binary dumper for str) and is cast per row.
    arrays = ", ".join(f"%b::{'text' if kind == 'json' else kind}[]" for kind in table.types)
    picked = ", ".join(
        f"{column}::json" if kind == "json" else column
        for column, kind in zip(table.columns, table.types, strict=True)
    )
    columns = ", ".join(table.columns)
    return _join(
        f"INSERT INTO {table.name} ({columns}) SELECT {picked}",
        f"FROM unnest({arrays}) AS v ({columns})",
        tail,
    )


def _join(*parts):
    return " ".join(part for part in parts if part)
