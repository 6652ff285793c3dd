"""Moving up: copy everything from one database into an empty one (`callboard db copy`).

Typically from the SQLite file a laptop started with to the team's PostgreSQL.
Both are brought to the newest schema first; then every table (projects, runs,
events, metric points, tokens, dashboard sessions) is copied in chunks, keeping
ids, inside one transaction on the target: a failed copy leaves it empty, ready
for another try. The source is read from one snapshot, so a server still writing
to it cannot make the copy inconsistent (what arrives meanwhile is not copied).
"""

from sqlalchemy import func, select, text

from callboard.server.store import migrate
from callboard.server.store.db import Database, normalize_url, sqlite_file
from callboard.server.store.models import Base

CHUNK_ROWS = 5000


class CopyRefused(Exception):
    """The copy cannot start: no source, a target holding data, or the source itself."""


class CopyMismatch(Exception):
    """After the copy, a table on the target does not hold as many rows as on the source."""


def refuse_missing_source(url):
    """Return `url`, or raise `CopyRefused` if it names a SQLite file that does not exist
    (opening it would create an empty one and "copy" nothing)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise CopyRefused(f"there is no SQLite database at {path.resolve()} to copy from")
    return url


def copied_tables():
    """The tables to copy, parents before children."""
    return list(Base.metadata.sorted_tables)


def _counts(connection, tables):
    return {
        table.name: connection.scalar(select(func.count()).select_from(table)) for table in tables
    }


def _reset_sequences(connection, tables):
    """After inserting explicit ids, let PostgreSQL continue numbering after the largest."""
    for table in tables:
        column = table.autoincrement_column
        if column is not None:
            connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence(:table, :column), "
                    f"COALESCE(MAX({column.name}), 1), MAX({column.name}) IS NOT NULL) "
                    f"FROM {table.name}"
                ),
                {"table": table.name, "column": column.name},
            )


def _copy_table(source, target, table, chunk_rows, advance):
    order = list(table.primary_key.columns)
    rows = source.execution_options(yield_per=chunk_rows).execute(select(table).order_by(*order))
    for chunk in rows.partitions():
        target.execute(table.insert(), [row._asdict() for row in chunk])
        advance(table.name, len(chunk))


def copy_database(source_url, target_url, chunk_rows=CHUNK_ROWS, progress=None):
    """Copy every row from `source_url` into the empty database at `target_url`.

    Args:
        source_url: the database to copy from; it is upgraded to the newest schema.
        target_url: an empty database (or one holding only the schema) to copy into.
        chunk_rows: rows read and written per statement.
        progress: optional `rich.progress.Progress` to show a bar counting rows.

    Returns:
        `{table name: rows copied}`, verified against the target.

    Raises:
        CopyRefused: the source is a missing SQLite file, the target already holds rows,
            or the target is the source.
        CopyMismatch: a table's row count differs after the copy (nothing is kept).

    Example:
        ```python
        copy_database("sqlite:///callboard.db", "postgresql://callboard@db/callboard")
        ```
    """
    refuse_missing_source(source_url)
    if normalize_url(source_url) == normalize_url(target_url):
        raise CopyRefused("the source and the target are the same database")
    migrate.upgrade(source_url)
    migrate.upgrade(target_url)
    source, target = Database(source_url), Database(target_url)
    tables = copied_tables()
    try:
        snapshot = {"isolation_level": "REPEATABLE READ"} if not source.is_sqlite else {}
        with source.engine.connect().execution_options(**snapshot) as reading:
            reading.begin()
            expected = _counts(reading, tables)
            with target.engine.connect() as writing:
                writing.begin()
                present = {name: n for name, n in _counts(writing, tables).items() if n}
                if present:
                    listed = ", ".join(f"{n} {name}" for name, n in present.items())
                    raise CopyRefused(
                        f"the target database is not empty ({listed}); "
                        "copy into a new, empty database"
                    )
                advance = _progress_callback(progress, sum(expected.values()))
                for table in tables:
                    _copy_table(reading, writing, table, chunk_rows, advance)
                if writing.dialect.name == "postgresql":
                    _reset_sequences(writing, tables)
                copied = _counts(writing, tables)
                if copied != expected:
                    raise CopyMismatch(f"row counts differ: source {expected}, target {copied}")
                writing.commit()
    finally:
        source.dispose()
        target.dispose()
    return copied


def _progress_callback(progress, total):
    if progress is None:
        return lambda _table, _rows: None
    task = progress.add_task("copying", total=total)

    def advance(table, rows):
        progress.update(task, advance=rows, description=f"copying {table}")

    return advance
