"""Answers over 1 KB travel gzipped to clients that accept it (a chart's series shrinks to a
quarter), on a real uvicorn; short answers and server-sent events stay plain."""

import httpx

from .helpers import create_run, epoch_event, post_events


def test_a_series_is_gzipped_for_a_client_that_asks_and_plain_for_one_that_does_not(
    server_factory,
):
    server = server_factory()
    with httpx.Client(base_url=server.root, timeout=10) as client:
        run_id = create_run(client, "compressed")
        post_events(client, run_id, *[epoch_event(i + 1, i, loss=1 / (i + 1)) for i in range(300)])
        path = f"/api/v1/runs/{run_id}/metrics/loss"
        packed = client.get(path, headers={"Accept-Encoding": "gzip"})
        plain = client.get(path, headers={"Accept-Encoding": "identity"})
        assert packed.headers["content-encoding"] == "gzip"
        assert "content-encoding" not in plain.headers
        assert packed.json() == plain.json() and len(plain.json()["points"]) == 300
        assert packed.num_bytes_downloaded < len(plain.content) / 2
        short = client.get("/api/v1/health", headers={"Accept-Encoding": "gzip"})
        assert short.status_code == 200 and "content-encoding" not in short.headers


def test_live_streams_are_never_gzipped(server_factory):
    # A gzip stream is flushed in blocks: live events would wait in the compressor.
    server = server_factory()
    with httpx.Client(base_url=server.root, timeout=10) as client:
        run_id = create_run(client, "streamed")
        post_events(client, run_id, *[epoch_event(i + 1, i, loss=1.0) for i in range(50)])
        for path in (f"/api/v1/runs/{run_id}/stream", "/api/v1/stream"):
            with client.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as answer:
                assert answer.headers["content-type"].startswith("text/event-stream")
                assert "content-encoding" not in answer.headers
