"""An attacker's review of issue 12 against real servers: a request's cached caller
never outlives its credential, on one server or across replicas.

The caller is resolved once per request and kept on `request.state`; a live stream
must re-check the credential itself, so signing out or revoking on another replica
ends it too.
"""

import time

import httpx

from tests.server_process import ServerProcess

from .fresh_postgres import fresh_postgres_database
from .test_auth import make_token, session_of
from .test_stream_access import DEADLINE_SECONDS, assert_stream_ends, bearer, token_id

FAST_KEEPALIVE = {"CALLBOARD_STREAM_KEEPALIVE_SECONDS": "0.5"}


def csrf_of(root, cookie):
    """The session's CSRF token, as the dashboard page carries it."""
    page = httpx.get(f"{root}/", cookies={"callboard_session": cookie}).text
    return page.split('data-csrf="', 1)[1].split('"', 1)[0]


def test_session_streams_end_when_the_browser_signs_out(server_factory, tmp_path):
    url = f"sqlite:///{tmp_path / 'signout.db'}"
    admin = make_token(url, "admin-token", "admin")
    reader = make_token(url, "read-token", "read")
    server = server_factory(url, env=FAST_KEEPALIVE)
    run_id = httpx.post(
        f"{server.root}/api/v1/runs", json={"name": "watched"}, headers=bearer(admin)
    ).json()["id"]
    cookies = {"callboard_session": session_of(server.root, reader)}
    csrf = csrf_of(server.root, cookies["callboard_session"])
    with (
        httpx.Client(base_url=server.root, cookies=cookies, timeout=5) as browser,
        browser.stream("GET", f"/api/v1/runs/{run_id}/stream") as run_stream,
        browser.stream("GET", "/api/v1/stream") as runs_stream,
    ):
        streams = [run_stream.iter_lines(), runs_stream.iter_lines()]
        assert [next(lines) for lines in streams] == ["retry: 1000"] * 2
        signed_out = httpx.post(f"{server.root}/logout", data={"csrf": csrf}, cookies=cookies)
        assert signed_out.status_code == 303
        for lines in streams:
            assert_stream_ends(lines, time.monotonic() + DEADLINE_SECONDS)
    again = httpx.get(f"{server.root}/api/v1/stream", cookies=cookies)
    assert again.status_code == 401


def wait_for_status(request, status, deadline_seconds=DEADLINE_SECONDS):
    """Repeat `request()` until it answers `status`; its last answer."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        answer = request()
        if answer.status_code == status or time.monotonic() > deadline:
            return answer


def test_revoking_on_one_replica_ends_streams_and_writes_on_another():
    """PostgreSQL, two servers on one database: a token revoked through A stops its
    live stream on B and B refuses its writes (B's token cache forgets it in seconds)."""
    with fresh_postgres_database("callboard_review") as url:
        admin = make_token(url, "admin-token", "admin")
        reader = make_token(url, "read-token", "read")
        writer = make_token(url, "ingest-token", "ingest", project="lab")
        replicas = []
        try:
            for _ in range(2):
                replicas.append(ServerProcess(url, env=FAST_KEEPALIVE).start())
            first, second = replicas
            run_id = httpx.post(
                f"{second.root}/api/v1/runs",
                json={"name": "shared", "project": "lab"},
                headers=bearer(writer),
            ).json()["id"]
            with (
                httpx.Client(base_url=second.root, timeout=5) as client,
                client.stream(
                    "GET", f"/api/v1/runs/{run_id}/stream", headers=bearer(reader)
                ) as response,
            ):
                assert response.status_code == 200
                lines = response.iter_lines()
                assert next(lines) == "retry: 1000"
                for name in ("read-token", "ingest-token"):
                    revoked = httpx.delete(
                        f"{first.root}/api/v1/tokens/{token_id(first.root, admin, name)}",
                        headers=bearer(admin),
                    )
                    assert revoked.status_code == 200
                assert_stream_ends(lines, time.monotonic() + DEADLINE_SECONDS)
            events = {"events": [{"seq": 1, "kind": "epoch_end", "epoch": 0}]}
            refused = wait_for_status(
                lambda: httpx.post(
                    f"{second.root}/api/v1/runs/{run_id}/events",
                    json=events,
                    headers=bearer(writer),
                ),
                401,
            )
            assert refused.status_code == 401
        finally:
            for replica in replicas:
                replica.stop()
