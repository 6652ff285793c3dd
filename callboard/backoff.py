"""How long to wait before retrying after failures in a row: one rule for the whole package.

The training client's sender (`client/_sender.py`) and the server's PostgreSQL
fan-out (`server/live/postgres.py`) both use it; it lives beside them, in
neither, so the client never imports server code nor the server client code.
"""

FIRST_DELAY = 0.5
MOST_DELAY = 30.0


def backoff_delay(failures, first=FIRST_DELAY, most=MOST_DELAY):
    """Seconds to wait after `failures` failures in a row: `first`, doubling, at most `most`.

    Example:
        >>> [backoff_delay(n) for n in (1, 2, 3, 6, 7, 10_000)]
        [0.5, 1.0, 2.0, 16.0, 30.0, 30.0]
    """
    doublings = min(max(failures - 1, 0), 64)  # 2.0 ** 64 outgrows any `most`, never overflows
    return min(most, first * 2.0**doublings)
