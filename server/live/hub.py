"""Live fan-out: wakes stream handlers when something they watch changes.

Handlers don't receive data from the hub: they are told "channel X changed" and
read what is new from the database, so a missed wake-up can never lose a point.
"""

import asyncio
import threading
from collections import defaultdict

RUNS_CHANNEL = "runs"
# Published when a rule fires (the notifications lists wait on it) and when rules change.
ALERTS_CHANNEL = "alerts"
RULES_CHANNEL = "rules"


def run_channel(run_id):
    return f"run:{run_id}"


def commands_channel(run_id):
    """Published only when a command of run `run_id` is issued or cancelled: what the
    training's long-poll for commands waits on (an epoch post never wakes it)."""
    return f"commands:{run_id}"


class LiveHub:
    """In-process publish/subscribe of channel names; `publish` is thread-safe."""

    def __init__(self):
        self._subscribers = defaultdict(set)
        self._lock = threading.Lock()

    def subscribe(self, *channels):
        """Return a `Subscription` to await changes on `channels` (use as a context manager)."""
        return Subscription(self, channels)

    def publish(self, *channels):
        with self._lock:
            targets = [sub for channel in channels for sub in self._subscribers.get(channel, ())]
        for subscription in targets:
            subscription.notify()

    def publish_all(self):
        """Wake every subscriber, whatever it watches."""
        with self._lock:
            targets = {sub for subs in self._subscribers.values() for sub in subs}
        for subscription in targets:
            subscription.notify()

    def subscriber_count(self):
        """How many subscriptions are open (each counted once, whatever it watches)."""
        with self._lock:
            return len({sub for subs in self._subscribers.values() for sub in subs})

    def start(self):
        """Nothing to start in-process (`PostgresHub` starts its threads here)."""

    def stop(self):
        """Nothing to stop in-process."""

    def _add(self, subscription):
        with self._lock:
            for channel in subscription.channels:
                self._subscribers[channel].add(subscription)

    def _remove(self, subscription):
        with self._lock:
            for channel in subscription.channels:
                self._subscribers[channel].discard(subscription)
                if not self._subscribers[channel]:
                    del self._subscribers[channel]


class Subscription:
    def __init__(self, hub, channels):
        self.hub = hub
        self.channels = channels
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def notify(self):
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout):
        """Wait for a change or `timeout` seconds; return True on a change."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        self._event.clear()
        return True

    def __enter__(self):
        self.hub._add(self)
        return self

    def __exit__(self, *exc):
        self.hub._remove(self)
