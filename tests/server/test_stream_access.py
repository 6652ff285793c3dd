"""Open live streams end within seconds once their token is revoked or their session ends."""

import time

import httpx
import pytest
import sqlalchemy

from callboard.server.store.models import Event

from .test_auth import make_token, session_of

DEADLINE_SECONDS = 15


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured_server(server_factory, tmp_path):
    """A real server with an admin and a reader token, short keepalives and short sessions."""

    def make(session_seconds=86_400):
        url = f"sqlite:///{tmp_path / f'stream{time.monotonic_ns()}.db'}"
        tokens = {role: make_token(url, f"{role}-token", role) for role in ("admin", "read")}
        env = {
            "CALLBOARD_STREAM_KEEPALIVE_SECONDS": "0.5",
            "CALLBOARD_SESSION_DAYS": str(session_seconds / 86_400),
        }
        server = server_factory(url, env=env)
        run = httpx.post(
            f"{server.root}/api/v1/runs", json={"name": "watched"}, headers=bearer(tokens["admin"])
        )
        return server, tokens, run.json()["id"]

    return make


def token_id(root, admin, name):
    listed = httpx.get(f"{root}/api/v1/tokens", headers=bearer(admin)).json()["tokens"]
    return next(token["id"] for token in listed if token["name"] == name)


def assert_stream_ends(lines, deadline):
    """Read an open stream's lines until the server ends it; fail if it still delivers at
    `deadline` (its keepalives come every 0.5 s)."""
    for _line in lines:
        assert time.monotonic() < deadline, "the stream kept delivering"


def test_bearer_stream_ends_when_its_token_is_revoked(secured_server):
    server, tokens, run_id = secured_server()
    with (
        httpx.Client(base_url=server.root, timeout=5) as client,
        client.stream(
            "GET", f"/api/v1/runs/{run_id}/stream", headers=bearer(tokens["read"])
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == "retry: 1000"
        reader = token_id(server.root, tokens["admin"], "read-token")
        revoked = client.delete(f"/api/v1/tokens/{reader}", headers=bearer(tokens["admin"]))
        assert revoked.status_code == 200
        assert_stream_ends(lines, time.monotonic() + DEADLINE_SECONDS)
    again = httpx.get(f"{server.root}/api/v1/runs/{run_id}/stream", headers=bearer(tokens["read"]))
    assert again.status_code == 401


def test_session_stream_ends_when_its_token_is_revoked(secured_server):
    server, tokens, _run_id = secured_server()
    cookies = {"callboard_session": session_of(server.root, tokens["read"])}
    with (
        httpx.Client(base_url=server.root, cookies=cookies, timeout=5) as browser,
        browser.stream("GET", "/api/v1/stream") as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == "retry: 1000"
        reader = token_id(server.root, tokens["admin"], "read-token")
        httpx.delete(f"{server.root}/api/v1/tokens/{reader}", headers=bearer(tokens["admin"]))
        assert_stream_ends(lines, time.monotonic() + DEADLINE_SECONDS)


def test_session_stream_ends_when_the_session_expires(secured_server):
    server, tokens, run_id = secured_server(session_seconds=4)
    cookies = {"callboard_session": session_of(server.root, tokens["read"])}
    with (
        httpx.Client(base_url=server.root, cookies=cookies, timeout=5) as browser,
        browser.stream("GET", f"/api/v1/runs/{run_id}/stream") as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == "retry: 1000"
        assert_stream_ends(lines, time.monotonic() + 4 + DEADLINE_SECONDS)


def test_stream_replaying_a_long_history_ends_when_its_token_is_revoked(server_factory, tmp_path):
    """A revoked reader got a run's whole backlog (it re-checked only once caught up)."""
    url = f"sqlite:///{tmp_path / 'backlog.db'}"
    tokens = {role: make_token(url, f"{role}-token", role) for role in ("admin", "read")}
    server = server_factory(url)
    run_id = httpx.post(
        f"{server.root}/api/v1/runs", json={"name": "long"}, headers=bearer(tokens["admin"])
    ).json()["id"]
    backlog = 20_000  # about 20 MB of messages: far more than socket buffers hold
    padding = "x" * 1000
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.insert(Event),
            [
                {
                    "run_id": run_id,
                    "seq": seq,
                    "kind": "note",
                    "time": 0.0,
                    "received_at": 0.0,
                    "metrics": {},
                    "data": {"text": padding},
                }
                for seq in range(1, backlog + 1)
            ],
        )
    engine.dispose()
    with (
        httpx.Client(base_url=server.root, timeout=5) as client,
        client.stream(
            "GET", f"/api/v1/runs/{run_id}/stream", headers=bearer(tokens["read"])
        ) as response,
    ):
        lines = response.iter_lines()
        assert next(lines) == "retry: 1000"
        reader = token_id(server.root, tokens["admin"], "read-token")
        client.delete(f"/api/v1/tokens/{reader}", headers=bearer(tokens["admin"]))
        delivered = sum(line.startswith("id: ") for line in lines)
    assert delivered < backlog
