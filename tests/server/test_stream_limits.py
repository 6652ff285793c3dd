"""Live streams are bounded: a cap answered with 503, and nothing left behind once they close."""

import contextlib
import time

import httpx
import pytest

from callboard.server.api.routes.stream import BATCH, stream_slots

from .helpers import SERVERS_OWN, create_run, epoch_event, post_events, serving


@pytest.fixture
def served(settings):
    """The app served by uvicorn in this process (SQLite and PostgreSQL): `(app, root)`."""
    with serving(settings.model_copy(update={"max_streams": 2})) as app_and_root:
        yield app_and_root


def wait_for(condition, what, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_stream_cap_answers_503_and_closed_streams_leave_nothing_behind(served):
    app, root = served
    with httpx.Client(base_url=root, timeout=10) as client:
        run_id = create_run(client, "watched")
        for _round in range(2):
            with contextlib.ExitStack() as streams:
                open_lines = []  # each stream's line iterator, kept: dropping one closes it
                for path in (f"/api/v1/runs/{run_id}/stream", "/api/v1/stream"):
                    response = streams.enter_context(client.stream("GET", path))
                    assert response.status_code == 200
                    open_lines.append(response.iter_lines())
                    assert next(open_lines[-1]) == "retry: 1000"
                wait_for(
                    lambda: app.state.hub.subscriber_count() == SERVERS_OWN + 2, "not subscribed"
                )
                refused = client.get("/api/v1/stream")
                assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
                assert "2 live streams" in refused.json()["detail"]
            wait_for(lambda: app.state.hub.subscriber_count() == SERVERS_OWN, "subscribers left")
            wait_for(lambda: stream_slots(app).open == 0, "stream slots left taken")


def test_a_long_run_streams_in_bounded_batches(served):
    _app, root = served
    with httpx.Client(base_url=root, timeout=10) as client:
        run_id = create_run(client, "long")
        total = BATCH * 2 + 5
        events = [epoch_event(seq, seq - 1, loss=1.0 / seq) for seq in range(1, total + 1)]
        post_events(client, run_id, *events)
        seqs = []
        with client.stream("GET", f"/api/v1/runs/{run_id}/stream") as response:
            for line in response.iter_lines():
                if line.startswith("id:"):
                    seqs.append(int(line[3:]))
                if len(seqs) == total:
                    break
        assert len(set(seqs)) == total and seqs == sorted(seqs)
