"""Applying a `Run`'s commands on the training thread.

`RunCommands` owns what `Run` needs for commands: the channel and inbox that receive
them in the background, the built-in kinds (stop, stop_after_epoch, pause, resume),
the handlers given to `on_command()`, and the outcomes posted back. `Run` delegates
its command methods here (see their docstrings there).
"""

import contextlib
import threading
import warnings
from types import SimpleNamespace

from ._commands import CommandChannel, CommandInbox, CommandRefused, OutcomePoster
from ._errors import DeliveryFailed, Rejected
from ._stop_poller import StopPoller

BUILT_IN_COMMANDS = ("stop", "stop_after_epoch", "pause", "resume")
NOT_SUPPORTED = "not supported by this client"
ENDED_FIRST = "the run ended before its training handled it"
STOP_WITHOUT_COMMANDS = SimpleNamespace(id=0, kind="stop")  # from a server that predates them
PAUSED_WAKE = 1.0  # most seconds wait_while_paused() sleeps between looks at the run


class RunCommands:
    """The commands of one `run`: received in the background, applied by `apply_queued()`.

    `Run` reads `queued` and sets `handled` itself on its per-batch paths, so a call
    with nothing queued costs no more than a look at an empty deque. `sender` carries
    the stop acknowledgement with the run's events.
    """

    def __init__(self, run, sender):
        self._run = run
        self._sender = sender
        self.inbox = CommandInbox()
        self.queued = self.inbox.queue  # Run's per-batch paths look at this alone
        self.channel = CommandChannel(
            run.api,
            lambda: run.id,
            self.inbox,
            run.stop_poll_interval,
            on_no_commands=self._poll_for_stop,
            on_received=self._received,
        )
        self._outcomes = OutcomePoster(run.api)
        self._stop_poller = None  # only for a server that predates commands
        self._handlers = {}
        self.stop_requested = False
        self.paused = False
        self.handled = False  # the training has asked for commands at least once
        self._stop_acknowledged = False
        self._acknowledge_lock = threading.Lock()  # RemoteStop's thread acknowledges too
        self._stopping_after_epoch = []  # stop_after_epoch commands waiting for end_of_epoch()
        self.last_epoch = self.last_step = None  # where the training last logged
        self._applying_at = (None, None)  # where handle_commands() was told the training is

    def start(self):
        """Start receiving commands."""
        self.channel.start()

    def close(self):
        """Stop the stop poller, if a server without commands needed one."""
        if self._stop_poller is not None:
            self._stop_poller.close()

    def wait_while_paused(self):
        """See `Run.wait_while_paused()`."""
        arrived = self.inbox.arrived
        while True:
            arrived.clear()  # before looking: a command from now on wakes the wait below
            self.handled = True
            if self.queued:
                self.apply_queued()
            if not self.paused or self.stop_requested or self._run.finished:
                return
            arrived.wait(PAUSED_WAKE)

    def on_command(self, kind, fn):
        """See `Run.on_command()`."""
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
        """See `Run.end_of_epoch()`."""
        if epoch is not None:
            self.last_epoch = epoch
        if self.handled and self.queued:
            self.apply_queued()
        if self._stopping_after_epoch:
            stopping, self._stopping_after_epoch = self._stopping_after_epoch, []
            self.stop_requested, self.paused = True, False
            self._run.final_status = self._run.final_status or "stopped"
            for command in stopping:
                self._settle(command, "applied", epoch=self.last_epoch)

    def acknowledge_stop(self):
        """See `Run.acknowledge_stop()`."""
        self._run.final_status = self._run.final_status or "stopped"
        self.stop_requested = True
        with self._acknowledge_lock:
            first, self._stop_acknowledged = not self._stop_acknowledged, True
        if first:
            self._sender.acknowledge_stop()
        return True

    def apply_queued(self, epoch=None, step=None):
        """Apply the commands queued, on this thread; outcomes say `epoch` and `step`."""
        self._applying_at = (epoch, step)
        try:
            while self.queued:
                try:
                    command = self.queued.popleft()
                except IndexError:  # another thread took it
                    return
                self._apply(command)
        finally:
            self._applying_at = (None, None)

    def _apply(self, command):
        kind = command.kind
        if kind == "stop":
            self.paused = False
            self.acknowledge_stop()  # ahead of the events logged from now on, as before
            self._settle(command, "applied")
        elif kind == "stop_after_epoch":
            self._stopping_after_epoch.append(command)  # settled by end_of_epoch()
        elif kind in ("pause", "resume"):
            was_paused, self.paused = self.paused, kind == "pause"
            unchanged = "already paused" if kind == "pause" else "was not paused"
            self._settle(command, "applied", unchanged if was_paused == self.paused else None)
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
                stacklevel=5,  # the caller of Run.handle_commands()
            )
        else:
            self._settle(command, "applied", detail if isinstance(detail, str) else None)

    def _settle(self, command, state, detail=None, epoch=None):
        if command is STOP_WITHOUT_COMMANDS:
            return  # the server has no command to settle
        at_epoch, at_step = self._applying_at
        if epoch is None:
            epoch = self.last_epoch if at_epoch is None else at_epoch
        step = self.last_step if at_step is None else at_step
        self._outcomes.post(command, state, detail, epoch, step)

    def settle_left(self, status):
        """At finish: what the training never handled ends refused, but a stop taken
        otherwise (RemoteStop's acknowledgement settled it) and a stop_after_epoch
        when the run ends stopped."""
        self.channel.close()
        left, self._stopping_after_epoch = self._stopping_after_epoch, []
        while self.queued:
            with contextlib.suppress(IndexError):  # another thread may take the last
                left.append(self.queued.popleft())
        for command in left:
            if command.kind == "stop" and self._stop_acknowledged:
                continue
            if command.kind == "stop_after_epoch" and status == "stopped":
                self._settle(command, "applied", "the run ended stopped")
            else:
                self._settle(command, "refused", ENDED_FIRST)
        self._outcomes.wait(self._run.flush_timeout)

    def _received(self, command):
        """(The channel's thread, before the training can see `command`.) A stop, in a
        training that handles commands, is acknowledged on sight, as the stop poller
        did: so the acknowledgement is ahead of every event logged once it is taken."""
        if command.kind != "stop" or not self.handled:
            return
        with self._acknowledge_lock:
            first, self._stop_acknowledged = not self._stop_acknowledged, True
        if first:
            try:
                self._run.api.acknowledge_stop(command.run_id)
            except (DeliveryFailed, Rejected):
                self._sender.acknowledge_stop()  # retried, ahead of the events that follow

    def _poll_for_stop(self):
        """The server predates commands: poll its control state for a stop, as before."""
        self._stop_poller = StopPoller(
            self._run.api,
            lambda: self._run.id,
            self._stop_from_control,
            self._run.stop_poll_interval,
        )
        self._stop_poller.start()

    def _stop_from_control(self, control):
        """(The poller's thread.) Queue the stop as a `stop` command (id 0): it is
        taken, and acknowledged, when the training handles its commands."""
        self.inbox.put(STOP_WITHOUT_COMMANDS)
        return True
