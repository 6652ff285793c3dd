"""Polls a run's control state in a background thread and reports a requested stop once."""

import math
import threading
import time

from ._api import DeliveryFailed, Rejected


class StopPoller:
    """Asks the server every `interval` seconds whether the run should stop.

    Polls keep a fixed rate (a slow answer does not push the next poll back), so a
    stop is seen at most `interval` plus one answer after it was requested.

    Args:
        api: a `ServerApi`.
        run_id: a callable returning the server's run id, or None while unknown.
        on_stop: called once, from the polling thread, with the control state
            when a stop has been requested. It returns True when it has arranged
            the acknowledgement itself (e.g. through the run's event sender, so
            it reaches the server before the run's last events); otherwise the
            poller acknowledges the stop right after.
        interval: seconds between polls.

    Example:
        ```python
        poller = StopPoller(api, lambda: run_id, lambda control: stop.set(), interval=1.0)
        poller.start()
        ```
    """

    def __init__(self, api, run_id, on_stop, interval=1.0):
        self.api = api
        self.run_id = run_id
        self.on_stop = on_stop
        self.interval = interval
        self.stop_requested = False
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
            run_id = self.run_id()
            if run_id is None:
                return False
            control = self.api.control(run_id)
            if control.get("stop_requested"):
                self.stop_requested = True
                if not self.on_stop(control):
                    self.api.acknowledge_stop(run_id)
        except (DeliveryFailed, Rejected):
            pass
        return self.stop_requested

    def _loop(self):
        next_poll = time.monotonic() + self.interval
        while not self._halt.wait(max(0.0, next_poll - time.monotonic())):
            if self.poll_once():
                return
            next_poll += self.interval
            late = time.monotonic() - next_poll
            if late > 0:  # an answer slower than the interval: skip the missed polls
                next_poll += math.ceil(late / self.interval) * self.interval
