"""A Callboard run for any training loop: metrics, events and remote commands."""

import itertools
import platform
import socket
import sys
import threading
import time
import uuid
import warnings

from . import _exit_guard
from ._api import DEFAULT_ROOT, ServerApi
from ._command_handling import RunCommands
from ._sender import EventSender
from ._spool import Spool, default_spool_dir
from ._system_metrics import SystemMetricsSampler
from ._values import check_run_names, clean_metrics, plain_json

FRAMEWORKS = ("keras", "tensorflow", "jax", "torch", "numpy")


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
        heartbeat_interval: seconds of silence after which the run says it lives.
        system_metrics_interval: seconds between samples of the machine (CPU,
            memory, NVIDIA GPUs), stored as metrics `system/...`, from `start()`
            to `finish()`; 0 turns sampling off.

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
        system_metrics_interval=10.0,
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
        self.commands = RunCommands(self, self._sender)  # receives and applies them
        self._dropped_metric_names = set()
        self._system_metrics = (
            SystemMetricsSampler(self._log_system_metrics, system_metrics_interval)
            if system_metrics_interval
            else None
        )
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
            self.commands.start()
            self.log_event("train_begin", data=dict(params or {}))
            if self._system_metrics:
                self._system_metrics.start()
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
            self.commands.last_epoch = epoch
        if step is not None:
            self.commands.last_step = step
        metrics, dropped = clean_metrics(metrics)
        if dropped:
            self._warn_dropped(dropped)
        self._submit(
            kind, epoch, step, metrics, self._plain_json(data or {}, f"{kind} data"), urgent
        )
        if kind == "epoch_end":
            self.end_of_epoch(epoch)

    def _submit(self, kind, epoch, step, metrics, data, urgent):
        self._sender.submit(
            {
                "seq": next(self._seq),
                "kind": kind,
                "time": time.time(),
                "epoch": epoch,
                "step": step,
                "metrics": metrics,
                "data": data,
            },
            urgent=urgent,
        )

    def _log_system_metrics(self, metrics, number):
        """One sample of the machine, at step `number` of its own series (the sampler's
        thread): not the training's step, so the commands' bookkeeping is left alone."""
        if not self._finished:
            self._submit("metrics", None, number, metrics, {}, urgent=False)

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
        commands = self.commands  # inlined, not delegated: this runs every batch
        commands.handled = True
        if commands.queued:
            commands.apply_queued(epoch, step)

    @property
    def should_stop(self):
        """True once a stop was requested on the server (a `stop` command, or
        `stop_after_epoch` at the end of an epoch); applies received commands first."""
        commands = self.commands
        commands.handled = True
        if commands.queued:
            commands.apply_queued()
        return commands.stop_requested

    @property
    def paused(self):
        """True between a `pause` command and its `resume` (or a stop); applies received
        commands first."""
        commands = self.commands
        commands.handled = True
        if commands.queued:
            commands.apply_queued()
        return commands.paused

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
        self.commands.wait_while_paused()

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
        return self.commands.on_command(kind, fn)

    def end_of_epoch(self, epoch=None):
        """Say epoch `epoch` is done: a `stop_after_epoch` received turns `should_stop` True.

        `log_event("epoch_end", epoch=...)` (and `log(..., epoch=...)`) call it. It
        applies the commands received first, once the training has shown it
        handles commands (it called `handle_commands()` or read `should_stop` or
        `paused` before): a loop that never does applies none, so none is said
        to be applied (a pause, a stop) while the training goes on.
        """
        self.commands.end_of_epoch(epoch)

    def acknowledge_stop(self):
        """Take a stop requested on the server: the run will end `stopped`.

        The acknowledgement travels with the run's events, ahead of any event
        logged after this call (so the server sees it before `train_end`); it is
        sent once, however often this is called. Returns True.
        """
        return self.commands.acknowledge_stop()

    def flush(self, timeout=None):
        """Wait until events so far are delivered or spooled; return True if in time."""
        return self._sender.flush(self.flush_timeout if timeout is None else timeout)

    def finish(self, status=None, error=None):
        """Close the run with `status` ("finished", "stopped" or "failed")."""
        if self._finished:
            return
        self._finished = True
        _exit_guard.release(self)
        if self._system_metrics:
            self._system_metrics.stop()
        status = status or self.final_status or "finished"
        self.commands.settle_left(status)
        data = {"status": status}
        if error:
            data["error"] = str(error)
        self.log_event("train_end", data=data)
        self.commands.close()
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
