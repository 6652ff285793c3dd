"""A Callboard run for any training loop: metrics, events and remote commands."""

import contextlib
import itertools
import platform
import socket
import sys
import threading
import time
import uuid
import warnings
from types import SimpleNamespace

from . import _exit_guard
from ._api import DEFAULT_ROOT, ServerApi
from ._commands import CommandChannel, CommandInbox, CommandRefused, OutcomePoster
from ._errors import DeliveryFailed, Rejected
from ._sender import EventSender
from ._spool import Spool, default_spool_dir
from ._stop_poller import StopPoller
from ._values import check_run_names, clean_metrics, plain_json

FRAMEWORKS = ("keras", "tensorflow", "jax", "torch", "numpy")
BUILT_IN_COMMANDS = ("stop", "stop_after_epoch", "pause", "resume")
NOT_SUPPORTED = "not supported by this client"
ENDED_FIRST = "the run ended before its training handled it"
STOP_WITHOUT_COMMANDS = SimpleNamespace(id=0, kind="stop")  # from a server that predates them
PAUSED_WAKE = 1.0  # most seconds wait_while_paused() sleeps between looks at the run


def framework_versions():
    """Versions of Python and of the ML frameworks this process has already imported."""
    versions = {"python": platform.python_version()}
    for name in FRAMEWORKS:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            versions[name] = str(module.__version__)
    from callboard import __version__

    versions["callboard"] = __version__
    return versions


def _shorten(name, limit=80):
    """`repr(name)`, cut to about `limit` characters for a warning."""
    text = repr(name)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(name)} characters)"


class Run:
    """One training run on a Callboard server, usable from any training loop.

    Nothing here blocks on the network: events go to a background sender, and
    to an on-disk spool while the server can't be reached; commands sent from the
    server (stop, pause, your own kinds) arrive on a background thread and are
    applied on the thread that calls `handle_commands()` (or reads `should_stop`,
    `paused`), their outcomes posted back in the background.

    Args:
        root: server root URL.
        name: run name (1 to 200 characters, no control character; else
            `ValueError`); the server picks one when omitted.
        project: project the run belongs to (the same rule as `name`).
        config: hyper-parameters, a dict; NumPy and tensor values are sent as
            numbers or lists, what JSON cannot hold as text (with a warning).
        tags: list of strings.
        token: API token (`Authorization: Bearer`).
        headers: extra HTTP headers.
        uid: stable client-side id; pass the same uid to continue a run.
        client: an `httpx.Client` to send through (for tests).
        spool_dir: where undelivered events are kept.
        stop_poll_interval: seconds between polls for commands, when the
            server can't hold a waiting request open (e.g. a proxy cuts it).
        flush_timeout: most seconds `finish()` waits for delivery.

    Example:
        ```python
        with Run(root="http://127.0.0.1:8000", name="baseline", config={"lr": 1e-3}) as run:
            for epoch in range(10):
                loss = train_one_epoch()
                run.log({"loss": loss}, epoch=epoch)  # ends the epoch: see end_of_epoch()
                if run.should_stop:
                    break
        ```

        Between batches, honour every command:
        ```python
        run.on_command("set_learning_rate", lambda command: set_lr(optimizer, command.value))
        for step, batch in enumerate(batches):
            run.wait_while_paused()  # applies what came in; waits while paused
            if run.should_stop:
                break
            train_step(batch)
        ```
    """

    def __init__(
        self,
        root=DEFAULT_ROOT,
        name=None,
        project="default",
        config=None,
        tags=None,
        token=None,
        headers=None,
        uid=None,
        client=None,
        spool_dir=None,
        stop_poll_interval=1.0,
        flush_timeout=10.0,
        heartbeat_interval=15.0,
    ):
        check_run_names(name, project)
        self.uid = uid or uuid.uuid4().hex
        self.api = ServerApi(root, headers=headers, token=token, client=client)
        self._sent_as_changed = set()
        self._dropped_lock = threading.Lock()
        self.spec = {
            "uid": self.uid,
            "name": name,
            "project": project,
            "config": self._plain_json(config or {}, "config"),
            "tags": [str(tag) for tag in tags or []],
            "host": socket.gethostname(),
            "versions": framework_versions(),
        }
        self.flush_timeout = flush_timeout
        self.stop_poll_interval = stop_poll_interval
        self.final_status = None
        spool = Spool(
            spool_dir or default_spool_dir(), self.uid, {"root": self.api.root, "run": self.spec}
        )
        self._sender = EventSender(
            self.api, self.spec, spool, heartbeat_interval=heartbeat_interval
        )
        # Sequence numbers start at this session's start time in microseconds, so a
        # process that continues a run (same uid) never reuses a seq of an earlier one.
        self._seq = itertools.count(time.time_ns() // 1000)
        self._stop_poller = None  # only for a server that predates commands
        self._inbox = CommandInbox()
        self._queued = self._inbox.queue  # handle_commands() looks at this alone
        self._channel = CommandChannel(
            self.api,
            lambda: self.id,
            self._inbox,
            stop_poll_interval,
            on_no_commands=self._poll_for_stop,
            on_received=self._received,
        )
        self._outcomes = OutcomePoster(self.api)
        self._handlers = {}
        self._stop_requested = False
        self._stop_acknowledged = False
        self._acknowledge_lock = threading.Lock()  # RemoteStop's thread acknowledges too
        self._paused = False
        self._handles_commands = False  # the training has asked for commands at least once
        self._stopping_after_epoch = []  # stop_after_epoch commands waiting for end_of_epoch()
        self._last_epoch = self._last_step = None
        self._applying_at = (None, None)  # where handle_commands() was told the training is
        self._dropped_metric_names = set()
        self._started = False
        self._finished = False

    @property
    def finished(self):
        """True once `finish()` was called."""
        return self._finished

    @property
    def id(self):
        """The server's id of this run, once the server has answered (else None)."""
        return self._sender.run_id

    def start(self, params=None):
        """Open the run: start the sender and record `train_begin`."""
        if not self._started:
            self._started = True
            _exit_guard.guard(self)
            self._sender.start()
            self._channel.start()
            self.log_event("train_begin", data=dict(params or {}))
        return self

    def log(self, metrics, step=None, epoch=None):
        """Record metric values (numbers; NaN and infinities allowed) at a step or epoch.

        A name longer than 200 characters or holding a control character (a
        newline, a tab) is dropped, with a warning; the other metrics are kept.
        """
        kind = "epoch_end" if step is None and epoch is not None else "metrics"
        self.log_event(
            kind,
            epoch=epoch,
            step=step,
            metrics=metrics,
            urgent=kind == "epoch_end",
        )

    def log_event(self, kind, data=None, epoch=None, step=None, metrics=None, urgent=True):
        """Record one event of `kind` (e.g. "checkpoint_saved") with JSON `data`.

        Non-urgent events (per-batch metrics) may wait a moment to share a request.
        A metric the server would refuse (a bad name, a value that is not a number)
        is dropped alone, with one warning per name. The first event starts the
        run if `start()` was not called.
        """
        if not self._started:
            self.start()
        if epoch is not None:
            self._last_epoch = epoch
        if step is not None:
            self._last_step = step
        metrics, dropped = clean_metrics(metrics)
        if dropped:
            self._warn_dropped(dropped)
        self._sender.submit(
            {
                "seq": next(self._seq),
                "kind": kind,
                "time": time.time(),
                "epoch": epoch,
                "step": step,
                "metrics": metrics,
                "data": self._plain_json(data or {}, f"{kind} data"),
            },
            urgent=urgent,
        )
        if kind == "epoch_end":
            self.end_of_epoch(epoch)

    def _plain_json(self, value, where):
        """`value` as JSON the server stores, warning once about each change it needed."""
        notes = []
        value = plain_json(value, notes, where)
        with self._dropped_lock:
            new = [note for note in notes if note not in self._sent_as_changed]
            self._sent_as_changed.update(new)
        if new:
            warnings.warn(
                f"Callboard could not send everything as given: {'; '.join(new)}.",
                RuntimeWarning,
                stacklevel=4,
            )
        return value

    def _warn_dropped(self, dropped):
        with self._dropped_lock:
            known = self._dropped_metric_names
            new = {name: why for name, why in dropped.items() if name not in known}
            known.update(new)
        if new:
            names = "; ".join(f"{_shorten(name)} {why}" for name, why in new.items())
            warnings.warn(
                f"Callboard dropped metrics the server would refuse ({names}); "
                "the run's other metrics are kept.",
                RuntimeWarning,
                stacklevel=4,
            )

    def handle_commands(self, epoch=None, step=None):
        """Apply, on this thread, the commands received since the last call.

        Call it between batches; it costs next to nothing when no command came.
        `should_stop`, `paused` and `wait_while_paused()` call it first, so a loop
        reading them need not. Built in: `stop` (`should_stop` turns True),
        `stop_after_epoch` (at the next `end_of_epoch()`), `pause` and `resume`
        (`paused`); other kinds go to the handler given to `on_command()`, or are
        refused as "not supported by this client". How each ended is posted in
        the background, with where the training was: `epoch` and `step` when
        given (a callback between batches knows them), else the last logged.
        """
        self._handles_commands = True
        if self._queued:
            self._apply_queued(epoch, step)

    @property
    def should_stop(self):
        """True once a stop was requested on the server (a `stop` command, or
        `stop_after_epoch` at the end of an epoch); applies received commands first."""
        self._handles_commands = True
        if self._queued:
            self._apply_queued()
        return self._stop_requested

    @property
    def paused(self):
        """True between a `pause` command and its `resume` (or a stop); applies received
        commands first."""
        self._handles_commands = True
        if self._queued:
            self._apply_queued()
        return self._paused

    def wait_while_paused(self):
        """Block the calling thread while the run is paused; return on resume or stop.

        Commands that arrive meanwhile are applied at once (handlers run on this
        thread). Heartbeats go on in the background, so a paused run is not `lost`.

        Example:
            ```python
            for batch in batches:
                run.wait_while_paused()
                if run.should_stop:
                    break
                train_step(batch)
            ```
        """
        arrived = self._inbox.arrived
        while True:
            arrived.clear()  # before looking: a command from now on wakes the wait below
            self.handle_commands()
            if not self._paused or self._stop_requested or self._finished:
                return
            arrived.wait(PAUSED_WAKE)

    def on_command(self, kind, fn):
        """Let `fn(command)` apply commands of `kind` (e.g. "checkpoint", "set_learning_rate",
        or a kind of your own); returns `fn`.

        `fn` runs on the thread that calls `handle_commands()` (or reads
        `should_stop`, `paused`, or waits in `wait_while_paused()`), with the
        `CommandRecord` (`command.value`, `command.reason`). Returning applies the
        command, a returned string being its detail; raising
        `CommandRefused("why")` refuses it with that reason; any other exception
        refuses it with the exception's repr. The built-in kinds (stop,
        stop_after_epoch, pause, resume) can't be taken over: `ValueError`.

        Example:
            ```python
            def save_now(command):
                path = save_checkpoint(model)
                return f"saved to {path}"

            run.on_command("checkpoint", save_now)
            ```
        """
        if kind in BUILT_IN_COMMANDS:
            raise ValueError(
                f"{kind!r} commands are built in: read run.should_stop and run.paused, "
                "or call run.wait_while_paused()"
            )
        if not callable(fn):
            raise TypeError(f"on_command needs a callable, got {fn!r:.80}")
        self._handlers[kind] = fn
        return fn

    def end_of_epoch(self, epoch=None):
        """Say epoch `epoch` is done: a `stop_after_epoch` received turns `should_stop` True.

        `log_event("epoch_end", epoch=...)` (and `log(..., epoch=...)`) call it. It
        applies the commands received first, once the training has shown it
        handles commands (it called `handle_commands()` or read `should_stop` or
        `paused` before): a loop that never does applies none, so none is said
        to be applied (a pause, a stop) while the training goes on.
        """
        if epoch is not None:
            self._last_epoch = epoch
        if self._handles_commands and self._queued:
            self._apply_queued()
        if self._stopping_after_epoch:
            stopping, self._stopping_after_epoch = self._stopping_after_epoch, []
            self._stop_requested, self._paused = True, False
            self.final_status = self.final_status or "stopped"
            for command in stopping:
                self._settle(command, "applied", epoch=self._last_epoch)

    def _apply_queued(self, epoch=None, step=None):
        self._applying_at = (epoch, step)
        try:
            while self._queued:
                try:
                    command = self._queued.popleft()
                except IndexError:  # another thread took it
                    return
                self._apply(command)
        finally:
            self._applying_at = (None, None)

    def _apply(self, command):
        kind = command.kind
        if kind == "stop":
            self._paused = False
            self.acknowledge_stop()  # ahead of the events logged from now on, as before
            self._settle(command, "applied")
        elif kind == "stop_after_epoch":
            self._stopping_after_epoch.append(command)  # settled by end_of_epoch()
        elif kind in ("pause", "resume"):
            was_paused, self._paused = self._paused, kind == "pause"
            unchanged = "already paused" if kind == "pause" else "was not paused"
            self._settle(command, "applied", unchanged if was_paused == self._paused else None)
        elif kind in self._handlers:
            self._run_handler(self._handlers[kind], command)
        else:
            self._settle(command, "refused", NOT_SUPPORTED)

    def _run_handler(self, handler, command):
        try:
            detail = handler(command)
        except CommandRefused as exc:
            self._settle(command, "refused", str(exc) or "refused by the training")
        except BaseException as exc:
            self._settle(command, "refused", repr(exc))
            if not isinstance(exc, Exception):
                raise  # Ctrl-C in a handler still stops the training
            warnings.warn(
                f"Callboard: the handler of {command.kind!r} commands raised {exc!r}; "
                "the command is refused (raise CommandRefused to refuse one on purpose).",
                RuntimeWarning,
                stacklevel=5,
            )
        else:
            self._settle(command, "applied", detail if isinstance(detail, str) else None)

    def _settle(self, command, state, detail=None, epoch=None):
        if command is STOP_WITHOUT_COMMANDS:
            return  # the server has no command to settle
        at_epoch, at_step = self._applying_at
        if epoch is None:
            epoch = self._last_epoch if at_epoch is None else at_epoch
        step = self._last_step if at_step is None else at_step
        self._outcomes.post(command, state, detail, epoch, step)

    def _settle_left_commands(self, status):
        """At finish: what the training never handled ends refused, but a stop taken
        otherwise (RemoteStop's acknowledgement settled it) and a stop_after_epoch
        when the run ends stopped."""
        self._channel.close()
        left, self._stopping_after_epoch = self._stopping_after_epoch, []
        while self._queued:
            with contextlib.suppress(IndexError):  # another thread may take the last
                left.append(self._queued.popleft())
        for command in left:
            if command.kind == "stop" and self._stop_acknowledged:
                continue
            if command.kind == "stop_after_epoch" and status == "stopped":
                self._settle(command, "applied", "the run ended stopped")
            else:
                self._settle(command, "refused", ENDED_FIRST)
        self._outcomes.wait(self.flush_timeout)

    def _received(self, command):
        """(The channel's thread, before the training can see `command`.) A stop, in a
        training that handles commands, is acknowledged on sight, as the stop poller
        did: so the acknowledgement is ahead of every event logged once it is taken."""
        if command.kind != "stop" or not self._handles_commands:
            return
        with self._acknowledge_lock:
            first, self._stop_acknowledged = not self._stop_acknowledged, True
        if first:
            try:
                self.api.acknowledge_stop(command.run_id)
            except (DeliveryFailed, Rejected):
                self._sender.acknowledge_stop()  # retried, ahead of the events that follow

    def _poll_for_stop(self):
        """The server predates commands: poll its control state for a stop, as before."""
        self._stop_poller = StopPoller(
            self.api, lambda: self.id, self._stop_from_control, self.stop_poll_interval
        )
        self._stop_poller.start()

    def _stop_from_control(self, control):
        """(The poller's thread.) Queue the stop as a `stop` command (id 0): it is
        taken, and acknowledged, when the training handles its commands."""
        self._inbox.put(STOP_WITHOUT_COMMANDS)
        return True

    def acknowledge_stop(self):
        """Take a stop requested on the server: the run will end `stopped`.

        The acknowledgement travels with the run's events, ahead of any event
        logged after this call (so the server sees it before `train_end`); it is
        sent once, however often this is called. Returns True.
        """
        self.final_status = self.final_status or "stopped"
        self._stop_requested = True
        with self._acknowledge_lock:
            first, self._stop_acknowledged = not self._stop_acknowledged, True
        if first:
            self._sender.acknowledge_stop()
        return True

    def flush(self, timeout=None):
        """Wait until events so far are delivered or spooled; return True if in time."""
        return self._sender.flush(self.flush_timeout if timeout is None else timeout)

    def finish(self, status=None, error=None):
        """Close the run with `status` ("finished", "stopped" or "failed")."""
        if self._finished:
            return
        self._finished = True
        _exit_guard.release(self)
        status = status or self.final_status or "finished"
        self._settle_left_commands(status)
        data = {"status": status}
        if error:
            data["error"] = str(error)
        self.log_event("train_end", data=data)
        if self._stop_poller is not None:
            self._stop_poller.close()
        self._sender.close(self.flush_timeout)

    def end_with(self, exc):
        """Close the run for exception `exc` that ended training.

        Ctrl-C (`KeyboardInterrupt`) ends it `stopped`; any other exception `failed`.
        """
        status, error = _exit_guard.ending_of(type(exc), exc)
        self.finish(status, error=error)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.finish()
        else:
            self.end_with(exc)
        return False
