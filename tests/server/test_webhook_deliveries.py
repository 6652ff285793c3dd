"""Webhook deliveries: real posts to a local receiver, retried, logged, once across replicas."""

import asyncio
import collections
import contextlib
import doctest
import functools
import hashlib
import hmac
import json
import logging
import socket
import time
import types

import pytest
from sqlalchemy import insert

from callboard.server.api.schemas import RunCreate
from callboard.server.rules import deliveries
from callboard.server.rules.deliveries import WebhookSender, add_delivery, read_deliveries
from callboard.server.store import migrate
from callboard.server.store.db import Database
from callboard.server.store.group_commit import INLINE_SIZE, GroupCommit
from callboard.server.store.models import Rule, RuleFiring
from callboard.server.store.run_writes import ChangedRuns, create_run
from tests.server.fresh_postgres import fresh_postgres_database
from tests.server_process import free_port

DEADLINE = 20.0


@pytest.fixture
def database(tmp_path):
    url = f"sqlite:///{tmp_path / 'callboard.db'}"
    migrate.upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def new_firing(database):
    """A run, a rule and one firing of it (what deliveries belong to): `(firing_id, rule_id)`."""
    now = time.time()
    with database.write_engine.begin() as connection:
        run_id, _ = create_run(connection, ChangedRuns(), RunCreate(name="r", project="p"))
        rule = {"name": "nan loss", "condition": {"kind": "nan", "metric": "loss"}}
        rule_id = connection.execute(
            insert(Rule.__table__).values(**rule, actions=[], created_at=now)
        ).inserted_primary_key[0]
        firing = {"rule_id": rule_id, "run_id": run_id, "episode": 1, "rule_name": "nan loss"}
        firing |= {"message": "loss is NaN", "metric": "loss", "value": "NaN", "epoch": 3}
        firing_id = connection.execute(
            insert(RuleFiring.__table__).values(**firing, done=[], fired_at=now)
        ).inserted_primary_key[0]
    return firing_id, rule_id


def alert_body(text="Rule nan loss: loss is NaN on run r — epoch 3"):
    """A webhook body as a firing writes it (non-ASCII too: it must arrive byte for byte)."""
    run = {"id": 1, "name": "r", "project": "p", "url": "http://127.0.0.1:8000/runs/1"}
    fields = {"metric": "loss", "value": "NaN", "epoch": 3}
    return json.dumps({"text": text, "rule": "nan loss", "run": run, **fields}, ensure_ascii=False)


@contextlib.asynccontextmanager
async def sending(database, meeting=None, **options):
    """A started group-commit writer (as the app builds it) and a started `WebhookSender`;
    with a `ClaimsMeet`, the sender's first write (its claim) waits there."""
    writer = GroupCommit(database, inline_size=INLINE_SIZE)
    writer.start()
    sender = WebhookSender(writer if meeting is None else meeting.gate(writer), database, **options)
    sender.start()
    try:
        yield sender
    finally:
        await sender.stop()
        writer.stop_inline()
        await asyncio.to_thread(writer.stop)


class ClaimsMeet:
    """Holds each sender's first claim until every sender has made one: all of them have read
    the same due rows, so their claims race for every row, as two replicas' may."""

    def __init__(self, senders):
        self.waiting = senders
        self.all_here = asyncio.Event()

    def gate(self, writer):
        first = True

        async def run(work, order=0, size=1):
            nonlocal first
            if first:
                first, self.waiting = False, self.waiting - 1
                if self.waiting == 0:
                    self.all_here.set()
                await self.all_here.wait()
            return await writer.run(work, order=order, size=size)

        return types.SimpleNamespace(run=run)


async def queue(sender, firing_id, index, url, body=None, secret=None):
    """Store a delivery through the writer, as a firing does, and wake the sender: its id."""
    body = body or alert_body()
    store = functools.partial(add_delivery, firing_id=firing_id, index=index, url=url, body=body)
    delivery_id = await sender.writer.run(functools.partial(store, secret=secret))
    sender.wake()
    return delivery_id


def delivery_log(database, **filters):
    """`read_deliveries` by id."""
    with database.reader() as session:
        return {row["id"]: row for row in read_deliveries(session, **filters)}


async def until(condition, what, deadline=DEADLINE):
    """Wait for `condition()` (run off the loop, it may read the database) to hold."""
    end = time.monotonic() + deadline
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < end, f"still waiting for {what}"
        await asyncio.sleep(0.02)


def settled(database, delivery_id, state):
    return lambda: delivery_log(database)[delivery_id]["state"] == state


def test_a_signed_delivery_arrives_once_byte_for_byte_and_verifies(database, receiver):
    firing_id, rule_id = new_firing(database)
    body, secret = alert_body(), "s3cret"

    async def scenario():
        async with sending(database) as sender:
            signed = await queue(sender, firing_id, 0, receiver.url("/T0/B0/x"), body, secret)
            unsigned = await queue(sender, firing_id, 1, receiver.url("/plain"), body)
            for delivery_id in (signed, unsigned):
                await until(settled(database, delivery_id, "delivered"), "both delivered")
            return signed, unsigned

    signed, unsigned = asyncio.run(scenario())
    [post] = receiver.received("/T0/B0/x")
    assert post.method == "POST"
    assert post.body == body.encode()
    expected = hmac.new(secret.encode(), post.body, hashlib.sha256).hexdigest()
    assert post.headers["X-Callboard-Signature"] == f"sha256={expected}"
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["User-Agent"] == "Callboard-Webhook/1"
    assert post.headers["Idempotency-Key"] == f"callboard-firing-{firing_id}-0"
    assert post.headers["X-Callboard-Delivery"] == str(signed)
    [plain] = receiver.received("/plain")
    assert "X-Callboard-Signature" not in plain.headers
    assert plain.headers["Idempotency-Key"] == f"callboard-firing-{firing_id}-1"
    rows = list(delivery_log(database, rule_id=rule_id).values())
    assert [row["id"] for row in rows] == [unsigned, signed]  # newest first
    row = rows[1]
    assert row.items() >= {"state": "delivered", "attempts": 1, "last_status": 200}.items()
    assert row["last_error"] is None
    assert row["delivered_at"] is not None and row["firing_id"] == firing_id
    assert row["url"] == f"http://127.0.0.1:{receiver.server.server_address[1]}/…"
    assert delivery_log(database, rule_id=rule_id + 1) == {}


def test_server_errors_are_retried_with_the_same_idempotency_key(database, receiver):
    firing_id, _ = new_firing(database)
    receiver.answers["/hook"] = [500, 500]

    async def scenario():
        async with sending(database, first_backoff=0.05) as sender:
            delivery_id = await queue(sender, firing_id, 0, receiver.url("/hook"))
            await until(settled(database, delivery_id, "delivered"), "delivered on the third try")
            return delivery_id

    delivery_id = asyncio.run(scenario())
    posts = receiver.received("/hook")
    assert len(posts) == 3
    keys = {post.headers["Idempotency-Key"] for post in posts}
    assert keys == {f"callboard-firing-{firing_id}-0"}
    assert {post.body for post in posts} == {alert_body().encode()}
    row = delivery_log(database)[delivery_id]
    assert (row["attempts"], row["last_status"], row["last_error"]) == (3, 200, None)


def test_a_closed_port_fails_after_max_attempts_naming_the_refusal(database):
    firing_id, _ = new_firing(database)
    url = f"http://127.0.0.1:{free_port()}/hook"

    async def scenario():
        async with sending(database, max_attempts=3, first_backoff=0.02) as sender:
            delivery_id = await queue(sender, firing_id, 0, url)
            await until(settled(database, delivery_id, "failed"), "failed")
            return delivery_id

    delivery_id = asyncio.run(scenario())
    row = delivery_log(database)[delivery_id]
    assert row.items() >= {"attempts": 3, "last_status": None}.items()
    assert row["last_error"] == "connection refused"
    assert row["delivered_at"] is None


@pytest.mark.parametrize(
    ("answers", "state", "attempts", "last_status"),
    [([404, 404], "failed", 1, 404), ([429], "delivered", 2, 200), ([408], "delivered", 2, 200)],
)
def test_a_client_error_is_final_unless_timeout_or_too_many_requests(
    database, receiver, answers, state, attempts, last_status
):
    firing_id, _ = new_firing(database)
    receiver.answers["/hook"] = list(answers)

    async def scenario():
        async with sending(database, first_backoff=0.01) as sender:
            delivery_id = await queue(sender, firing_id, 0, receiver.url("/hook"))
            await until(lambda: delivery_log(database)[delivery_id]["state"] != "pending", "end")
            return delivery_id

    delivery_id = asyncio.run(scenario())
    row = delivery_log(database)[delivery_id]
    assert (row["state"], row["attempts"], row["last_status"]) == (state, attempts, last_status)
    assert len(receiver.received("/hook")) == attempts
    if state == "failed":  # the answer's start, on one line
        assert row["last_error"] == "HTTP 404: no such hook see the docs"


def test_a_hanging_receiver_delays_neither_other_deliveries_nor_writes(database, receiver):
    firing_id, _ = new_firing(database)
    receiver.hanging.add("/slow")

    async def scenario():
        async with sending(database, timeout=3.0, max_attempts=1) as sender:
            slow = await queue(sender, firing_id, 0, receiver.url("/slow"))
            await until(lambda: receiver.received("/slow"), "the slow receiver reached")
            fast = await queue(sender, firing_id, 1, receiver.url("/fast"))
            await until(settled(database, fast, "delivered"), "the healthy one delivered")
            assert await sender.writer.run(lambda connection: "stored") == "stored"
            in_flight = delivery_log(database)[slow]  # its post has not ended yet
            await until(settled(database, slow, "failed"), "the slow one timed out")
            return in_flight, delivery_log(database)[slow]

    in_flight, timed_out = asyncio.run(scenario())
    assert in_flight.items() >= {"state": "pending", "attempts": 1, "last_error": None}.items()
    assert timed_out["last_error"] == "timed out after 3 s"
    assert timed_out["last_status"] is None


def test_two_senders_on_one_postgresql_post_each_delivery_exactly_once(receiver):
    with fresh_postgres_database() as url:
        migrate.upgrade(url)
        replicas = [Database(url), Database(url)]
        try:
            firing_id, _ = new_firing(replicas[0])
            with replicas[0].write_engine.begin() as connection:
                ids = [
                    add_delivery(connection, firing_id, index, receiver.url(f"/hook/{index}"), "{}")
                    for index in range(20)
                ]

            async def scenario():
                meeting = ClaimsMeet(senders=2)
                async with sending(replicas[0], meeting), sending(replicas[1], meeting):
                    every = lambda: all(  # noqa: E731
                        row["state"] == "delivered" for row in delivery_log(replicas[0]).values()
                    )
                    await until(every, "all 20 delivered")

            asyncio.run(scenario())
            log = delivery_log(replicas[1])
        finally:
            for database in replicas:
                database.dispose()
    keys = collections.Counter(post.headers["Idempotency-Key"] for post in receiver.received())
    assert keys == {f"callboard-firing-{firing_id}-{index}": 1 for index in range(20)}
    assert sorted(log) == sorted(ids)
    assert {row["attempts"] for row in log.values()} == {1}


def test_stop_leaves_no_task_running_and_no_connection_open(database, receiver):
    firing_id, _ = new_firing(database)
    receiver.hanging.add("/slow")

    async def scenario():
        async with sending(database, timeout=30.0) as sender:
            await queue(sender, firing_id, 0, receiver.url("/slow"))
            await until(lambda: receiver.received("/slow"), "a post under way")
            fast = await queue(sender, firing_id, 1, receiver.url("/fast"))
            await until(settled(database, fast, "delivered"), "a post delivered")
            open_before = receiver.open_connections  # the hanging one, and one kept alive
            await sender.stop()
            left = asyncio.all_tasks() - {asyncio.current_task()}
            await until(lambda: receiver.open_connections == 0, "the sender's connections closed")
            sender.wake()  # after stop: does nothing, raises nothing
            return open_before, left

    open_before, left = asyncio.run(scenario())
    assert (open_before, left) == (2, set())
    assert receiver.hung_up == ["/slow"]


def test_a_database_error_is_logged_and_the_next_round_goes_on(database, receiver, caplog):
    firing_id, _ = new_firing(database)
    with database.write_engine.begin() as connection:
        delivery_id = add_delivery(connection, firing_id, 0, receiver.url("/hook"), "{}")
        connection.exec_driver_sql("ALTER TABLE webhook_deliveries RENAME TO parked")

    def warned():
        return any("database unavailable" in record.getMessage() for record in caplog.records)

    async def scenario():
        async with sending(database) as sender:
            await until(warned, "the missing table logged")
            with database.write_engine.begin() as connection:
                connection.exec_driver_sql("ALTER TABLE parked RENAME TO webhook_deliveries")
            sender.wake()
            await until(settled(database, delivery_id, "delivered"), "delivered once back")

    with caplog.at_level(logging.WARNING, logger="callboard.server.webhooks"):
        asyncio.run(scenario())
    assert len(receiver.received("/hook")) == 1


def test_a_name_that_resolves_to_a_link_local_address_is_refused_before_any_post(
    database, receiver, monkeypatch
):
    # A rule's URL is checked when it is added, but a name (metadata.google.internal) is only
    # an address once resolved, and its addresses may change: each post resolves it first.
    real = socket.getaddrinfo
    names = {"metadata.test": "169.254.169.254"}

    def resolve(host, *args, **kwargs):
        return real(names.get(host, host), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    firing_id, _ = new_firing(database)
    port = receiver.url("/").split(":")[2].split("/")[0]

    async def scenario():
        async with sending(database, max_attempts=3, first_backoff=0.02) as sender:
            metadata = await queue(sender, firing_id, 0, "http://metadata.test/computeMetadata/v1")
            alerts = await queue(sender, firing_id, 1, f"http://localhost:{port}/hook")
            await until(settled(database, metadata, "failed"), "refused")
            await until(settled(database, alerts, "delivered"), "delivered")
            return metadata

    metadata = asyncio.run(scenario())
    row = delivery_log(database)[metadata]
    assert row.items() >= {"attempts": 1, "last_status": None}.items()  # final: no retry
    assert "link-local" in row["last_error"]
    assert len(receiver.received("/hook")) == 1  # a name of a loopback receiver still delivers


def test_cut_url_examples_hold():
    assert doctest.testmod(deliveries).failed == 0
