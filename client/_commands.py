"""Commands a person sends to a running training: the push channel, the inbox it fills,
and the outcomes posted back.

A `CommandChannel` thread holds one long-poll (`GET .../commands/pending`) at a time, so
a command reaches the process the moment it is issued, and puts each command once in
a `CommandInbox`. The training thread drains the inbox between batches (see
`Run.handle_commands`); how each command ended goes back to the server through an
`OutcomePoster` thread. Nothing here ever makes the training thread wait on the network.
"""

import collections
import threading
import time
import warnings

import httpx

from callboard.backoff import backoff_delay

from . import _exit_guard
from ._api import LONG_POLL_WAIT
from ._errors import DeliveryFailed, NotFound, Rejected, Unauthorized, UnexpectedAnswer

DROPS_BEFORE_POLLING = 3  # long-polls in a row cut off (timeout, reset) before polling instead
LONG_POLL_RETRY = 60.0  # seconds of polling before the long-poll is tried again (doubling)
LONG_POLL_RETRY_MOST = 900.0
DROPPED = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)
GATEWAY_GAVE_UP = (502, 504)  # a proxy between us and the server cut the wait short
ID_WAIT_FIRST = 0.02  # seconds between looks for the run's id, doubling up to the poll interval
CLOSING_BACKOFF = 0.5  # most seconds between outcome retries while finish() waits
STALLED_AFTER = 0.25  # see client/_sender.py: when finish() stops waiting on a hung request
STALLED_FACTOR = 4


class CommandRefused(Exception):
    """Raised by an `on_command` handler to refuse its command, with the reason said.

    Example:
        ```python
        def set_lr(command):
            if command.value > 1.0:
                raise CommandRefused("a learning rate above 1.0 diverges here")
            optimizer.learning_rate = command.value

        run.on_command("set_learning_rate", set_lr)
        ```
    """


class CommandInbox:
    """Commands received and not yet applied, each id once, in the order they came.

    The channel thread `put()`s; the training thread pops from `queue` (a deque:
    appending and popping are atomic, so neither side takes a lock). `arrived` is
    set on each new command, for a thread waiting on one.
    """

    def __init__(self):
        self.queue = collections.deque()
        self.arrived = threading.Event()
        self._seen = set()

    def put(self, command, first=None):
        """Queue `command` unless its id came before; True when it is new.

        `first(command)` is called before a new command is queued.
        """
        if command.id in self._seen:
            return False
        self._seen.add(command.id)
        if first is not None:
            first(command)
        self.queue.append(command)
        self.arrived.set()
        return True


class CommandChannel:
    """Receives a run's commands from a background thread, as soon as they are issued.

    It holds one `GET .../commands/pending?after=N&wait=W` at a time (the server
    answers the moment a command is issued, or empty after `wait` seconds), and
    asks again at once. Failures are retried with `backoff_delay`. When long-polls
    keep being cut off (timeouts, resets, a proxy's 502/504: `DROPS_BEFORE_POLLING`
    in a row) it polls instead (`wait=0` every `poll_interval`), trying the
    long-poll again after `LONG_POLL_RETRY` seconds, then less and less often. A
    token the server refuses gets one warning. A 404 ends it: the run is gone, or
    the server is too old for commands (then `on_no_commands()` is called, so the
    run can poll for a plain stop as older clients did).

    Args:
        api: a `ServerApi`.
        run_id: a callable returning the server's run id, or None while unknown.
        inbox: the `CommandInbox` to fill.
        poll_interval: seconds between polls once polling.
        wait: seconds each long-poll asks the server to wait.
        on_no_commands: called once if the server has no commands API.
        on_received: called with each new command, from this thread, before it
            is queued.

    Example:
        ```python
        channel = CommandChannel(api, lambda: run.id, inbox, poll_interval=1.0)
        channel.start()
        ```
    """

    def __init__(
        self,
        api,
        run_id,
        inbox,
        poll_interval=1.0,
        wait=LONG_POLL_WAIT,
        on_no_commands=None,
        on_received=None,
    ):
        self.api = api
        self.run_id = run_id
        self.inbox = inbox
        self.poll_interval = poll_interval
        self.wait = wait
        self.on_no_commands = on_no_commands
        self.on_received = on_received
        self.after = 0  # the highest command id received
        self.polling = False
        self.ended = False
        self._failures = 0  # in a row, of any kind: the backoff
        self._drops = 0  # long-polls cut off in a row: the fallback to polling
        self._retries_failed = 0
        self._long_poll_at = 0.0  # while polling: when to try a long-poll again
        self._warned = set()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="callboard-commands", daemon=True)

    def start(self):
        self._thread.start()

    def close(self):
        """Stop asking (a long-poll in flight ends when the server answers it)."""
        self._halt.set()

    def _loop(self):
        looks = 0
        while not self._halt.is_set():
            run_id = self.run_id()
            if run_id is None:  # the sender has not registered the run yet
                looks += 1
                self._halt.wait(backoff_delay(looks, ID_WAIT_FIRST, max(self.poll_interval, 0.1)))
                continue
            try:
                pause = self.receive_once(run_id)
            except Exception as exc:  # a bug must not end remote control silently
                self._warn_once("internal", f"the channel hit an error: {exc!r}")
                pause = max(self.poll_interval, 1.0)
            if pause:
                self._halt.wait(pause)

    def receive_once(self, run_id):
        """Ask the server once; queue what it sends. Returns seconds to wait before asking again."""
        wait = self.wait if not self.polling or time.monotonic() >= self._long_poll_at else 0
        asked = time.monotonic()
        try:
            commands = self.api.pending_commands(run_id, self.after, wait)
        except NotFound:
            self._end(run_id)
            return 0
        except DeliveryFailed as exc:
            return self._failed(exc, wait)
        except Rejected as exc:  # a server that refuses this request will refuse it again
            self._warn_once("rejected", f"the server refused to send them ({exc})")
            self._failures += 1
            return backoff_delay(self._failures, most=300.0)
        self._failures = self._drops = 0
        if wait and self.polling:  # the long-poll holds again
            self.polling, self._retries_failed = False, 0
        new = [command for command in commands if self.inbox.put(command, self.on_received)]
        for command in commands:
            self.after = max(self.after, command.id)
        if self.polling or not wait:
            return self.poll_interval
        if not new and time.monotonic() - asked < min(1.0, wait / 2):
            return self.poll_interval  # answered at once with nothing new: never spin
        return 0

    def _failed(self, exc, wait):
        self._failures += 1
        if isinstance(exc, Unauthorized):
            self._warn_once(
                "refused",
                f"the server refused the token ({exc}). Training goes on: pass `token=` "
                "with the ingest role for the run's project.",
            )
        elif isinstance(exc, UnexpectedAnswer):
            self._warn_once(
                "unexpected",
                f"the server at {self.api.root} answered in a shape this client does not "
                f"know ({exc}). Training goes on.",
            )
        elif wait and (isinstance(exc.__cause__, DROPPED) or exc.status in GATEWAY_GAVE_UP):
            self._drops += 1
            if self.polling:  # the retried long-poll was cut off too: poll on, retry later
                self._retries_failed += 1
                self._poll_for(self._retries_failed)
            elif self._drops >= DROPS_BEFORE_POLLING:
                self.polling = True
                self._poll_for(0)
                return self.poll_interval  # polling is the remedy: start at once
        delay = exc.retry_after if exc.retry_after is not None else backoff_delay(self._failures)
        return max(delay, self.poll_interval) if self.polling else delay

    def _poll_for(self, retries_failed):
        delay = backoff_delay(retries_failed + 1, LONG_POLL_RETRY, LONG_POLL_RETRY_MOST)
        self._long_poll_at = time.monotonic() + delay

    def _end(self, run_id):
        self.ended = True
        self._halt.set()
        try:
            self.api.control(run_id)  # the run is there: the server predates commands
        except (DeliveryFailed, Rejected):
            return
        if self.on_no_commands is not None:
            self.on_no_commands()

    def _warn_once(self, key, why):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"Callboard cannot receive remote commands: {why}", RuntimeWarning, stacklevel=3
            )


class OutcomePoster:
    """Posts how each command ended (applied or refused) from a background thread.

    `post()` only queues. The thread posts in order and retries failures with
    `backoff_delay`, for as long as the process lives; an outcome the server
    refuses for good (the command was cancelled, or settled otherwise: 409) is
    dropped. `wait()` is `finish()`'s bounded wait for what is queued.

    Example:
        ```python
        outcomes = OutcomePoster(api)
        outcomes.post(command, "refused", "not supported by this client", epoch=3)
        ```
    """

    def __init__(self, api):
        self.api = api
        self._queue = collections.deque()
        self._lock = threading.Lock()  # idle is set only while nothing waits in the queue
        self._idle = threading.Event()
        self._idle.set()
        self._wake = threading.Event()
        self._closing = False
        self._failures = 0
        self._failed_closing = 0  # failures since wait() began
        self._unreachable = False
        self._warned = set()
        self._thread = None

    def post(self, command, state, detail=None, epoch=None, step=None):
        """Queue the outcome `state` ("applied" or "refused") of `command`."""
        with self._lock:
            self._queue.append((command, state, detail, epoch, step))
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="callboard-outcomes", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def wait(self, timeout):
        """Wait up to `timeout` seconds until every queued outcome was posted; True if so.

        It stops waiting early for a server that can't be reached, or a request
        that looks hung; the thread goes on posting in the background, and the
        process waits a short grace for it at exit.
        """
        if self._idle.is_set():
            return True
        self._closing, self._failed_closing = True, 0
        self._wake.set()  # one try at once, whatever the backoff
        deadline = time.monotonic() + timeout
        try:
            while not self._idle.wait(0.01):
                if time.monotonic() >= deadline or self._gave_up():
                    _exit_guard.linger(self)
                    return False
            return True
        finally:
            self._closing = False

    def wait_at_exit(self, grace):
        """At process exit: wait up to `grace` seconds, unless the request in flight hangs."""
        deadline = time.monotonic() + grace
        while not self._idle.wait(0.01) and time.monotonic() < deadline:
            if self._pending_longer_than(grace):
                return

    def _gave_up(self):
        limit = max(STALLED_AFTER, STALLED_FACTOR * self.api.slowest_answer)
        unreachable = self._failed_closing and self._unreachable
        return unreachable or self._pending_longer_than(limit)

    def _pending_longer_than(self, seconds):
        pending = self.api.pending_for(self._thread) if self._thread else None
        return pending is not None and pending > seconds

    def _loop(self):
        delay = None
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            delay = self._post_queued()
            with self._lock:
                if not self._queue:
                    self._idle.set()

    def _post_queued(self):
        """Post what is queued; None when done, else seconds to wait before retrying."""
        while self._queue:
            command, state, detail, epoch, step = self._queue[0]
            try:
                self.api.report_outcome(command.run_id, command.id, state, detail, epoch, step)
            except DeliveryFailed as exc:
                return self._failed(exc)
            except Rejected as exc:
                if exc.status != 409:  # 409: cancelled, or settled otherwise: nothing to say
                    self._warn_once("rejected", f"the server refused it ({exc})")
            except Exception as exc:  # a bug must not stop the outcomes behind this one
                self._warn_once("internal", f"posting it hit an error: {exc!r}")
            self._failures = 0
            self._queue.popleft()
        return None

    def _failed(self, exc):
        self._failures += 1
        self._failed_closing += self._closing
        self._unreachable = not exc.answered
        if isinstance(exc, Unauthorized):
            self._warn_once("refused", f"the server refused the token ({exc}); it retries")
        delay = exc.retry_after if exc.retry_after is not None else backoff_delay(self._failures)
        return min(delay, CLOSING_BACKOFF) if self._closing else delay

    def _warn_once(self, key, why):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"Callboard could not report a command's outcome: {why}.",
                RuntimeWarning,
                stacklevel=3,
            )
