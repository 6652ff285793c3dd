"""Core statements as the driver's SQL text, compiled once per dialect.

Hot paths (ingest, the control poll) run their statements straight on a DBAPI
cursor: SQLAlchemy's per-execution work costs more than the statements. The
statements are still Core (`select`, `insert`, `update`, the dialect's ON
CONFLICT) over the models' `Table`s, so no column name is written twice; this
compiles one into the SQL the driver takes and its parameters' order.

Example:
    ```python
    @compiled_once
    def run_status():
        return select(Run.status).where(Run.id == bindparam("run_id"))

    statement = run_status(connection.dialect)
    cursor.execute(statement.sql, statement.parameters({"run_id": 7}))
    ```
"""

import functools
from typing import NamedTuple

from sqlalchemy.dialects import postgresql, sqlite

# The drivers `db.Database` connects with, with positional parameters (`?`, and `%s`
# which psycopg takes as well as `%(name)s`): one value sequence for any statement.
DIALECTS = {
    "sqlite": sqlite.pysqlite.dialect(),
    "postgresql": postgresql.psycopg.dialect(paramstyle="format"),
}


class DriverStatement(NamedTuple):
    """A statement as the driver's SQL text, and its parameters' names in the driver's order."""

    sql: str
    names: tuple[str, ...]

    def parameters(self, values):
        """The values of the mapping `values` in the driver's order."""
        return tuple(values[name] for name in self.names)


def driver_statement(statement, dialect_name):
    """Compile the Core `statement` for `dialect_name` ("sqlite" or "postgresql")."""
    compiled = statement.compile(dialect=DIALECTS[dialect_name])
    return DriverStatement(str(compiled), tuple(compiled.positiontup or ()))


def compiled_once(build):
    """Decorator: `build(*args)` returns a Core statement; the decorated function takes
    `(dialect, *args)` and returns its `DriverStatement`, compiled once per dialect and args."""

    @functools.lru_cache(maxsize=512)
    def compiled(dialect_name, *args):
        return driver_statement(build(*args), dialect_name)

    @functools.wraps(build)
    def for_dialect(dialect, *args):
        return compiled(dialect.name, *args)

    return for_dialect
