"""Delivers a run's events from a background thread: batched, retried, spooled to disk."""

import collections
import threading
import time
import warnings

from callboard.backoff import backoff_delay

from . import _exit_guard
from ._api import DeliveryFailed, Rejected, Unauthorized, UnexpectedAnswer
from ._chunks import request_chunks

CLOSING_ATTEMPTS = 5  # failed deliveries after close() before the spool is left for later
CLOSING_BACKOFF = 0.5
STALLED_AFTER = 0.25  # least seconds one request may hang before close() stops waiting for it
STALLED_FACTOR = 4  # ... or this many times the slowest recent answer to one request, if longer


class EventSender:
    """Sends events of one run without ever blocking the thread that submits them.

    `submit()` only appends to an in-memory queue. A daemon thread registers the
    run, posts queued events in batches, and while the server can't take them
    writes them to the run's spool, replaying the spool once the server answers.
    The server stores each (run, seq) once, so a retried or replayed batch is safe.
    The thread sleeps until something is due: an urgent event, the end of a
    batch window, a retry, a heartbeat; it never polls.

    Args:
        api: a `ServerApi`.
        run_spec: the run to create (must carry a `uid`).
        spool: the run's `Spool`.
        batch_size: most events per request.
        batch_window: most seconds a non-urgent event waits to share a request;
            also the least time between two spills to the spool while the
            server is unreachable.
        heartbeat_interval: seconds of silence after which a heartbeat is sent.
        max_queue: events held in memory before they are spilled to the spool.
    """

    def __init__(
        self,
        api,
        run_spec,
        spool,
        batch_size=500,
        batch_window=0.5,
        heartbeat_interval=15.0,
        max_queue=10_000,
    ):
        self.api = api
        self.run_spec = run_spec
        self.spool = spool
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.heartbeat_interval = heartbeat_interval
        self.max_queue = max_queue
        self.run_record = None
        self._queue = collections.deque()
        self._urgent = False
        self._due_at = None  # when the oldest waiting non-urgent event must leave
        self._ack_pending = False
        self._inflight = []  # the batch being delivered; whoever spools it first empties this
        self._inflight_lock = threading.Lock()  # the sender thread and close() both spool it
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle_lock = threading.Lock()  # idle is set only while nothing waits in the queue
        self._closing = False
        self._closing_attempts = 0
        self._failures = 0
        self._failure_answered = False
        self._retry_at = 0.0
        self._last_sign_of_life = 0.0  # when the server was last told the run lives
        self._warned = set()
        self._replayed_idle_spools = False
        self._thread = threading.Thread(target=self._loop, name="callboard-sender", daemon=True)

    @property
    def run_id(self):
        return self.run_record.id if self.run_record else None

    def start(self):
        self._thread.start()

    def submit(self, event, urgent=True):
        """Queue one event; never blocks on the network.

        Urgent events are sent at once; others wait up to `batch_window` seconds
        to travel together, sparing the server (and this process) a request per batch.
        """
        with self._idle_lock:
            self._queue.append(event)
            self._idle.clear()
        if len(self._queue) > self.max_queue:
            self._spool(self._drain())
        if urgent:
            self._urgent = True
            self._wake.set()
        elif self._due_at is None:
            self._due_at = time.monotonic() + self.batch_window
            self._wake.set()  # once per window: the thread shortens its sleep

    def acknowledge_stop(self):
        """Acknowledge a requested stop on the server before any event submitted later."""
        with self._idle_lock:
            self._ack_pending = True
            self._idle.clear()
        self._wake.set()

    def flush(self, timeout):
        """Wait up to `timeout` seconds until everything submitted so far was handled."""
        self._idle.clear()
        self._urgent = True
        self._wake.set()
        return self._idle.wait(timeout)

    def close(self, timeout=10.0):
        """Deliver what is left within `timeout` seconds, else spool it; never hangs.

        A server that answers with errors (5xx, 429) gets a few quick retries. One
        that can't be reached, or looks hung (a request pending far longer than
        its answers take), is not waited for: what is left stays in the spool, and
        a warning names the file and the command that sends it. A hung request
        that answers after all still delivers the spool, in the background,
        while the process lives.
        """
        self._closing = True
        self._wake.set()
        self._join(timeout, self._gave_up)
        if self._thread.is_alive():
            with self._inflight_lock:
                self._spool(list(self._inflight) + self._drain())
                self._inflight = []
            _exit_guard.linger(self)
        if self.spool:
            self._warn_left_undelivered()

    def _warn_left_undelivered(self):
        root = self.api.root
        if self.spool.held:
            where = (
                f"{len(self.spool.held):,} of them could not be written to {self.spool.path} "
                f"({self.spool.disk_error}) and are lost if this process exits before the "
                "server answers"
            )
        else:
            where = f"they are kept in {self.spool.path}"
        self._warn_once(
            "left",
            f"Callboard: the run ended with events the server at {root} has not taken; "
            f"{where}. `callboard sync --root {root}` sends what is spooled (add `--token T` if "
            "the server needs one), as does the next run that reaches this server.",
        )

    def _unreachable_at_close(self):
        return self._closing_attempts > 0 and not self._failure_answered

    def wait_at_exit(self, grace):
        """At process exit: wait up to `grace` seconds for the thread to finish, unless
        its request has been pending longer than `grace` (a hung server)."""
        self._join(grace, lambda: self._pending_longer_than(grace))

    def _join(self, timeout, give_up):
        """Wait up to `timeout` seconds for the thread to end, or until `give_up()`."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline and not give_up():
            self._thread.join(0.01)

    def _pending_longer_than(self, seconds):
        """True when the sender's current request (not its whole delivery) is that old."""
        pending = self.api.pending_for(self._thread)
        return pending is not None and pending > seconds

    def _gave_up(self):
        limit = max(STALLED_AFTER, STALLED_FACTOR * self.api.slowest_answer)
        return self._unreachable_at_close() or self._pending_longer_than(limit)

    def _spool(self, events):
        self.spool.append(events)
        if self.spool.disk_error is not None:
            self._warn_once(
                "disk",
                f"Callboard could not write its spool {self.spool.path} "
                f"({self.spool.disk_error}); undelivered events wait in memory instead "
                f"(at most {self.spool.memory_limit:,}).",
            )
        if self.spool.dropped:
            self._warn_once(
                "dropped",
                "Callboard dropped its oldest undelivered events: the server is unreachable "
                "and the spool can't be written.",
            )

    def _drain(self, limit=None):
        items = []
        while self._queue and (limit is None or len(items) < limit):
            items.append(self._queue.popleft())
        return items

    def _loop(self):
        while True:
            try:
                if self._step():
                    return
            except Exception as exc:  # a bug must not silence the run: warn, go on
                self._warn_once("internal", f"Callboard's sender hit an error: {exc!r}")
                time.sleep(self.batch_window)

    def _step(self):
        """Wait for what is due and do it; return True once closing is done."""
        self._wake.wait(timeout=self._seconds_to_next_action())
        self._wake.clear()
        if self._queue_due():
            self._send_queue()
        if (self._ack_pending or self.spool) and not self._in_backoff():
            self._deliver([])  # acknowledge a stop, replay the spool
        if self._closing and self._done_closing():
            return True
        if self._idle_too_long():
            self._heartbeat()
        with self._idle_lock:  # else an event submitted after the check would count as handled
            if not self._queue and not self._ack_pending:
                self._idle.set()
        return False

    def _queue_due(self):
        if not self._queue:
            return False
        if self._urgent or self._closing or len(self._queue) >= self.batch_size:
            return True
        due = self._due_at
        return due is None or time.monotonic() >= due

    def _send_queue(self):
        self._urgent = False
        self._due_at = None  # before draining: an event queued from now on sets a new one
        while self._queue:
            if self._in_backoff():
                self._spill()  # one write per window, not one per event
                return
            self._deliver(self._drain(self.batch_size))

    def _spill(self):
        batch = self._drain()
        self._inflight = batch
        self._spool_inflight(batch)

    def _spool_inflight(self, batch):
        """Spool `batch` unless close() already took it (it spools what is in flight)."""
        with self._inflight_lock:
            if self._inflight is batch:
                self._spool(batch)
            self._inflight = []

    def _done_closing(self):
        if self._queue:
            return False
        if self._closing_attempts >= CLOSING_ATTEMPTS or self._unreachable_at_close():
            return True  # the spool waits for `callboard sync` or the next client
        return not self.spool and not self._ack_pending

    def _seconds_to_next_action(self):
        now = time.monotonic()
        deadlines = []
        if self._queue:
            urgent = self._urgent or self._closing or self._due_at is None
            deadlines.append(now if urgent else self._due_at)
        if self._ack_pending or self.spool:
            deadlines.append(self._retry_at if self._failures else now)
        if self.run_record is not None:
            deadlines.append(self._last_sign_of_life + self.heartbeat_interval)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _in_backoff(self):
        if self._closing and not self._closing_attempts:
            return False  # close() gets one immediate try, whatever the backoff
        return self._failures > 0 and time.monotonic() < self._retry_at

    def _idle_too_long(self):
        return (
            self.run_record is not None
            and time.monotonic() - self._last_sign_of_life >= self.heartbeat_interval
        )

    def _deliver(self, batch):
        self._inflight = batch
        try:
            self._register()
            if self._ack_pending:
                self._acknowledge()
            if self.spool:
                self._replay_spool()
            self._post(batch)
        except Exception as exc:
            self._spool_inflight(batch)
            if not isinstance(exc, DeliveryFailed):
                raise  # kept for the next try; the loop warns
            self._note_failure(exc)
        else:
            self._failures = 0
            self._last_sign_of_life = time.monotonic()
            self._replay_idle_spools_once()
        finally:
            self._inflight = []

    def _acknowledge(self):
        try:
            self.api.acknowledge_stop(self.run_id)
        except Rejected as exc:
            self._warn_once("ack", f"Callboard did not take the stop acknowledgement: {exc}")
        self._ack_pending = False

    def _replay_idle_spools_once(self):
        if self._replayed_idle_spools:
            return
        self._replayed_idle_spools = True
        from .sync import replay_idle_spools

        threading.Thread(  # only this server's files: our token goes to no other
            target=replay_idle_spools,
            args=(self.spool.path.parent, self.api),
            kwargs={"skip": self.spool.path},
            name="callboard-replay",
            daemon=True,
        ).start()

    def _register(self):
        if self.run_record is None:
            try:
                self.run_record = self.api.create_run(self.run_spec)
            except Rejected as exc:
                raise DeliveryFailed(f"run was refused: {exc}") from exc

    def _replay_spool(self):
        events = self.spool.read()
        delivered = 0
        try:
            for chunk in request_chunks(events, max_events=self.batch_size):
                self._post(chunk)
                delivered += len(chunk)
        finally:
            self.spool.discard(delivered)

    def _post(self, events):
        if events:
            self.api.send_events(self.run_id, events, self._refused)

    def _refused(self, event, exc):
        self._warn_once(event.get("kind"), f"Callboard dropped an event: {exc}")

    def _heartbeat(self):
        try:
            self.api.heartbeat(self.run_id)
        except (DeliveryFailed, Rejected):
            pass  # the next one is due a whole interval later all the same, not at once
        finally:
            self._last_sign_of_life = time.monotonic()

    def _note_failure(self, exc):
        self._failures += 1
        self._failure_answered = exc.answered
        delay = exc.retry_after
        if delay is None:
            delay = backoff_delay(self._failures)
        if self._closing:
            self._closing_attempts += 1
            delay = min(delay, CLOSING_BACKOFF)
        self._retry_at = time.monotonic() + delay
        if isinstance(exc, UnexpectedAnswer):  # warned at close too: nothing else says why
            self._warn_once(
                "unexpected",
                f"Callboard server at {self.api.root} answered in a shape this client does not "
                f"know ({exc}): is it a Callboard server, and this client as new as it? "
                f"The run's events wait in {self.spool.path}.",
            )
            return
        if self._closing:
            return  # close() says where the events wait
        if isinstance(exc, Unauthorized):
            refusal = (
                "refused this run's token"
                if "Authorization" in self.api.headers
                else "needs a token and this run sent none (pass token=)"
            )
            self._warn_once(
                "unauthorized",
                f"Callboard server at {self.api.root} {refusal} ({exc}); "
                f"events are spooled to {self.spool.path}: `callboard sync --root "
                f"{self.api.root} --token T` sends them with a token it accepts.",
            )
            return
        self._warn_once(
            "unreachable",
            f"Callboard server at {self.api.root} is unreachable ({exc}); "
            f"events are spooled to {self.spool.path} and sent when it answers.",
        )

    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
