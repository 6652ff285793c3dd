import json
import threading
import time

import httpx

from .helpers import create_run, epoch_event, post_events


def read_messages(response, count, timeout=10):
    """Parse server-sent events from a streaming response until `count` data messages."""
    messages, current = [], {}
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            break
        if not line:
            if "data" in current:
                messages.append(current)
                if sum(1 for m in messages if m.get("event") is None) >= count:
                    break
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            current[field] = value.lstrip()
    return [
        {"id": m.get("id"), "event": m.get("event"), "data": json.loads(m["data"])}
        for m in messages
    ]


def test_run_stream_is_live_and_resumes_from_last_event_id(server_factory):
    server = server_factory()
    with httpx.Client(base_url=server.root, timeout=10) as client:
        run_id = create_run(client, "streamed")
        post_events(client, run_id, epoch_event(1, 0, loss=1.0), epoch_event(2, 1, loss=0.5))

        def post_later():
            time.sleep(0.5)
            post_events(client, run_id, epoch_event(3, 2, loss="NaN"))

        threading.Thread(target=post_later).start()
        with client.stream("GET", f"/api/v1/runs/{run_id}/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            first = read_messages(response, 3)
        events = [m for m in first if m["event"] is None]
        assert [m["data"]["metrics"]["loss"] for m in events] == [1.0, 0.5, "NaN"]
        assert any(m["event"] == "run" and m["data"]["id"] == run_id for m in first)

        post_events(client, run_id, epoch_event(4, 3, loss=0.25), epoch_event(5, 4, loss=0.125))
        resume_from = events[-1]["id"]
        with client.stream(
            "GET", f"/api/v1/runs/{run_id}/stream", headers={"Last-Event-ID": resume_from}
        ) as response:
            rest = [m for m in read_messages(response, 2) if m["event"] is None]
        assert [m["data"]["seq"] for m in rest] == [4, 5]


def test_runs_stream_announces_new_runs(server_factory):
    server = server_factory()
    with httpx.Client(base_url=server.root, timeout=10) as client:
        since = time.time()

        def create_later():
            time.sleep(0.3)
            create_run(client, "announced")

        threading.Thread(target=create_later).start()
        with client.stream("GET", "/api/v1/stream", params={"after": since}) as response:
            deadline = time.monotonic() + 10
            names = []
            for line in response.iter_lines():
                if line.startswith("data:"):
                    names.append(json.loads(line[5:])["name"])
                    break
                assert time.monotonic() < deadline
        assert names == ["announced"]


def test_stream_of_missing_run_is_404(api):
    assert api.get("/api/v1/runs/4242/stream").status_code == 404


def test_a_run_stream_ends_cleanly_when_its_run_is_deleted(server_factory):
    server = server_factory()
    with httpx.Client(base_url=server.root, timeout=10) as client:
        run_id = create_run(client, "doomed")
        post_events(client, run_id, epoch_event(1, 0, loss=1.0))
        with client.stream("GET", f"/api/v1/runs/{run_id}/stream") as response:
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("event: run"))
            assert client.delete(f"/api/v1/runs/{run_id}").status_code == 200
            # The stream ends (its run is gone): no broken response, no error on the server.
            rest = list(lines)
        assert not any(line.startswith(("event:", "id:")) for line in rest), rest
        assert client.get(f"/api/v1/runs/{run_id}/stream").status_code == 404
