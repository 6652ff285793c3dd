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

On SQLite, small work (`inline_size`) is stored on the event loop itself: the
pieces queued during one turn of the loop form a group, committed by a
callback scheduled for the loop's next turn. Two thread wake-ups cost more
than such a transaction (an epoch post: four points). When another writer
holds the database (a large turn on the writer thread, another process), the
group goes to the writer thread instead: the loop never waits for a lock.

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
# Work up to this size (metric values) is stored on the event loop on SQLite: about a
# millisecond at most, less than the thread hand-offs it saves cost a small piece.
INLINE_SIZE = 500
# The event loop's connection leaves copying the WAL into the database file (a few
# milliseconds, an fsync) to the writer thread, once every this many commits: about
# SQLite's own 1,000 pages at the ten or so pages an epoch post changes.
CHECKPOINT_EVERY = 100
CHECKPOINT = object()  # queued for the writer thread: checkpoint the WAL


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

    def __init__(self, database, max_size=20_000, inline_size=0):
        self.database = database
        self.max_size = max_size
        self.inline_size = inline_size if database.is_sqlite else 0
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._connection = None  # the writer thread's own, kept between groups
        self._loop_connection = None  # the event loop's, for inline groups
        self._pending = []  # small jobs of this turn of the loop
        self._inline_commits = 0

    def start(self):
        self._thread = threading.Thread(target=self._serve, name="callboard-writer", daemon=True)
        self._thread.start()

    def queued(self):
        """Work waiting to be stored: on the writer thread's queue, and for the event loop."""
        return self._queue.qsize() + len(self._pending)

    def stop_inline(self):
        """Store no more work on the event loop; call it on the loop, before `stop`."""
        self.inline_size = 0
        if self._pending:
            self._commit_pending()
        if self._loop_connection is not None:
            with contextlib.suppress(Exception):  # its busy timeout stays out of the pool
                self._loop_connection.invalidate()
            self._loop_connection = None

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
        job = _Job(work, order, size, loop, future)
        if size <= self.inline_size:
            self._pending.append(job)
            if len(self._pending) == 1:
                loop.call_soon(self._commit_pending)
        else:
            self._queue.put(job)
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
            if job is CHECKPOINT:
                self._checkpoint()
                continue
            group, size, checkpoint = [job], job.size, False
            while size < self.max_size:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None or job is CHECKPOINT:
                    stopping, checkpoint = job is None, job is CHECKPOINT
                    break
                group.append(job)
                size += job.size
            self._commit(group)
            if checkpoint:
                self._checkpoint()

    def _checkpoint(self):
        """Copy the WAL into the database file, off the event loop (readers and writers go on)."""
        try:
            if self._connection is None:
                self._connection = self.database.write_engine.connect()
            self._connection.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:  # the next one copies what this one could not
            log.warning("WAL checkpoint failed: %s", exc)

    def _commit_pending(self):
        """Commit this turn's small jobs on the event loop, or hand them to the writer thread."""
        group, self._pending = self._pending, []
        connection = self._inline_connection()
        lock = self.database.write_lock
        if connection is None or not lock.try_acquire(connection):
            for job in group:  # another writer holds the database: the thread waits, not the loop
                self._queue.put(job)
            return
        try:
            transaction = connection.begin()  # BEGIN IMMEDIATE: fails at once if another process
        except Exception:  # holds SQLite's lock (busy timeout 0 on this connection)
            lock.release(connection.connection.dbapi_connection)
            for job in group:
                self._queue.put(job)
            return
        try:
            with transaction:
                answers = _run_group(connection, group)
        except Exception as exc:  # COMMIT failed: none of the group is stored
            answers = [(False, exc)] * len(group)
            self._loop_connection = None  # it may be broken: connect afresh next time
            with contextlib.suppress(Exception):
                connection.invalidate()
        else:
            self._inline_commits += 1
            if self._inline_commits % CHECKPOINT_EVERY == 0:
                self._queue.put(CHECKPOINT)
        for job, (ok, value) in zip(group, answers, strict=True):
            _settle(job.future, ok, value)

    def _inline_connection(self):
        if self._loop_connection is None:
            try:
                connection = self.database.write_engine.connect()
            except Exception:
                return None
            driver = connection.connection.dbapi_connection
            driver.execute("PRAGMA busy_timeout=0")  # another writer: hand over, don't wait
            driver.execute("PRAGMA wal_autocheckpoint=0")  # the writer thread checkpoints
            self._loop_connection = connection
        return self._loop_connection

    def _commit(self, group):
        try:
            if self._connection is None:
                self._connection = self.database.write_engine.connect()
            connection = self._connection
            with connection.begin():
                answers = _run_group(connection, group)
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


def _run_group(connection, group):
    """Each job's `(ok, value)`, run in run order inside the open transaction."""
    group.sort(key=lambda job: job.order)
    if len(group) == 1:
        return [_alone(connection, group[0])]
    cursor = connection.connection.cursor()
    answers = [_in_savepoint(connection, cursor, job) for job in group]
    cursor.close()
    return answers


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
