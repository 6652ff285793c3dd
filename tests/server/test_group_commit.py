"""Group commit: concurrent batches share transactions, each stored once, failures stay apart."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select, text

from callboard.server.api.schemas import EventIn, RunCreate
from callboard.server.store.db import Database
from callboard.server.store.group_commit import GroupCommit, in_turns
from callboard.server.store.ingest import RunNotFound, store_events
from callboard.server.store.models import Event, MetricPoint, MetricRollup, Run
from callboard.server.store.run_writes import ChangedRuns, create_run


@pytest.fixture
def database(database_url):
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def writer(database):
    writer = GroupCommit(database)
    writer.start()
    yield writer
    writer.stop()


def new_runs(database, count):
    with database.write_engine.begin() as connection:
        specs = [RunCreate(name=f"r{i}", project="p") for i in range(count)]
        return [create_run(connection, ChangedRuns(), spec)[0] for spec in specs]


def epochs(first_seq, count, **metrics):
    return [
        EventIn(
            seq=first_seq + i,
            kind="epoch_end",
            epoch=first_seq + i - 1,
            metrics=metrics or {"loss": 1.0 / (first_seq + i)},
        )
        for i in range(count)
    ]


def store(writer, run_id, events):
    return writer.run(lambda connection: store_events(connection, run_id, events), order=run_id)


def counts(database, run_id):
    with database.reader() as session:
        events = session.scalar(select(func.count()).where(Event.run_id == run_id))
        points = session.scalar(select(func.count()).where(MetricPoint.run_id == run_id))
        return events, points


def held_writer(writer):
    """A job that holds the writer until released, so what is queued meanwhile forms one group."""
    started, release = threading.Event(), threading.Event()

    def hold(connection):
        started.set()
        release.wait(10)
        return "held"

    return hold, started, release


async def _queued_behind(writer, hold, started, release, jobs):
    first = asyncio.ensure_future(writer.run(hold))
    while not started.is_set():
        await asyncio.sleep(0.001)
    rest = [asyncio.ensure_future(job) for job in jobs]
    await asyncio.sleep(0.05)  # every job is queued behind `hold`
    release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_concurrent_batches_and_their_retries_are_all_stored_once(database, writer):
    run_ids = new_runs(database, 4)

    async def main():
        jobs = []
        for run_id in run_ids:
            for start in range(1, 41, 5):  # 8 batches of 5 epochs, each sent twice
                jobs.append(store(writer, run_id, epochs(start, 5)))
                jobs.append(store(writer, run_id, epochs(start, 5)))
        return await asyncio.gather(*jobs)

    answers = asyncio.run(main())
    assert sum(a.accepted for a in answers) == 4 * 40
    assert sum(a.duplicates for a in answers) == 4 * 40
    for run_id in run_ids:
        assert counts(database, run_id) == (40, 40)
        with database.reader() as session:
            run = session.get(Run, run_id)
            assert (run.last_seq, run.epochs_done, run.summary["loss"][0]) == (40, 40, 39)


def test_queued_batches_commit_together(database, writer):
    run_ids = new_runs(database, 3)
    connections = []

    def noting(run_id, events):
        def work(connection):
            connections.append(connection)
            return store_events(connection, run_id, events)

        return writer.run(work, order=run_id)

    hold, started, release = held_writer(writer)
    jobs = [noting(run_id, epochs(1, 3)) for run_id in run_ids]
    answers = asyncio.run(_queued_behind(writer, hold, started, release, jobs))
    assert answers[0] == "held" and [a.accepted for a in answers[1:]] == [3, 3, 3]
    assert len({id(connection) for connection in connections}) == 1  # one transaction for all
    assert [counts(database, run_id) for run_id in run_ids] == [(3, 3)] * 3


def test_a_failing_batch_leaves_no_rows_and_does_not_fail_the_others(database, writer):
    good, bad = new_runs(database, 2)

    def half_written(connection):
        store_events(connection, bad, epochs(1, 4))  # rows written, then the batch fails
        raise ValueError("boom")

    hold, started, release = held_writer(writer)
    jobs = [
        store(writer, good, epochs(1, 2)),
        writer.run(half_written, order=bad),
        store(writer, 999_999, epochs(1, 1)),  # no such run
        store(writer, good, epochs(3, 2)),
    ]
    answers = asyncio.run(_queued_behind(writer, hold, started, release, jobs))
    assert answers[1].accepted == 2 and answers[4].accepted == 2
    assert isinstance(answers[2], ValueError) and isinstance(answers[3], RunNotFound)
    assert counts(database, good) == (4, 4)
    assert counts(database, bad) == (0, 0)
    with database.reader() as session:
        assert session.get(Run, bad).last_seq == 0
        rollups = select(func.count()).where(MetricRollup.run_id == bad)
        assert session.scalar(rollups) == 0


def test_a_lone_failing_batch_is_rolled_back(database, writer):
    [run_id] = new_runs(database, 1)

    def half_written(connection):
        store_events(connection, run_id, epochs(1, 3))
        raise ValueError("boom")

    async def main():
        with pytest.raises(ValueError):
            await writer.run(half_written)
        return await store(writer, run_id, epochs(1, 3))

    assert asyncio.run(main()).accepted == 3
    assert counts(database, run_id) == (3, 3)


def test_a_failed_commit_fails_every_batch_of_its_group(database, writer):
    run_ids = new_runs(database, 2)

    def poisoned(connection):
        # Make the commit fail: on SQLite by ending the transaction underneath the
        # writer, on PostgreSQL by a deferred constraint that only fails at COMMIT.
        if database.is_sqlite:
            connection.exec_driver_sql("COMMIT")
        else:
            connection.execute(
                text(
                    "CREATE TEMP TABLE late (x int UNIQUE DEFERRABLE INITIALLY DEFERRED) "
                    "ON COMMIT DROP"
                )
            )
            connection.execute(text("INSERT INTO late VALUES (1), (1)"))
        return "poisoned"

    hold, started, release = held_writer(writer)
    jobs = [store(writer, run_ids[0], epochs(1, 2)), writer.run(poisoned, order=run_ids[1])]
    answers = asyncio.run(_queued_behind(writer, hold, started, release, jobs))
    assert answers[0] == "held"
    assert all(isinstance(answer, Exception) for answer in answers[1:])
    if not database.is_sqlite:
        assert counts(database, run_ids[0]) == (0, 0)


def test_the_writer_finishes_queued_work_when_stopped(database):
    [run_id] = new_runs(database, 1)
    writer = GroupCommit(database)
    writer.start()

    async def main():
        job = asyncio.ensure_future(store(writer, run_id, epochs(1, 2)))
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)
        return await job

    assert asyncio.run(main()).accepted == 2
    assert counts(database, run_id) == (2, 2)
    with pytest.raises(RuntimeError):
        asyncio.run(store(writer, run_id, epochs(3, 1)))


def test_a_real_server_stores_concurrent_clients_and_their_retries_once(server_factory):
    server = server_factory()

    def client(index):
        with httpx.Client(base_url=server.root, timeout=30) as http:
            run_id = http.post("/api/v1/runs", json={"name": f"c{index}"}).json()["id"]
            for seq in range(1, 31):
                batch = {"events": [{"seq": seq, "kind": "epoch_end", "epoch": seq - 1}]}
                batch["events"][0]["metrics"] = {"loss": 1.0 / seq}
                for _ in range(2):  # every batch is retried once
                    assert http.post(f"/api/v1/runs/{run_id}/events", json=batch).status_code == 200
            return run_id

    with ThreadPoolExecutor(8) as pool:
        run_ids = list(pool.map(client, range(8)))
    with httpx.Client(base_url=server.root) as http:
        for run_id in run_ids:
            events = http.get(f"/api/v1/runs/{run_id}/events").json()["events"]
            assert [event["seq"] for event in events] == list(range(1, 31))
            points = http.get(f"/api/v1/runs/{run_id}/metrics/loss").json()["points"]
            assert [point["step"] for point in points] == list(range(30))
            assert http.get(f"/api/v1/runs/{run_id}").json()["epochs_done"] == 30


def test_a_large_request_takes_turns_with_other_requests(writer):
    """Work queued while a large request is being written runs before the request's last turn."""
    done = []
    first_turn, release = threading.Event(), threading.Event()

    def large(connection, part):
        if part == [0]:
            first_turn.set()
            release.wait(10)
        done.append(("large", part))
        return part

    def small(connection):
        done.append(("small",))
        return "small"

    async def scenario():
        turns = [([0], 1), ([1], 1), ([2], 1)]
        large_request = asyncio.ensure_future(writer.run_in_turns(large, turns, order=1))
        while not first_turn.is_set():
            await asyncio.sleep(0.001)
        small_request = asyncio.ensure_future(writer.run(small, order=2))
        await asyncio.sleep(0)  # the small request's job is now queued
        release.set()
        return await large_request, await small_request

    assert asyncio.run(scenario()) == ([[0], [1], [2]], "small")
    assert done.index(("small",)) < done.index(("large", [2])), done


def test_in_turns_cuts_by_size():
    assert list(in_turns([], size_of=len)) == [([], 0)]
    assert list(in_turns(["ab", "c", "defg", "h"], size_of=len, limit=3)) == [
        (["ab", "c"], 3),
        (["defg"], 4),
        (["h"], 1),
    ]
