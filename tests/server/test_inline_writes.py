"""Small writes on SQLite are committed on the event loop, and never make the loop wait."""

import asyncio
import sqlite3
import threading
import time

import pytest
from sqlalchemy import event

from callboard.server.store import migrate
from callboard.server.store.db import Database, sqlite_file
from callboard.server.store.group_commit import GroupCommit
from callboard.server.store.ingest import store_events
from tests.server.test_group_commit import counts, epochs, held_writer, new_runs


@pytest.fixture
def database(tmp_path):
    """A migrated SQLite database: work is stored on the event loop on SQLite only."""
    url = f"sqlite:///{tmp_path / 'callboard.db'}"
    migrate.upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture
def writer(database):
    writer = GroupCommit(database, inline_size=100)
    writer.start()
    yield writer
    writer.stop_inline()
    writer.stop()


def noted(writer, run_id, events, where):
    """`store_events` through `writer`, noting the thread and connection it ran on."""

    def work(connection):
        where.append((threading.current_thread().name, connection.connection.dbapi_connection))
        return store_events(connection, run_id, events)

    return writer.run(work, order=run_id, size=len(events))


def commits_of(database):
    commits = []
    event.listen(database.engine, "commit", lambda connection: commits.append(connection))
    return commits


async def until(condition):
    while not condition():
        await asyncio.sleep(0.001)


def test_small_pieces_of_one_loop_turn_commit_together_on_the_loop(database, writer):
    run_ids = new_runs(database, 3)
    commits, where = commits_of(database), []

    async def main():
        return await asyncio.gather(*(noted(writer, r, epochs(1, 2), where) for r in run_ids))

    assert [stored.accepted for stored in asyncio.run(main())] == [2, 2, 2]
    assert {name for name, _ in where} == {threading.current_thread().name}
    assert len({id(connection) for _, connection in where}) == 1
    assert len(commits) == 1  # one transaction for the three requests
    assert [counts(database, run_id) for run_id in run_ids] == [(2, 2)] * 3


def test_a_failing_piece_is_rolled_back_alone_on_the_loop(database, writer):
    good, bad = new_runs(database, 2)

    def half_written(connection):
        store_events(connection, bad, epochs(1, 4))
        raise ValueError("boom")

    async def main():
        return await asyncio.gather(
            writer.run(lambda c: store_events(c, good, epochs(1, 2)), order=good),
            writer.run(half_written, order=bad),
            writer.run(lambda c: store_events(c, good, epochs(3, 2)), order=good),
            return_exceptions=True,
        )

    first, failed, last = asyncio.run(main())
    assert (first.accepted, last.accepted) == (2, 2) and isinstance(failed, ValueError)
    assert counts(database, good) == (4, 4)
    assert counts(database, bad) == (0, 0)


def test_while_the_writer_thread_holds_the_database_small_pieces_wait_there(database, writer):
    """The loop goes on serving; the piece joins the thread's next group."""
    [run_id] = new_runs(database, 1)
    hold, started, release = held_writer(writer)
    where, ticks = [], []

    async def main():
        held = asyncio.ensure_future(writer.run(hold, size=1_000))  # over inline_size
        await until(started.is_set)
        small = asyncio.ensure_future(noted(writer, run_id, epochs(1, 2), where))
        await until(lambda: len(ticks) > 20 or small.done())
        assert not small.done() and not where  # waiting for the thread, not blocking the loop
        release.set()
        return await held, await small

    async def ticking():
        task = asyncio.ensure_future(main())
        while not task.done():
            ticks.append(1)
            await asyncio.sleep(0.001)
        return await task

    assert asyncio.run(ticking())[0] == "held"
    assert [name for name, _ in where] == ["callboard-writer"]
    assert counts(database, run_id) == (2, 2)


def test_another_process_holding_sqlite_does_not_block_the_loop(database, writer):
    [run_id] = new_runs(database, 1)
    other = sqlite3.connect(sqlite_file(database.url), isolation_level=None)
    where, ticks = [], []

    async def main():
        other.execute("BEGIN IMMEDIATE")  # as another process writing the same file would
        started = time.monotonic()
        small = asyncio.ensure_future(noted(writer, run_id, epochs(1, 2), where))
        while len(ticks) < 20:
            ticks.append(1)
            await asyncio.sleep(0.001)
        # Far below SQLite's 10 s busy timeout: the loop did not wait in it.
        assert time.monotonic() - started < 5
        assert not small.done()
        other.execute("COMMIT")
        return await asyncio.wait_for(small, 30)

    try:
        assert asyncio.run(main()).accepted == 2
    finally:
        other.close()
    assert [name for name, _ in where] == ["callboard-writer"]
    assert counts(database, run_id) == (2, 2)
