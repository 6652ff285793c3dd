"""Polls a run's control state in a background thread and reports a requested stop once."""

import math
import threading
import time
import warnings

from ._api import DeliveryFailed, Rejected, Unauthorized, UnexpectedAnswer


def read_run_control(api, run_id):
    """Run `run_id`'s `ControlState`, or None while the id is unknown."""
    if run_id is None:
        return None
    return api.control(run_id)


class StopPoller:
    """Asks the server every `interval` seconds whether the run should stop.

    Polls keep a fixed rate (a slow answer does not push the next poll back), so a
    stop is seen at most `interval` plus one answer after it was requested. A
    server that refuses the token (401/403), or answers in a shape this client
    does not know, gets one warning naming the problem; training goes on, and
    polling too (the token may be granted the right, the server fixed).

    Args:
        api: a `ServerApi`.
        run_id: a callable returning the server's run id, or None while unknown.
        on_stop: called once, from the polling thread, with the control state
            when a stop has been requested. It returns True when it has arranged
            the acknowledgement itself (e.g. through the run's event sender, so
            it reaches the server before the run's last events); otherwise the
            poller acknowledges the stop right after.
        interval: seconds between polls.
        read_control: a callable returning the `ControlState` to act on, or
            None while there is none; by default run `run_id()`'s, from `api`.

    Example:
        ```python
        poller = StopPoller(api, lambda: run_id, lambda control: stop.set(), interval=1.0)
        poller.start()
        ```
    """

    def __init__(self, api, run_id, on_stop, interval=1.0, read_control=None):
        self.api = api
        self.run_id = run_id
        self.on_stop = on_stop
        self.interval = interval
        self.read_control = read_control or (lambda: read_run_control(self.api, self.run_id()))
        self.stop_requested = False
        self._warned = set()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="callboard-stop", daemon=True)

    def start(self):
        self._thread.start()

    def close(self):
        self._halt.set()

    def poll_once(self):
        """Ask once; return True when a stop was requested (and report it)."""
        if self.stop_requested:
            return True
        try:
            control = self.read_control()
            if control is not None and control.stop_requested:
                self.stop_requested = True
                if not self.on_stop(control):
                    self.api.acknowledge_stop(control.run_id)
        except Unauthorized as exc:
            self._warn_once(
                "refused",
                f"the server refused the token ({exc}). Training goes on, but a Stop pressed "
                "on the server will not reach it: pass `token=` with the ingest, read or "
                "control role for the run's project.",
            )
        except UnexpectedAnswer as exc:
            self._warn_once(
                "unexpected",
                f"the server at {self.api.root} answered in a shape this client does not know "
                f"({exc}). Training goes on, but a Stop pressed on the server may not reach it.",
            )
        except (DeliveryFailed, Rejected):
            pass  # unreachable or busy: the next poll asks again
        return self.stop_requested

    def _warn_once(self, key, why):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"Callboard cannot poll for a remote stop: {why}", RuntimeWarning, stacklevel=3
            )

    def _loop(self):
        next_poll = time.monotonic() + self.interval
        while not self._halt.wait(max(0.0, next_poll - time.monotonic())):
            if self.poll_once():
                return
            next_poll += self.interval
            late = time.monotonic() - next_poll
            if late > 0:  # an answer slower than the interval: skip the missed polls
                next_poll += math.ceil(late / self.interval) * self.interval
