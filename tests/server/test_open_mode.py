"""Open mode (anonymous = admin) lasts only until the first token: revoking every token locks."""

import sqlite3
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from callboard.server.main import create_app
from tests.server_process import ServerProcess

from .test_auth import make_token

HINT = "callboard token create NAME --role admin"


def test_revoking_every_token_locks_the_server_instead_of_opening_it(api):
    assert api.get("/api/v1/runs").status_code == 200  # open: no token was ever created
    made = api.post("/api/v1/tokens", json={"name": "only", "role": "admin"}).json()
    assert api.get("/api/v1/runs").status_code == 401
    own = {"Authorization": f"Bearer {made['token']}"}
    assert api.delete(f"/api/v1/tokens/{made['id']}", headers=own).status_code == 200
    for method, path, body in (
        ("POST", "/api/v1/tokens", {"name": "takeover", "role": "admin"}),
        ("GET", "/api/v1/runs", None),
        ("POST", "/api/v1/runs", {"name": "r"}),
    ):
        for headers in ({}, own):
            answer = api.request(method, path, json=body, headers=headers)
            assert answer.status_code == 401, (method, path, headers, answer.text)
            detail = answer.json()["detail"]
            assert "revoked" in detail and HINT in detail, detail
    assert api.get("/api/v1/health").status_code == 200
    # The sign-in page asks for a token instead of sending the browser round in a loop.
    assert api.get("/login", follow_redirects=False).status_code == 200


def test_require_tokens_never_serves_open_mode(settings):
    locked = settings.model_copy(update={"require_tokens": True})
    with TestClient(create_app(locked)) as api:
        answer = api.post("/api/v1/tokens", json={"name": "takeover", "role": "admin"})
        assert answer.status_code == 401
        assert "none exists yet" in answer.json()["detail"] and HINT in answer.json()["detail"]
        assert api.get("/", follow_redirects=False).status_code == 303
        assert api.get("/api/v1/health").status_code == 200


@pytest.fixture
def public_server(tmp_path):
    """A server bound to 0.0.0.0 (it has a token, so it starts without --insecure)."""
    path = tmp_path / "public.db"
    make_token(f"sqlite:///{path}", "admin", "admin")
    server = ServerProcess(f"sqlite:///{path}", args=["--host", "0.0.0.0"]).start()
    yield server, path
    server.stop()


def test_serve_on_a_public_address_requires_tokens_for_life(public_server):
    server, path = public_server
    with sqlite3.connect(path) as db:  # every token gone, as if never made
        db.execute("DELETE FROM dashboard_sessions")
        db.execute("DELETE FROM api_tokens")
    deadline = time.monotonic() + 10
    while True:
        answer = httpx.get(f"{server.root}/api/v1/runs", timeout=5)
        assert answer.status_code == 401, answer.text
        if "none exists yet" in answer.json()["detail"]:
            break
        assert time.monotonic() < deadline, "the server never noticed the tokens were gone"
        time.sleep(0.2)
    assert HINT in answer.json()["detail"]
    # The recovery the hint gives works while the server runs.
    recovered = {"Authorization": f"Bearer {make_token(f'sqlite:///{path}', 'new', 'admin')}"}
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.root}/api/v1/runs", headers=recovered).status_code != 200:
        assert time.monotonic() < deadline, "a token made with the hint's command was refused"
        time.sleep(0.2)
