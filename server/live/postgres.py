"""Live fan-out across replicas: PostgreSQL LISTEN/NOTIFY around the in-process hub.

Every replica keeps one connection listening on the `callboard` notification
channel and forwards each notification (its payload is a hub channel name such
as `run:7`) to its own `LiveHub`. Publishing wakes local subscribers at once and
queues the channel names for a sender thread, which sends them with
`pg_notify` over a second connection; names queued while a send is in flight go
out together, once each. Request handlers and the event loop never wait on it.

A notification is only a wake-up: stream handlers re-read the database, so one
lost while a connection is down costs latency, never data. After reconnecting,
the listener wakes every local subscriber so they catch up at once.
"""

import contextlib
import logging
import threading

import psycopg
from sqlalchemy.engine import make_url

from callboard.backoff import backoff_delay
from callboard.server.live.hub import LiveHub

NOTIFY_CHANNEL = "callboard"
log = logging.getLogger("callboard.server.live.hub")


def libpq_url(database_url):
    """The libpq form of a (SQLAlchemy) PostgreSQL URL: no `+psycopg` driver suffix.

    Example:
        >>> libpq_url("postgresql+psycopg://u@h:5432/db")
        'postgresql://u@h:5432/db'
    """
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PostgresHub:
    """A `LiveHub` whose publishes reach every replica sharing the PostgreSQL database.

    Args:
        database_url: the server's database URL (`postgresql://...`).
        poll_seconds: how often the listener looks up from waiting (to stop, or
            to check its connection).
        check_seconds: how often an idle listening connection is checked with a query.

    Example:
        ```python
        hub = PostgresHub("postgresql://callboard@db/callboard")
        hub.start()
        hub.publish("run:7")  # wakes `run:7` subscribers on every replica
        hub.stop()
        ```
    """

    def __init__(self, database_url, poll_seconds=0.5, check_seconds=30.0):
        self.local = LiveHub()
        self.conninfo = libpq_url(database_url)
        self.poll_seconds = poll_seconds
        self.check_seconds = check_seconds
        self._pending = set()
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._sender_pid = None
        self._threads = []

    def subscribe(self, *channels):
        """Return a `Subscription` to await changes on `channels` (use as a context manager)."""
        return self.local.subscribe(*channels)

    def publish(self, *channels):
        """Wake subscribers of `channels` here now, and on the other replicas shortly."""
        self.local.publish(*channels)
        with self._wake:
            self._pending.update(channels)
            self._wake.notify()

    def publish_all(self):
        """Wake every subscriber of this replica."""
        self.local.publish_all()

    def subscriber_count(self):
        """How many subscriptions are open on this replica."""
        return self.local.subscriber_count()

    @property
    def listening(self):
        """True while the listener holds a connection with `LISTEN` in place."""
        return self._listening.is_set()

    def start(self, timeout=5.0):
        """Start the listener and sender threads; wait up to `timeout` s for `LISTEN`."""
        if self._threads:
            return
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._listen_forever, name="callboard-listen", daemon=True),
            threading.Thread(target=self._send_forever, name="callboard-notify", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if not self._listening.wait(timeout):
            log.warning("not yet listening for other replicas' updates; retrying in background")

    def stop(self, timeout=5.0):
        """Send what is queued, then stop both threads."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    # -- sending --------------------------------------------------------------------------

    def _next_batch(self):
        with self._wake:
            while not self._pending and not self._stopping.is_set():
                self._wake.wait()
            channels, self._pending = sorted(self._pending), set()
            return channels

    def _send_forever(self):
        failures, connection = 0, None  # failures in a row: the retry waits `backoff_delay`
        while True:
            channels = self._next_batch()
            if not channels:
                break  # stopping, nothing left to send
            try:
                if connection is None:
                    connection = psycopg.connect(self.conninfo, autocommit=True)
                    self._sender_pid = connection.info.backend_pid
                connection.execute(
                    "SELECT pg_notify(%s, channel) FROM unnest(%s::text[]) AS channel",
                    (NOTIFY_CHANNEL, channels),
                )
                failures = 0
            except psycopg.Error as exc:
                connection = _close(connection)
                if self._stopping.is_set():
                    break
                failures += 1
                delay = backoff_delay(failures)
                log.warning("cannot notify other replicas (%s); retrying in %.1f s", exc, delay)
                with self._wake:
                    self._pending.update(channels)
                self._stopping.wait(delay)
        _close(connection)

    # -- listening ------------------------------------------------------------------------

    def _listen_forever(self):
        failures, reconnecting = 0, False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._listening.set()
                    failures = 0
                    if reconnecting:
                        self.local.publish_all()  # catch up on what we missed while away
                    self._forward(connection)
            except psycopg.Error as exc:
                self._listening.clear()
                if self._stopping.is_set():
                    break
                reconnecting = True
                failures += 1
                delay = backoff_delay(failures)
                log.warning("lost LISTEN connection (%s); reconnecting in %.1f s", exc, delay)
                self._stopping.wait(delay)
        self._listening.clear()

    def _forward(self, connection):
        idle = 0.0
        while not self._stopping.is_set():
            received = False
            for notify in connection.notifies(timeout=self.poll_seconds):
                received = True
                # Our own publishes already woke local subscribers.
                if notify.pid != self._sender_pid and notify.payload:
                    self.local.publish(notify.payload)
            idle = 0.0 if received else idle + self.poll_seconds
            if idle >= self.check_seconds:
                connection.execute("SELECT 1")  # a dead connection raises here
                idle = 0.0


def _close(connection):
    if connection is not None:
        with contextlib.suppress(psycopg.Error):
            connection.close()
    return None
