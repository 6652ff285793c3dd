"""HTTP-level hardening: cross-site writes, Host names, slow clients (issue 11)."""

import json
import re
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from callboard.server.auth import create_token
from callboard.server.main import create_app
from callboard.server.settings import Settings
from callboard.server.store.group_commit import TURN_SIZE

from .helpers import create_run, epoch_event, post_events
from .test_stream import read_messages

LOCAL = "http://127.0.0.1:8000"
STOCK_EPOCH = {"data": json.dumps({"epoch": 0, "loss": 0.5})}


def open_app(tmp_path, **settings):
    """A TestClient on a fresh SQLite app with no token, on the loopback Host by default."""
    settings = {"allowed_hosts": None, **settings}
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'cb.db'}", **settings))
    return TestClient(app, base_url=LOCAL)


def control_state(api, run_id):
    return api.get(f"/api/v1/runs/{run_id}/control").json()["state"]


CROSS_SITE_HEADERS = [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:9999"},
    {"Referer": "http://evil.example/page"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://other.localhost:8000"},
]


@pytest.mark.parametrize("headers", CROSS_SITE_HEADERS)
def test_another_site_cannot_stop_a_run_in_open_mode(tmp_path, headers):
    with open_app(tmp_path) as api:
        run_id = create_run(api, "target")
        # What an auto-submitted <form method=post> on another site sends: an empty form.
        forged = api.post(f"/api/v1/runs/{run_id}/stop", data={}, headers=headers)
        assert forged.status_code == 403, forged.text
        assert "another site" in forged.json()["detail"]
        assert control_state(api, run_id) == "none"
        forged = api.post(f"/api/v1/runs/{run_id}/commands", json={"kind": "stop"}, headers=headers)
        assert forged.status_code == 403
        assert control_state(api, run_id) == "none"


def test_another_site_cannot_create_a_run_through_the_stock_endpoint(tmp_path):
    with open_app(tmp_path) as api:
        for headers in CROSS_SITE_HEADERS:
            forged = api.post("/publish/epoch/end/?run=x", data=STOCK_EPOCH, headers=headers)
            assert forged.status_code == 403, headers
        assert api.get("/api/v1/runs").json()["runs"] == []


def test_clients_without_browser_headers_and_own_pages_still_write(tmp_path):
    with open_app(tmp_path) as api:
        # The stock keras.callbacks.RemoteMonitor: a form post with neither header.
        stock = api.post("/publish/epoch/end/?run=stock", data=STOCK_EPOCH)
        assert stock.status_code == 200, stock.text
        run_id = create_run(api, "mine")
        # The dashboard's own fetch: same-origin; under `no-referrer` Chromium sends Origin: null.
        for headers in (
            {"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"},
            {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
            {"Origin": LOCAL},
        ):
            answer = api.post(f"/api/v1/runs/{run_id}/stop", json={}, headers=headers)
            assert answer.status_code == 200, (headers, answer.text)
        assert control_state(api, run_id) == "requested"
        # Reads are never refused for their origin.
        runs = api.get("/api/v1/runs", headers={"Sec-Fetch-Site": "cross-site"})
        assert runs.status_code == 200


def test_open_server_answers_only_loopback_host_names(tmp_path):
    with open_app(tmp_path) as api:
        for host in ("localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"):
            assert api.get("/api/v1/runs", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", ""):
            for method in ("GET", "POST"):
                refused = api.request(method, "/api/v1/runs", headers={"Host": host}, json={})
                assert refused.status_code == 400, (method, host)
                assert "CALLBOARD_ALLOWED_HOSTS" in refused.json()["detail"]
        assert api.get("/api/v1/runs").json()["runs"] == []


def test_allowed_hosts_setting_names_more_hosts(tmp_path):
    with open_app(tmp_path, allowed_hosts="board.example, .corp.example:8000") as api:
        for host in ("board.example", "corp.example", "gpu.corp.example:8000", "localhost"):
            assert api.get("/api/v1/runs", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "board.example.evil", "notcorp.example"):
            assert api.get("/api/v1/runs", headers={"Host": host}).status_code == 400, host
    with open_app(tmp_path, allowed_hosts="*") as api:
        assert api.get("/api/v1/runs", headers={"Host": "any.example"}).status_code == 200


def test_with_tokens_any_host_is_served_unless_the_setting_limits_it(tmp_path):
    with open_app(tmp_path) as api:
        with api.app.state.database.writer() as session:
            _, secret = create_token(session, "admin", "admin")
            session.commit()
        api.app.state.tokens.invalidate()
        bearer = {"Authorization": f"Bearer {secret}", "Host": "callboard.example"}
        assert api.get("/api/v1/runs", headers=bearer).status_code == 200
    with open_app(tmp_path, allowed_hosts="other.example") as api:
        bearer = {"Authorization": f"Bearer {secret}", "Host": "callboard.example"}
        assert api.get("/api/v1/runs", headers=bearer).status_code == 400


# Slow clients, against a real uvicorn server with 1 s limits.

SLOW_LIMITS = {"CALLBOARD_HEADER_TIMEOUT_SECONDS": "1", "CALLBOARD_BODY_TIMEOUT_SECONDS": "1"}


def send_and_read_to_close(port, data, deadline=15):
    """Send `data`, then read until the server closes; fails if it is still open at `deadline`."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(deadline)
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(4096):  # socket.timeout here: the server kept it open
            received += chunk
        return received


@pytest.fixture
def strict_server(server_factory):
    return server_factory(env=SLOW_LIMITS)


def test_a_slow_request_head_is_answered_408_and_closed(strict_server):
    half_head = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    for sent in (half_head, b""):
        answer = send_and_read_to_close(strict_server.port, sent)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"request head not received within 1 s" in answer


def test_a_slow_body_is_answered_408_and_closed(strict_server):
    head = (
        b"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    answer = send_and_read_to_close(strict_server.port, head + b'{"name": ')
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"request body not received within 1 s" in answer
    assert httpx.get(strict_server.root + "/api/v1/runs").json()["runs"] == []


def test_normal_requests_and_live_streams_outlast_the_limits(strict_server):
    with httpx.Client(base_url=strict_server.root, timeout=10) as client:
        run_id = create_run(client, "streamed")
        post_events(client, run_id, epoch_event(1, 0, loss=1.0))

        def post_after_the_limits():
            time.sleep(2.5)  # the stream has been open longer than both limits
            post_events(client, run_id, epoch_event(2, 1, loss=0.5))

        threading.Thread(target=post_after_the_limits).start()
        with client.stream("GET", f"/api/v1/runs/{run_id}/stream") as response:
            messages = read_messages(response, 2, timeout=15)
        seqs = [m["data"]["seq"] for m in messages if m["event"] is None]
        assert seqs == [1, 2]
        # Ordinary requests on the same connection pool still work.
        assert client.get("/api/v1/health").status_code == 200


# One request's size: a cap on metric values, and large batches stored in turns.


def wide_events(count, keys, first_seq=1):
    return [
        {
            "seq": first_seq + i,
            "kind": "batch_end",
            "step": i,
            "metrics": {f"m{k}": k for k in range(keys)},
        }
        for i in range(count)
    ]


def test_a_request_over_the_value_cap_gets_413_and_stores_nothing(settings):
    capped = settings.model_copy(update={"max_values_per_request": 100})
    with TestClient(create_app(capped)) as api:
        run_id = create_run(api, "wide")
        refused = api.post(f"/api/v1/runs/{run_id}/events", json={"events": wide_events(3, 34)})
        assert refused.status_code == 413
        assert "split the batch" in refused.json()["detail"]
        assert api.get(f"/api/v1/runs/{run_id}/events").json()["events"] == []
        at_cap = api.post(f"/api/v1/runs/{run_id}/events", json={"events": wide_events(2, 50)})
        assert at_cap.status_code == 200 and at_cap.json()["accepted"] == 2


def test_the_value_cap_takes_what_the_client_sends():
    # The client cuts its requests at 10,000 metric values.
    assert Settings().max_values_per_request >= 10_000


def test_a_batch_stored_in_turns_is_stored_whole_and_once(api):
    run_id = create_run(api, "turns")
    count = TURN_SIZE // 1000 + 2  # more values than one turn of the writer takes
    events = wide_events(count, 1000)
    first = api.post(f"/api/v1/runs/{run_id}/events", json={"events": events[::-1]})
    assert first.json() == {"accepted": count, "duplicates": 0, "status": "running"}
    again = api.post(f"/api/v1/runs/{run_id}/events", json={"events": events})
    assert again.json() == {"accepted": 0, "duplicates": count, "status": "running"}
    points = api.get(f"/api/v1/runs/{run_id}/metrics/m999").json()["points"]
    assert [p["step"] for p in points] == list(range(count))
    stored = api.get(f"/api/v1/runs/{run_id}/events", params={"limit": 100}).json()["events"]
    assert len(stored) == count


# The API docs: local assets under the strict CSP, and readers only once tokens exist.


def add_token(api, role):
    with api.app.state.database.writer() as session:
        _, secret = create_token(session, role, role)
        session.commit()
    api.app.state.tokens.invalidate()
    return {"Authorization": f"Bearer {secret}"}


def test_docs_are_open_in_open_mode_and_for_readers_once_tokens_exist(tmp_path):
    with open_app(tmp_path) as api:
        assert api.get("/openapi.json").status_code == 200
        assert api.get("/docs").status_code == 200
        read, ingest = add_token(api, "read"), add_token(api, "ingest")
        assert api.get("/openapi.json").status_code == 401
        assert api.get("/openapi.json", headers=ingest).status_code == 403
        schema = api.get("/openapi.json", headers=read)
        assert schema.status_code == 200 and "/api/v1/runs" in schema.json()["paths"]
        to_sign_in = api.get("/docs", follow_redirects=False)
        assert to_sign_in.status_code == 303
        assert to_sign_in.headers["location"] == "/login?next=%2Fdocs"
        assert api.get("/docs", headers=read).status_code == 200
        # A signed-in browser reads the schema with its session cookie.
        api.post("/login", data={"token": read["Authorization"].removeprefix("Bearer ")})
        assert api.get("/openapi.json").status_code == 200


def test_docs_page_needs_nothing_from_another_host(tmp_path):
    with open_app(tmp_path) as api:
        page = api.get("/docs")
        assert "<script>" not in page.text and "http" not in page.text
        csp = page.headers["content-security-policy"]
        assert "http" not in csp and "script-src 'self';" in csp
        referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert len(referenced) == 4
        for url in referenced:
            assert url.startswith("/"), url
            asset = api.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, url
        assert api.get("/docs/assets/index.html").status_code == 404
        assert api.get("/redoc").status_code == 404
