"""Many rows in few statements, straight on a driver cursor.

SQLite: multi-row `INSERT ... VALUES (...), (...)`, up to hundreds of rows per
statement, which saves the per-row statement steps of `executemany`.
PostgreSQL: one `INSERT ... SELECT FROM unnest(<arrays>)` with one array per
column sent in binary: a short statement whatever the row count (psycopg parses
a long statement's placeholders slowly), and one round trip.
Both are built with Core from the model's `Table` and compiled once.
"""

import itertools

from sqlalchemy import JSON, Text, bindparam, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite

from callboard.server.store.statements import driver_statement

MAX_PARAMETERS = 30_000  # SQLite allows 32,766 per statement
MAX_ROWS = 500


def _as_is(insert, _dialect_name):
    return insert


class BulkInsert:
    """INSERTs of many rows into `table`, each row a tuple of `columns`: the table's
    columns in its order, but for the id the database numbers itself.

    `on_conflict(insert, dialect_name)` returns the dialect's `insert(table)` with
    its ON CONFLICT clause, if any.

    Example:
        ```python
        points = BulkInsert(MetricPoint.__table__)
        points.insert(cursor, connection.dialect, [(run_id, "loss", 3, 0, 0.25, now)])
        ```
    """

    def __init__(self, table, on_conflict=_as_is):
        self.table = table
        self.columns = tuple(c for c in table.columns if c is not table.autoincrement_column)
        self.on_conflict = on_conflict
        self.rows_per_statement = max(1, min(MAX_ROWS, MAX_PARAMETERS // len(self.columns)))
        self._sqlite = {}  # rows per statement -> SQL: at most `rows_per_statement` of them
        self._postgresql = None

    def insert(self, cursor, dialect, rows):
        """INSERT `rows` (tuples in `columns` order) on `cursor`, a driver cursor of `dialect`."""
        if not rows:
            return
        if dialect.name == "postgresql":
            arrays = [list(column) for column in zip(*rows, strict=True)]
            cursor.execute(self._postgresql or self._unnest_sql(), arrays)
            return
        per_statement = self.rows_per_statement
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            sql = self._sqlite.get(len(chunk)) or self._values_sql(len(chunk))
            cursor.execute(sql, list(itertools.chain.from_iterable(chunk)))

    def _compile(self, dialect_name, insert):
        statement = driver_statement(self.on_conflict(insert, dialect_name), dialect_name)
        if statement.names != tuple(column.key for column in self.columns):
            raise AssertionError(f"{statement.sql!r} takes {statement.names}, not rows' columns")
        return statement.sql

    def _values_sql(self, count):
        """SQLite: the INSERT of `count` rows: the one-row INSERT, its VALUES row repeated."""
        one_row = self._sqlite.get(1)
        if one_row is None:
            values = {c.key: bindparam(c.key, type_=c.type) for c in self.columns}
            one_row = self._compile("sqlite", sqlite.insert(self.table).values(values))
            self._sqlite[1] = one_row
        row = f"({', '.join(['?'] * len(self.columns))})"
        head, found, tail = one_row.partition(row)
        if not found:
            raise AssertionError(f"no {row} in {one_row!r}")
        self._sqlite[count] = sql = head + ", ".join([row] * count) + tail
        return sql

    def _unnest_sql(self):
        """PostgreSQL: the INSERT of one row per element of the columns' arrays."""

        def sent(column):  # json[] has no binary dumper for str: JSON is sent as text
            return Text() if isinstance(column.type, JSON) else column.type

        def stored(value, column):
            return cast(value, column.type) if isinstance(column.type, JSON) else value

        keys = [column.key for column in self.columns]
        arrays = [bindparam(c.key, type_=postgresql.ARRAY(sent(c))) for c in self.columns]
        rows = func.unnest(*arrays).table_valued(*keys).render_derived(name="v")
        picked = select(*(stored(rows.c[c.key], c) for c in self.columns))
        sql = self._compile("postgresql", postgresql.insert(self.table).from_select(keys, picked))
        if "%%" in sql:
            raise AssertionError(f"a literal % in {sql!r}")
        self._postgresql = sql = sql.replace("%s", "%b")  # all arrays: `%b` sends them in binary
        return sql
