"""One backoff rule: the client's sender and the server's PostgreSQL fan-out wait alike."""

import threading
import time
import warnings
from types import SimpleNamespace

import pytest

from callboard.backoff import backoff_delay
from callboard.client._api import DeliveryFailed
from callboard.client._sender import EventSender

IN_A_ROW = (1, 2, 3, 4, 6, 7, 8, 5000)


def test_delays_double_from_half_a_second_up_to_thirty():
    assert [backoff_delay(n) for n in IN_A_ROW] == [0.5, 1, 2, 4, 16, 30, 30, 30]


@pytest.mark.parametrize("failures", IN_A_ROW)
def test_the_client_sender_retries_after_the_backoff_delay(failures):
    """Also after thousands of failures in a row (hours offline): 0.5 * 2**1024 overflowed."""
    sender = EventSender(
        SimpleNamespace(root="http://callboard.invalid", headers={}),
        {"uid": "u"},
        SimpleNamespace(path="spool"),
    )
    sender._failures = failures - 1
    before = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "unreachable": said once, not tested
        sender._note_failure(DeliveryFailed("server down"))
    assert before + backoff_delay(failures) <= sender._retry_at
    assert sender._retry_at <= time.monotonic() + backoff_delay(failures)


class StopAfter(threading.Event):
    """A stop event that records each wait's timeout and is set after `count` of them."""

    def __init__(self, count):
        super().__init__()
        self.count = count
        self.timeouts = []

    def wait(self, timeout=None):
        self.timeouts.append(timeout)
        if len(self.timeouts) >= self.count:
            self.set()
        return self.is_set()


def test_the_postgres_listener_reconnects_after_the_backoff_delay():
    pytest.importorskip("psycopg")
    from callboard.server.live.postgres import PostgresHub

    hub = PostgresHub("postgresql://callboard@127.0.0.1:1/unreachable")
    hub._stopping = StopAfter(5)
    hub._listen_forever()  # each connection is refused: it waits, then tries again
    assert hub._stopping.timeouts == [backoff_delay(n) for n in range(1, 6)]
