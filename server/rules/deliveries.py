"""Webhook deliveries: each firing's posts stored once, sent in the background with retries.

A firing stores one `webhook_deliveries` row per webhook action (`add_delivery`,
inside the firing's transaction): the exact body, its signature and an
idempotency key, so every attempt sends the same bytes. `WebhookSender` posts
due deliveries: it claims each through the group-commit writer with a
compare-and-set lease (of two replicas on one PostgreSQL, only one posts it),
posts each in a task of its own under a timeout (a dead receiver delays nothing
else), and records the outcome: delivered, another attempt after an exponential
backoff, or failed. `read_deliveries` is the delivery log admins see.
"""

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import math
import random
import time
from urllib.parse import urlsplit

import httpx
from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import OperationalError

from callboard.backoff import backoff_delay
from callboard.server.rules.webhook_targets import LINK_LOCAL, resolves_link_local
from callboard.server.store.models import RuleFiring, WebhookDelivery

log = logging.getLogger("callboard.server.webhooks")

DELIVERIES, FIRINGS = WebhookDelivery.__table__, RuleFiring.__table__
USER_AGENT = "Callboard-Webhook/1"
MOST_BACKOFF = 300.0  # seconds between attempts at most
JITTER = 0.1  # each backoff grows by up to this fraction, so retries of one outage spread out
ERROR_LENGTH = 500  # characters of `last_error` kept (and of a receiver's answer quoted)
IDLE_WAIT = 1.0  # seconds between looks for due deliveries when nothing wakes the sender
MAX_IN_FLIGHT = 100  # posts under way at once; more due ones wait for the next round
LEASE_MARGIN = 60.0  # a claim outlives its post's timeout by this much (the outcome's write)
# 4xx answers another attempt may change (timeout, too many requests); any other 4xx is final.
RETRIED_CLIENT_ERRORS = frozenset({408, 429})


def cut_url(url):
    """`url` as it is ever shown back: scheme, host and port, the rest (a Slack token) cut.

    Example:
        >>> cut_url("https://hooks.example.org/services/T0/B0/secret?token=1")
        'https://hooks.example.org/…'
        >>> cut_url("http://user:pw@127.0.0.1:8125/hook")
        'http://127.0.0.1:8125/…'
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}/…"


def add_delivery(connection, firing_id, index, url, body, secret=None, now=None):
    """Store a pending post of `body` (JSON text, sent byte for byte) to `url`; return its id.

    `index` numbers the firing's webhook actions: the idempotency key
    `callboard-firing-<firing_id>-<index>` is the same on every attempt. With
    `secret`, the body is signed: `sha256=<hex HMAC-SHA256 of the body>`. Run it in
    the firing's transaction, so a firing and its deliveries are stored together.

    Example:
        ```python
        body = json.dumps({"text": "loss is NaN", "rule": "nan loss", ...})
        add_delivery(connection, firing_id, 0, "https://hooks.example.org/x", body, "s3cret")
        ```
    """
    now = time.time() if now is None else now
    values = {
        "firing_id": firing_id,
        "url": url,
        "body": body,
        "signature": _signature(body, secret),
        "idempotency_key": f"callboard-firing-{firing_id}-{index}",
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    return connection.execute(insert(DELIVERIES).values(values)).inserted_primary_key[0]


def _signature(body, secret):
    if secret is None:
        return None
    digest = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def read_deliveries(connection, rule_id=None, firing_id=None, limit=100):
    """The delivery log, newest first: dicts with the firing's `run_id` and `rule_id`, the
    URL cut (`cut_url`), never the body or the signature. `connection`: a Connection or
    a Session."""
    columns = DELIVERIES.c
    query = (
        select(
            columns.id,
            columns.firing_id,
            FIRINGS.c.run_id,
            FIRINGS.c.rule_id,
            columns.url,
            columns.state,
            columns.attempts,
            columns.last_status,
            columns.last_error,
            columns.next_attempt_at,
            columns.delivered_at,
            columns.created_at,
        )
        .join_from(DELIVERIES, FIRINGS, FIRINGS.c.id == columns.firing_id)
        .order_by(columns.id.desc())
        .limit(limit)
    )
    if rule_id is not None:
        query = query.where(FIRINGS.c.rule_id == rule_id)
    if firing_id is not None:
        query = query.where(columns.firing_id == firing_id)
    return [{**row._asdict(), "url": cut_url(row.url)} for row in connection.execute(query)]


def _lease_free(now):
    return or_(DELIVERIES.c.lease_until.is_(None), DELIVERIES.c.lease_until < now)


def _due(connection, now, limit):
    """Up to `limit` pending deliveries due at `now` that no one holds, the longest waiting
    first."""
    columns = DELIVERIES.c
    return connection.execute(
        select(
            columns.id,
            columns.url,
            columns.body,
            columns.signature,
            columns.idempotency_key,
            columns.attempts,
        )
        .where(columns.state == "pending", columns.next_attempt_at <= now, _lease_free(now))
        .order_by(columns.next_attempt_at, columns.id)
        .limit(limit)
    ).all()


def _claim(connection, deliveries, now, lease_until):
    """The `deliveries` this transaction claimed: each still pending, due, free and at the
    attempt it was read at, now leased until `lease_until` with one more attempt (in id
    order, so two replicas claiming the same rows lock them in one order)."""
    claimed = []
    for delivery in sorted(deliveries, key=lambda delivery: delivery.id):
        result = connection.execute(
            update(DELIVERIES)
            .where(
                DELIVERIES.c.id == delivery.id,
                DELIVERIES.c.attempts == delivery.attempts,
                DELIVERIES.c.state == "pending",
                DELIVERIES.c.next_attempt_at <= now,
                _lease_free(now),
            )
            .values(lease_until=lease_until, attempts=DELIVERIES.c.attempts + 1)
        )
        if result.rowcount == 1:
            claimed.append(delivery)
    return claimed


def _record(connection, delivery_id, attempt, values):
    """Store attempt `attempt`'s outcome and free the lease, unless a later attempt (after the
    lease ran out) owns the row now."""
    connection.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == delivery_id, DELIVERIES.c.attempts == attempt)
        .values(lease_until=None, **values)
    )


def _one_line(text):
    return " ".join(text.split())[:ERROR_LENGTH]


def _failure(exc):
    """What went wrong with a post that got no answer, in one line."""
    cause, seen = exc, set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    return _one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


async def _start_of_body(response):
    """The first `ERROR_LENGTH` bytes of `response`'s body as text (a huge answer is not read)."""
    start = b""
    async for chunk in response.aiter_bytes():
        start += chunk
        if len(start) >= ERROR_LENGTH:
            break
    return start[:ERROR_LENGTH].decode("utf-8", errors="replace")


class WebhookSender:
    """Posts due webhook deliveries in the background of the server's event loop.

    Args:
        writer: the app's `group_commit.GroupCommit`; every write goes through it.
        database: the app's `db.Database`, read for due deliveries.
        timeout: seconds a post may take in all (connect, send, answer).
        max_attempts: attempts before a delivery ends `failed`.
        first_backoff: seconds before the second attempt; each next waits twice as long
            (plus a little jitter), at most `MOST_BACKOFF`.
        lease_seconds: how long a claim holds a delivery against other replicas; by
            default `timeout` plus a minute. A post still under way when the sender stops
            is posted again once its lease runs out (same idempotency key).

    Example:
        ```python
        sender = WebhookSender(app.state.writer, app.state.database)
        sender.start()  # on the running event loop
        ...
        sender.wake()  # a firing stored a delivery: post it now (from any thread)
        ...
        await sender.stop()
        ```
    """

    def __init__(
        self, writer, database, timeout=5.0, max_attempts=6, first_backoff=1.0, lease_seconds=None
    ):
        self.writer = writer
        self.database = database
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.first_backoff = first_backoff
        self.lease_seconds = timeout + LEASE_MARGIN if lease_seconds is None else lease_seconds
        self._loop = None
        self._wakeup = None
        self._client = None
        self._task = None
        self._posting = set()

    def start(self):
        """Start posting, on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._wakeup.set()  # look at once: deliveries may be due since before a restart
        self._client = httpx.AsyncClient(follow_redirects=False, timeout=self.timeout)
        self._task = self._loop.create_task(self._serve(), name="callboard-webhooks")

    async def stop(self):
        """Stop looking and cancel the posts under way; close the HTTP client."""
        tasks = [task for task in (self._task, *self._posting) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task, self._loop = None, None
        self._posting.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self):
        """Look for due deliveries now rather than within a second; safe from any thread."""
        loop, wakeup = self._loop, self._wakeup
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
                loop.call_soon_threadsafe(wakeup.set)

    async def _serve(self):
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), IDLE_WAIT)
            self._wakeup.clear()
            try:
                await self._post_due()
            except OperationalError as exc:
                log.warning("webhook deliveries: database unavailable, next round retries: %s", exc)
            except Exception:
                log.exception("webhook deliveries: looking for due deliveries failed")

    async def _post_due(self):
        """Claim what is due (as much as there is room for) and post each in a task."""
        room = MAX_IN_FLIGHT - len(self._posting)
        if room <= 0:
            return
        now = time.time()
        due = await asyncio.to_thread(self._read_due, now, room)
        if not due:
            return
        claim = functools.partial(
            _claim, deliveries=due, now=now, lease_until=now + self.lease_seconds
        )
        for delivery in await self.writer.run(claim):
            task = asyncio.create_task(self._deliver(delivery))
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)

    def _read_due(self, now, limit):
        with self.database.reader() as session:
            return _due(session, now, limit)

    async def _deliver(self, delivery):
        """Post `delivery` once and store what came of it; never raises (but when cancelled)."""
        attempt = delivery.attempts + 1
        final = False
        try:
            status, error, final = await asyncio.wait_for(self._attempt(delivery), self.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            status, error = None, f"timed out after {self.timeout:g} s"
        except Exception as exc:
            status, error = None, _failure(exc)
        values = self._outcome(status, error, attempt, final)
        try:
            await self.writer.run(
                functools.partial(_record, delivery_id=delivery.id, attempt=attempt, values=values)
            )
        except Exception as exc:  # the lease runs out and another attempt follows
            log.warning("webhook delivery %s: could not store its outcome: %s", delivery.id, exc)
            return
        retry_in = values.get("next_attempt_at", math.inf) - time.time()
        if retry_in < IDLE_WAIT:  # due before the next look: look then (a hair after it is due)
            asyncio.get_running_loop().call_later(max(retry_in, 0) + 0.01, self.wake)

    async def _attempt(self, delivery):
        """`(status, error, final)` of one attempt: refused before any post (and for good) when
        the URL's host name now resolves to a link-local address."""
        if await resolves_link_local(delivery.url):
            return None, LINK_LOCAL, True
        return (*await self._post(delivery), False)

    async def _post(self, delivery):
        """`(status, error)` of one POST: error None on a 2xx, else the status and the answer's
        start."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": delivery.idempotency_key,
            "X-Callboard-Delivery": str(delivery.id),
        }
        if delivery.signature is not None:
            headers["X-Callboard-Signature"] = delivery.signature
        body = delivery.body.encode()
        async with self._client.stream(
            "POST", delivery.url, content=body, headers=headers
        ) as response:
            answer = await _start_of_body(response)  # all of a short one: the connection is reused
            if response.is_success:
                return response.status_code, None
            return response.status_code, _one_line(f"HTTP {response.status_code}: {answer}")

    def _outcome(self, status, error, attempt, final=False):
        """The columns attempt `attempt` leaves: delivered, failed (at once when `final`), or
        due again later."""
        now = time.time()
        if error is None:
            return {
                "state": "delivered",
                "delivered_at": now,
                "last_status": status,
                "last_error": None,
            }
        values = {"last_status": status, "last_error": error}
        final = final or (
            status is not None and 400 <= status < 500 and status not in RETRIED_CLIENT_ERRORS
        )
        if final or attempt >= self.max_attempts:
            return {**values, "state": "failed"}
        delay = backoff_delay(attempt, first=self.first_backoff, most=MOST_BACKOFF)
        delay = min(MOST_BACKOFF, delay * random.uniform(1.0, 1.0 + JITTER))
        return {**values, "next_attempt_at": now + delay}
