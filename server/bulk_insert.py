"""Multi-row INSERTs straight on a driver cursor: one statement for up to hundreds of rows.

One statement per few hundred rows beats `executemany` of one row at a time:
on SQLite it saves the per-row statement steps, on PostgreSQL the round trips.
"""

import functools
import itertools

MAX_PARAMETERS = 30_000  # SQLite allows 32,766 per statement, PostgreSQL 65,535
MAX_ROWS = 500


def insert_rows(cursor, marker, head, width, rows, tail=""):
    """Run `{head} VALUES (...), (...) {tail}` for `rows` (tuples of `width` values).

    Example:
        `insert_rows(cursor, "?", "INSERT INTO t (a, b)", 2, [(1, 2), (3, 4)])`
    """
    per_statement = max(1, min(MAX_ROWS, MAX_PARAMETERS // width))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        cursor.execute(
            _statement(marker, head, width, len(chunk), tail),
            list(itertools.chain.from_iterable(chunk)),
        )


@functools.lru_cache(maxsize=256)
def _statement(marker, head, width, count, tail):
    row = f"({', '.join([marker] * width)})"
    suffix = f" {tail}" if tail else ""
    return f"{head} VALUES {', '.join([row] * count)}{suffix}"
