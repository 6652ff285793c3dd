"""The runs list's filter on archiving, as each database's planner reads it best.

Nearly every run is not archived. PostgreSQL knows it from its statistics; SQLite
keeps none, so it took `ix_runs_archived` for `archived_at IS NULL` (an equality to
it) and sorted every matching run for each page. Told that the condition is
`likely()`, it reads the page off the index of its sort (`ix_runs_created`,
`ix_runs_updated`, `ix_runs_name`) and filters as it goes.
"""

from sqlalchemy import Boolean
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from callboard.server.store.models import Run


class likely(FunctionElement):  # noqa: N801 (SQLite's function's name)
    """SQLite's `likely(condition)`: a hint that the condition holds for most rows;
    the bare condition elsewhere."""

    name = "likely"
    type = Boolean()
    inherit_cache = True


@compiles(likely)
def _bare_condition(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)


@compiles(likely, "sqlite")
def _sqlite_hint(element, compiler, **kw):
    return f"likely({compiler.process(element.clauses, **kw)})"


def archive_filter(archived):
    """The archived runs only (`archived`), else every run not archived."""
    if archived:
        return Run.archived_at.is_not(None)
    return likely(Run.archived_at.is_(None))
