"""Two real `callboard serve` replicas on one PostgreSQL database, as behind a load balancer.

Live updates cross replicas through LISTEN/NOTIFY, control state through the
database, and ingest stays exactly-once per (run, seq) with replicas racing.
"""

import asyncio
import itertools
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from callboard.server.live import make_hub
from callboard.server.live.postgres import PostgresHub
from tests.server_process import ServerProcess

from .fresh_postgres import fresh_postgres_database
from .helpers import epoch_event

FAN_OUT_SECONDS = 2.0
_uids = itertools.count(1)


@pytest.fixture(scope="module")
def shared_database():
    with fresh_postgres_database("callboard_replicas") as url:
        yield url


@pytest.fixture(scope="module")
def replicas(shared_database):
    """Replicas A and B; A starts first so it alone migrates the empty database."""
    a = ServerProcess(shared_database).start()
    b = ServerProcess(shared_database).start()
    yield a, b
    for server in (a, b):
        server.stop()


def create_run(client, name):
    uid = f"replica-run-{next(_uids):06d}-{time.time_ns()}"
    response = client.post("/api/v1/runs", json={"name": name, "project": "replicas", "uid": uid})
    assert response.status_code == 201, response.text
    return response.json()["id"]


class SseReader:
    """Reads server-sent events off a streaming response, one message at a time."""

    def __init__(self, response):
        self.lines = response.iter_lines()

    def next_message(self):
        current = {}
        for line in self.lines:
            if not line:
                if "data" in current:
                    return current.get("event"), json.loads(current["data"])
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                current[field] = value.lstrip()
        raise AssertionError("stream ended")

    def wait_for(self, accept, timeout):
        """The first message `accept(event, data)` likes, and the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            event, data = self.next_message()
            if accept(event, data):
                return data, time.monotonic() - started
        raise AssertionError(f"no matching message within {timeout} s")


def test_browser_on_b_sees_an_epoch_posted_to_a(replicas):
    a, b = replicas
    # The read timeout is far below the server's 15 s keepalive: a missed wake-up fails fast.
    with (
        httpx.Client(base_url=a.root, timeout=5) as on_a,
        httpx.Client(base_url=b.root, timeout=5) as on_b,
    ):
        run_id = create_run(on_a, "fan-out")
        with on_b.stream("GET", f"/api/v1/runs/{run_id}/stream") as response:
            assert response.status_code == 200
            stream = SseReader(response)
            stream.wait_for(lambda event, data: event == "run", FAN_OUT_SECONDS)
            for seq in (1, 2, 3):
                posted = on_a.post(
                    f"/api/v1/runs/{run_id}/events",
                    json={"events": [epoch_event(seq, seq - 1, loss=1.0 / seq)]},
                )
                assert posted.json()["accepted"] == 1
                data, seconds = stream.wait_for(
                    lambda event, data, seq=seq: event is None and data["seq"] == seq,
                    FAN_OUT_SECONDS,
                )
                assert data["metrics"] == {"loss": 1.0 / seq}
                assert seconds < FAN_OUT_SECONDS


def test_runs_list_stream_on_b_announces_a_run_created_on_a(replicas):
    a, b = replicas
    with (
        httpx.Client(base_url=a.root, timeout=5) as on_a,
        httpx.Client(base_url=b.root, timeout=5) as on_b,
    ):
        since = time.time()
        with on_b.stream("GET", "/api/v1/stream", params={"after": since}) as response:
            stream = SseReader(response)
            threading.Timer(0.3, create_run, (on_a, "announced-across")).start()
            data, _ = stream.wait_for(
                lambda event, data: data["name"] == "announced-across", FAN_OUT_SECONDS + 0.3
            )
            assert data["project"] == "replicas"


def test_stop_requested_on_a_is_seen_by_a_client_polling_b(replicas):
    a, b = replicas
    with (
        httpx.Client(base_url=a.root, timeout=5) as on_a,
        httpx.Client(base_url=b.root, timeout=5) as on_b,
    ):
        run_id = create_run(on_a, "stop-across")
        control = f"/api/v1/runs/{run_id}/control"
        assert on_b.get(control).json()["stop_requested"] is False
        with on_b.stream("GET", f"/api/v1/runs/{run_id}/stream") as response:
            stream = SseReader(response)
            stream.wait_for(lambda event, data: event == "run", FAN_OUT_SECONDS)
            stopped = on_a.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "enough"})
            assert stopped.status_code == 200
            # The very next poll on B sees it: control state is read from the database.
            seen = on_b.get(control).json()
            assert seen["stop_requested"] is True
            assert seen["state"] == "requested" and seen["reason"] == "enough"
            # A browser on B is told too.
            data, _ = stream.wait_for(
                lambda event, data: event == "run" and data["stop"] == "requested",
                FAN_OUT_SECONDS,
            )
        assert on_b.post(f"{control}/ack").json()["state"] == "acknowledged"
        assert on_a.get(control).json()["state"] == "acknowledged"


def test_the_same_batches_racing_through_both_replicas_are_stored_once(replicas, shared_database):
    a, b = replicas
    seqs, batch_size, clients = 240, 12, 8
    keys = ("loss", "accuracy", "val_loss")
    batches = [
        [
            epoch_event(seq, seq - 1, **{key: seq * 0.001 + k for k, key in enumerate(keys)})
            for seq in range(first, first + batch_size)
        ]
        for first in range(1, seqs + 1, batch_size)
    ]
    with httpx.Client(base_url=a.root, timeout=30) as on_a:
        run_id = create_run(on_a, "racing")

    def client(index):
        # Each client posts every batch, in its own order, alternating replicas.
        order = list(range(len(batches)))
        random.Random(index).shuffle(order)
        accepted = 0
        with httpx.Client(timeout=30) as http:
            for n, batch in enumerate(order):
                root = (a, b)[(index + n) % 2].root
                response = http.post(
                    f"{root}/api/v1/runs/{run_id}/events", json={"events": batches[batch]}
                )
                assert response.status_code == 200, response.text
                accepted += response.json()["accepted"]
        return accepted

    with ThreadPoolExecutor(clients) as pool:
        accepted = sum(pool.map(client, range(clients)))
    assert accepted == seqs

    with psycopg.connect(shared_database) as conn:
        stored, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT seq) FROM events WHERE run_id = %s", (run_id,)
        ).fetchone()
        points, distinct_points = conn.execute(
            "SELECT count(*), count(DISTINCT (key, step)) FROM metric_points WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    assert stored == distinct == seqs
    assert points == distinct_points == seqs * len(keys)

    with httpx.Client(base_url=b.root, timeout=30) as on_b:
        run = on_b.get(f"/api/v1/runs/{run_id}").json()
        assert run["epochs_done"] == seqs
        series = on_b.get(f"/api/v1/runs/{run_id}/metrics/loss").json()
        assert series["total"] == seqs
        assert [p["step"] for p in series["points"]] == list(range(seqs))
        events = on_b.get(f"/api/v1/runs/{run_id}/events", params={"limit": 1000}).json()
        assert sorted(e["seq"] for e in events["events"]) == list(range(1, seqs + 1))


def test_the_same_run_created_through_both_replicas_at_once_is_one_run(replicas):
    a, b = replicas
    uid = f"racing-create-{time.time_ns()}"

    def create(index):
        root = (a, b)[index % 2].root
        response = httpx.post(
            f"{root}/api/v1/runs",
            json={"name": "created-twice", "project": f"race-{uid}", "uid": uid},
            timeout=30,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(create, range(16)))
    assert len(ids) == 1


def test_a_command_issued_on_a_reaches_a_training_connected_to_b(replicas):
    """A real fit() with RemoteControl reports to B; someone steers it through A."""
    import keras

    from callboard.client import RemoteControl, RemoteMonitor
    from tests.e2e.test_remote_control import Steering, fit_steered
    from tests.e2e.test_training import unique

    a, b = replicas
    steering = Steering(a.root, unique("across-replicas"))
    sent = {}

    def steer(steering):
        sent["lr"] = steering.settled(steering.send("set_learning_rate", 0.0005))
        sent["stop"] = steering.settled(steering.send("stop"))

    monitor = RemoteMonitor(root=b.root, run=steering.name, project="replicas")
    model, _ = fit_steered(steering, steer, [monitor, RemoteControl()])
    assert sent["lr"]["state"] == "applied" and sent["stop"]["state"] == "applied", sent
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(5e-4)
    for replica in (a, b):
        answer = httpx.get(f"{replica.root}/api/v1/runs/{steering.run_id}/commands", timeout=30)
        commands = answer.json()["commands"]
        assert [(c["kind"], c["state"]) for c in commands] == [
            ("set_learning_rate", "applied"),
            ("stop", "applied"),
        ], replica.root
    assert steering.status_once_not("running") == "stopped"


def test_replicas_starting_at_once_on_an_empty_database_all_come_up():
    # Each server migrates at start; without a lock, their CREATE TABLEs collide.
    with fresh_postgres_database("callboard_start") as url:
        servers = [ServerProcess(url) for _ in range(3)]
        try:
            with ThreadPoolExecutor(len(servers)) as pool:
                list(pool.map(ServerProcess.start, servers))
            for server in servers:
                assert httpx.get(server.root + "/api/v1/runs").json()["runs"] == []
        finally:
            for server in servers:
                server.stop()


# -- the hub itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "hub"),
    [
        ("postgresql://u@h/db", "PostgresHub"),
        ("postgres://u@h/db", "PostgresHub"),
        ("postgresql+psycopg://u@h/db", "PostgresHub"),
        ("sqlite:///callboard.db", "LiveHub"),
    ],
)
def test_servers_on_postgresql_fan_out_through_listen_notify(url, hub):
    assert type(make_hub(url)).__name__ == hub


def _terminate_backends(database_url, query_prefix):
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND query LIKE %s",
            (query_prefix + "%",),
        ).fetchone()[0]


def _wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def hub_database():
    with fresh_postgres_database("callboard_hubs") as url:
        yield url


def test_hubs_wake_each_other_and_survive_lost_connections(hub_database):
    a, b = PostgresHub(hub_database), PostgresHub(hub_database)
    a.start()
    b.start()
    try:
        assert a.listening and b.listening

        async def scenario():
            with b.subscribe("run:1") as on_b, a.subscribe("run:1") as on_a:
                a.publish("run:1")
                assert await on_a.wait(0.05)  # local subscribers are woken at once
                assert await on_b.wait(FAN_OUT_SECONDS)
                b.publish("run:2")  # nobody listens to run:2: no wake-up anywhere
                assert not await on_a.wait(0.5)

                # Kill every listening connection: the listener reconnects and wakes
                # its subscribers so they re-read what they may have missed.
                assert await asyncio.to_thread(_terminate_backends, hub_database, "LISTEN") == 2
                assert await on_b.wait(10)
                await asyncio.to_thread(_wait_until, lambda: b.listening)
                await asyncio.sleep(0.1)
                await on_a.wait(0.05), await on_b.wait(0.05)  # drain those wake-ups

                # Kill the sending connections too: the next publish reconnects and arrives.
                await asyncio.to_thread(_terminate_backends, hub_database, "SELECT pg_notify")
                a.publish("run:1")
                assert await on_b.wait(10)

        asyncio.run(scenario())
    finally:
        a.stop()
        b.stop()
    assert not a.listening and not b.listening
