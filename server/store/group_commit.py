"""Group commit: one writer thread stores concurrent requests' work in shared transactions.

Each request hands its work (a function of a SQLAlchemy Core `Connection` in
a write transaction) to the writer and awaits the answer. The writer takes
everything queued so far, runs each piece in its own savepoint, in run order,
and commits once: many requests pay for one commit, and one lock or fsync.
A request is answered only after the transaction holding its work has
committed. A piece that raises is rolled back to its savepoint and gets its
exception; the others still commit. If the commit itself fails, every request
of the group gets that error and nothing of the group is stored.

A large request must not hold the writer while others wait: `run_in_turns`
stores it in slices of at most `TURN_SIZE`, each queued only once the one before
has committed, so other requests' work joins the groups in between.

Savepoints are sent straight to the driver (SQLAlchemy's cost more than a
small piece of work), so work must write through the connection, not through
ORM objects.
"""

import asyncio
import contextlib
import functools
import logging
import queue
import threading

log = logging.getLogger("callboard.server.writer")
# Work per turn of a large request, in the caller's measure (metric values): what the
# client sends in one request at most, so its requests are one turn each; a larger one
# (up to the server's cap) takes turns of a few tenths of a second.
TURN_SIZE = 10_000


def in_turns(items, size_of, limit=TURN_SIZE):
    """`items` cut into consecutive `(slice, size)` pairs of at most `limit` each.

    An item larger than `limit` makes a slice alone; no items make one empty slice.

    Example:
        >>> list(in_turns([3, 3, 3, 9], size_of=int, limit=6))
        [([3, 3], 6), ([3], 3), ([9], 9)]
    """
    turn, total = [], 0
    for item in items:
        size = size_of(item)
        if turn and total + size > limit:
            yield turn, total
            turn, total = [], 0
        turn.append(item)
        total += size
    if turn or total == 0:
        yield turn, total


class _Job:
    __slots__ = ("work", "order", "size", "loop", "future")

    def __init__(self, work, order, size, loop, future):
        self.work, self.order, self.size = work, order, size
        self.loop, self.future = loop, future

    def answer(self, ok, value):
        with contextlib.suppress(RuntimeError):  # a closed event loop: nobody is waiting
            self.loop.call_soon_threadsafe(_settle, self.future, ok, value)


def _settle(future, ok, value):
    if future.done():  # the request was cancelled (client gone): its work stands anyway
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class GroupCommit:
    """Runs write work on one thread, committing what is queued together.

    Args:
        database: the `db.Database` to write to.
        max_size: a group closes once its pieces' sizes add up to this (sizes
            are the caller's measure, e.g. events), bounding a transaction.

    Example:
        ```python
        writer = GroupCommit(database)
        writer.start()
        stored = await writer.run(lambda conn: store_events(conn, 7, events), order=7)
        writer.stop()
        ```
    """

    def __init__(self, database, max_size=20_000):
        self.database = database
        self.max_size = max_size
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._connection = None  # the writer thread's own, kept between groups

    def start(self):
        self._thread = threading.Thread(target=self._serve, name="callboard-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout=10.0):
        """Finish what is queued, then end the writer thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    async def run(self, work, order=0, size=1):
        """Run `work(connection)` in the next group; return its result once committed.

        `order` sorts the pieces of a group (pass the run id: rows are then
        locked in one order, so replicas never deadlock); `size` counts
        towards `max_size`.
        """
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the writer is not running")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(work, order, size, loop, future))
        return await future

    async def run_in_turns(self, work, turns, order=0):
        """Run `work(connection, part)` for each `(part, size)` of `turns`, one group each.

        Each part is queued once the one before has committed, so a large
        request (cut with `in_turns`) takes turns with everyone else's work.
        Parts committed before a failure stay committed; return the results.
        """
        return [
            await self.run(functools.partial(work, part=part), order=order, size=max(size, 1))
            for part, size in turns
        ]

    def _serve(self):
        try:
            self._serve_groups()
        finally:
            self._drop_connection()

    def _serve_groups(self):
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is None:
                return
            group, size = [job], job.size
            while size < self.max_size:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                group.append(job)
                size += job.size
            self._commit(group)

    def _commit(self, group):
        group.sort(key=lambda job: job.order)
        try:
            if self._connection is None:
                self._connection = self.database.write_engine.connect()
            connection = self._connection
            with connection.begin():
                if len(group) == 1:
                    answers = [_alone(connection, group[0])]
                else:
                    cursor = connection.connection.cursor()
                    answers = [_in_savepoint(connection, cursor, job) for job in group]
                    cursor.close()
        except Exception as exc:  # BEGIN or COMMIT failed: none of the group is stored
            answers = [(False, exc)] * len(group)
            self._drop_connection()  # it may be broken: the next group connects afresh
        except BaseException as exc:  # pragma: no cover - keep the thread serving
            log.exception("writer interrupted")
            answers = [(False, RuntimeError(f"writer interrupted: {exc!r}"))] * len(group)
            self._drop_connection()
        for job, (ok, value) in zip(group, answers, strict=True):
            job.answer(ok, value)

    def _drop_connection(self):
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


def _alone(connection, job):
    try:
        return True, job.work(connection)
    except Exception as exc:
        connection.rollback()
        return False, exc


def _in_savepoint(connection, cursor, job):
    cursor.execute("SAVEPOINT piece")
    try:
        value = job.work(connection)
    except Exception as exc:
        cursor.execute("ROLLBACK TO SAVEPOINT piece")
        cursor.execute("RELEASE SAVEPOINT piece")
        return False, exc
    cursor.execute("RELEASE SAVEPOINT piece")
    return True, value
