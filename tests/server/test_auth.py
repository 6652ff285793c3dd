"""Tokens and roles against a real server: every endpoint × every role × no token."""

import re
import subprocess
import sys
import time
from urllib.parse import quote

import httpx
import pytest

from callboard.server.main import create_app
from tests.server_process import ServerProcess, free_port

ROLES = ("ingest", "read", "control", "admin")
# What each API route needs; a route missing here fails the test, so new ones get decided.
NEEDS = {
    ("POST", "/api/v1/runs"): {"ingest"},
    ("GET", "/api/v1/runs"): {"read"},
    ("GET", "/api/v1/runs/{run_id}"): {"read"},
    ("POST", "/api/v1/runs/{run_id}/heartbeat"): {"ingest"},
    ("GET", "/api/v1/runs/{run_id}/export.csv"): {"read"},
    ("POST", "/api/v1/runs/{run_id}/events"): {"ingest"},
    ("GET", "/api/v1/runs/{run_id}/events"): {"read"},
    ("GET", "/api/v1/runs/{run_id}/metrics"): {"read"},
    ("GET", "/api/v1/runs/{run_id}/metrics/{key}"): {"read"},
    ("POST", "/api/v1/runs/{run_id}/stop"): {"control"},
    ("GET", "/api/v1/runs/{run_id}/control"): {"read", "ingest"},
    ("POST", "/api/v1/runs/{run_id}/control/ack"): {"ingest", "control"},
    ("GET", "/api/v1/control"): {"read", "ingest"},
    ("POST", "/api/v1/runs/{run_id}/commands"): {"control"},
    ("GET", "/api/v1/runs/{run_id}/commands"): {"read", "ingest"},
    ("GET", "/api/v1/runs/{run_id}/commands/pending"): {"ingest"},
    ("POST", "/api/v1/runs/{run_id}/commands/{command_id}/outcome"): {"ingest"},
    ("POST", "/api/v1/runs/{run_id}/commands/{command_id}/cancel"): {"control"},
    ("GET", "/api/v1/runs/{run_id}/stream"): {"read"},
    ("GET", "/api/v1/stream"): {"read"},
    ("GET", "/api/v1/sparklines"): {"read"},
    ("GET", "/api/v1/extremes"): {"read"},
    ("GET", "/api/v1/aggregate"): {"read"},
    ("POST", "/api/v1/rules"): {"control"},
    ("GET", "/api/v1/rules"): {"read"},
    ("DELETE", "/api/v1/rules/{rule_id}"): {"control"},
    ("GET", "/api/v1/rules/{rule_id}/deliveries"): {"admin"},
    ("GET", "/api/v1/alerts"): {"read"},
    ("POST", "/api/v1/tokens"): {"admin"},
    ("GET", "/api/v1/tokens"): {"admin"},
    ("DELETE", "/api/v1/tokens/{token_id}"): {"admin"},
    ("POST", "/publish/epoch/end/"): {"ingest"},
    ("GET", "/metrics"): {"read"},  # Prometheus; or CALLBOARD_METRICS_TOKEN (test_prometheus)
    ("PATCH", "/api/v1/runs/{run_id}"): {"control"},
    ("DELETE", "/api/v1/runs/{run_id}"): {"admin"},  # last: it deletes the matrix's run
}
GRANTS = {
    "ingest": {"ingest"},
    "read": {"read"},
    "control": {"read", "control"},
    "admin": {"read", "control", "ingest", "admin"},
}
PUBLIC = {("GET", "/api/v1/health")}


def api_routes():
    for path, operations in create_app().openapi()["paths"].items():
        for method in operations:
            if path.startswith(("/api/", "/publish/")):
                yield method.upper(), path


def test_every_api_route_has_a_decided_role():
    routes = set(api_routes())
    assert routes - PUBLIC <= set(NEEDS), f"decide who may call {routes - PUBLIC - set(NEEDS)}"


def make_token(database_url, name, role, project=None):
    args = [
        sys.executable,
        "-m",
        "callboard.server",
        "token",
        "create",
        name,
        "--role",
        role,
        "--db",
        database_url,
    ]
    if project:
        args += ["--project", project]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return done.stdout.split()[-1]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('auth') / 'auth.db'}"
    tokens = {role: make_token(url, f"{role}-token", role) for role in ROLES}
    tokens["scoped"] = make_token(url, "scoped-token", "admin", project="team-a")
    server = ServerProcess(url).start()
    yield server, tokens
    server.stop()


def call(root, method, path, token=None, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with (
        httpx.Client(base_url=root, timeout=10) as client,
        client.stream(method, path, headers=headers, **kwargs) as response,
    ):
        return response.status_code


RULE = {
    "name": "matrix",
    "project": "p",
    "condition": {"kind": "status", "status": "failed"},
    "actions": [{"kind": "command", "command": "checkpoint"}],
}


def request_for(method, path, run_id, token_id, command_id=1, rule_id=1):
    concrete = path.format(
        run_id=run_id, key="loss", token_id=token_id, command_id=command_id, rule_id=rule_id
    )
    bodies = {
        "/api/v1/rules": {"json": RULE},
        f"/api/v1/runs/{run_id}/commands": {"json": {"kind": "checkpoint"}},
        f"/api/v1/runs/{run_id}/commands/{command_id}/outcome": {"json": {"state": "applied"}},
        "/api/v1/runs": {"json": {"name": "matrix", "project": "p"}},
        f"/api/v1/runs/{run_id}/events": {"json": {"events": []}},
        "/api/v1/tokens": {"json": {"name": f"t{time.monotonic_ns()}", "role": "read"}},
        "/publish/epoch/end/": {"content": b'{"epoch": 0, "loss": 1.0}'},
        f"/api/v1/runs/{run_id}": {"json": {"note": "matrix"}},
    }
    queries = {"/api/v1/sparklines": {"params": {"ids": str(run_id)}}}
    queries["/api/v1/extremes"] = queries["/api/v1/sparklines"]
    queries["/api/v1/aggregate"] = {"params": {"ids": str(run_id), "key": "loss"}}
    queries["/api/v1/control"] = {"params": {"name": "m", "project": "p"}}
    queries[f"/api/v1/runs/{run_id}/commands/pending"] = {"params": {"wait": 0}}
    return concrete, (
        bodies.get(concrete, {}) if method in ("POST", "PATCH") else queries.get(concrete, {})
    )


def test_auth_matrix(secured):
    server, tokens = secured
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    run_id = httpx.post(
        f"{server.root}/api/v1/runs", json={"name": "m", "project": "p"}, headers=admin
    ).json()["id"]
    httpx.post(
        f"{server.root}/api/v1/runs/{run_id}/events",
        headers=admin,
        json={"events": [{"seq": 1, "kind": "epoch_end", "epoch": 0, "metrics": {"loss": 1.0}}]},
    )
    for (method, path), needs in NEEDS.items():
        spare = httpx.post(
            f"{server.root}/api/v1/tokens",
            headers=admin,
            json={"name": f"spare{time.monotonic_ns()}", "role": "read"},
        ).json()
        command = httpx.post(  # outcome and cancel: a command of their own, settled at most once
            f"{server.root}/api/v1/runs/{run_id}/commands", json={"kind": "pause"}, headers=admin
        ).json()
        target, kwargs = request_for(method, path, run_id, spare["id"], command["id"])
        assert call(server.root, method, target, **kwargs) == 401, (method, path, "no token")
        assert call(server.root, method, target, "cb_wrong", **kwargs) == 401, (method, path)
        for role in ROLES:
            # A rule of its own for each caller: a removed rule is a 404 to the next.
            rule = httpx.post(f"{server.root}/api/v1/rules", json=RULE, headers=admin).json()
            target, kwargs = request_for(
                method, path, run_id, spare["id"], command["id"], rule["id"]
            )
            status = call(server.root, method, target, tokens[role], **kwargs)
            if GRANTS[role] & needs:
                assert status < 400, (method, path, role, status)
            else:
                assert status == 403, (method, path, role, status)
    assert call(server.root, "GET", "/api/v1/health") == 200


def test_project_scoped_token_sees_only_its_project(secured):
    server, tokens = secured
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    scoped = {"Authorization": f"Bearer {tokens['scoped']}"}
    other = httpx.post(
        f"{server.root}/api/v1/runs", json={"name": "b", "project": "team-b"}, headers=admin
    ).json()["id"]
    mine = httpx.post(
        f"{server.root}/api/v1/runs", json={"name": "a", "project": "team-a"}, headers=scoped
    )
    assert mine.status_code == 201
    listed = httpx.get(f"{server.root}/api/v1/runs", headers=scoped).json()["runs"]
    assert {run["project"] for run in listed} == {"team-a"}
    assert httpx.get(f"{server.root}/api/v1/runs/{other}", headers=scoped).status_code == 404
    assert httpx.post(f"{server.root}/api/v1/runs/{other}/stop", headers=scoped).status_code == 404
    control = f"{server.root}/api/v1/runs/{other}/control"
    assert httpx.get(control, headers=scoped).status_code == 404
    assert httpx.get(control, headers=admin).status_code == 200
    refused = httpx.post(
        f"{server.root}/api/v1/runs", json={"name": "x", "project": "team-b"}, headers=scoped
    )
    assert refused.status_code == 403 and "team-a" in refused.json()["detail"]
    compat = httpx.post(
        f"{server.root}/publish/epoch/end/?project=team-b", headers=scoped, content=b'{"epoch": 0}'
    )
    assert compat.status_code == 403


def test_stock_remote_monitor_sends_its_token_through_headers(secured):
    import keras

    from tests.e2e.training import tiny_data, tiny_model

    server, tokens = secured
    x, y = tiny_data(32)
    tiny_model().fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[
            keras.callbacks.RemoteMonitor(
                root=server.root,
                path="/publish/epoch/end/?run=stock-auth",
                headers={"Authorization": f"Bearer {tokens['ingest']}"},
            )
        ],
    )
    runs = httpx.get(
        f"{server.root}/api/v1/runs",
        params={"name": "stock-auth"},
        headers={"Authorization": f"Bearer {tokens['read']}"},
    ).json()["runs"]
    assert runs[0]["epochs_done"] == 2


def test_revoked_token_stops_working(secured):
    server, tokens = secured
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    made = httpx.post(
        f"{server.root}/api/v1/tokens", headers=admin, json={"name": "short-lived", "role": "read"}
    ).json()
    assert re.fullmatch(r"cb_[A-Za-z0-9_-]{40,}", made["token"])
    assert call(server.root, "GET", "/api/v1/runs", made["token"]) == 200
    httpx.delete(f"{server.root}/api/v1/tokens/{made['id']}", headers=admin)
    deadline = time.monotonic() + 10
    while call(server.root, "GET", "/api/v1/runs", made["token"]) != 401:
        assert time.monotonic() < deadline, "a revoked token kept working"
        time.sleep(0.2)
    listed = httpx.get(f"{server.root}/api/v1/tokens", headers=admin).json()["tokens"]
    assert "token" not in listed[0] and "token_hash" not in listed[0]


def test_ingest_rate_limit_answers_429_with_retry_after(tmp_path):
    url = f"sqlite:///{tmp_path / 'rate.db'}"
    token = make_token(url, "limited", "ingest")
    server = ServerProcess(
        url, env={"CALLBOARD_INGEST_RATE_PER_SECOND": "1", "CALLBOARD_INGEST_BURST": "3"}
    ).start()
    try:
        statuses = []
        for _ in range(5):
            response = httpx.post(
                f"{server.root}/api/v1/runs",
                json={"name": "r"},
                headers={"Authorization": f"Bearer {token}"},
            )
            statuses.append(response.status_code)
        assert statuses[:3] == [201, 201, 201] and 429 in statuses[3:]
        limited = httpx.post(
            f"{server.root}/api/v1/runs",
            json={"name": "r"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    finally:
        server.stop()


def test_serve_refuses_a_public_address_without_a_token(tmp_path):
    url = f"sqlite:///{tmp_path / 'bind.db'}"
    port = str(free_port())
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "callboard.server",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            port,
            "--db",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "Refusing to serve on 0.0.0.0" in refused.stdout
    insecure = ServerProcess(url, args=["--host", "0.0.0.0", "--insecure"]).start()
    insecure.stop()
    make_token(url, "admin", "admin")
    secured = ServerProcess(url, args=["--host", "0.0.0.0"]).start()
    try:
        assert httpx.get(f"{secured.root}/api/v1/runs").status_code == 401
    finally:
        secured.stop()


# The dashboard pages: a browser without a session is sent to sign in, an API client is not.
PAGES = ("/", "/compare", "/runs/{run_id}")
FOREIGN_NEXTS = (
    "//evil.example/",
    "https://evil.example/",
    "/\\evil.example",
    "/\t/evil.example",
    "javascript:alert(1)",
    "evil.example",
    "",
)


def sign_in(root, token, next_path="/", **headers):
    """POST the sign-in form; the answer, not followed."""
    return httpx.post(
        f"{root}/login", data={"token": token, "next": next_path}, headers=headers, timeout=10
    )


def session_of(root, token):
    answer = sign_in(root, token)
    assert answer.status_code == 303, answer.text
    return answer.cookies["callboard_session"]


def test_dashboard_pages_matrix(secured):
    server, tokens = secured
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    run_id = httpx.post(
        f"{server.root}/api/v1/runs", json={"name": "page", "project": "p"}, headers=admin
    ).json()["id"]
    sessions = {role: session_of(server.root, tokens[role]) for role in ("read", "control")}
    for template in PAGES:
        path = template.format(run_id=run_id)

        def get(headers=None, cookies=None, path=path):
            with httpx.Client(base_url=server.root, cookies=cookies, timeout=10) as client:
                return client.get(path, headers=headers)

        for cookies in (None, {"callboard_session": "forged"}):
            answer = get(cookies=cookies)
            assert answer.status_code == 303, (path, cookies)
            assert answer.headers["location"] == f"/login?next={quote(path, safe='')}"
        assert get({"Authorization": "Bearer cb_wrong"}).status_code == 401, path
        for role in ROLES:
            status = get({"Authorization": f"Bearer {tokens[role]}"}).status_code
            assert status == (403 if role == "ingest" else 200), (path, role, status)
        for role, cookie in sessions.items():
            page = get(cookies={"callboard_session": cookie})
            assert page.status_code == 200, (path, role)
            assert f"{role}-token" in page.text and 'id="sign-out"' in page.text
    # Stop on the run page: enabled for control, disabled with a reason for read.
    run_page = f"{server.root}/runs/{run_id}"
    read = httpx.get(run_page, cookies={"callboard_session": sessions["read"]}).text
    control = httpx.get(run_page, cookies={"callboard_session": sessions["control"]}).text
    assert 'data-allowed="false" disabled' in read and "needs a control" in read
    assert 'data-allowed="true"' in control and "needs a control" not in control


def test_scoped_session_sees_only_its_projects_pages(secured):
    server, tokens = secured
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    other = httpx.post(
        f"{server.root}/api/v1/runs",
        json={"name": "team-b-secret", "project": "team-b"},
        headers=admin,
    ).json()["id"]
    cookies = {"callboard_session": session_of(server.root, tokens["scoped"])}
    assert httpx.get(f"{server.root}/runs/{other}", cookies=cookies).status_code == 404
    compare = httpx.get(f"{server.root}/compare", params={"ids": other}, cookies=cookies).text
    assert "team-b-secret" not in compare


def test_login_form_and_its_answers(secured):
    server, tokens = secured
    form = httpx.get(f"{server.root}/login", params={"next": "/compare"})
    assert form.status_code == 200
    assert 'type="password"' in form.text and 'name="next" value="/compare"' in form.text
    assert "<script" not in form.text
    assert "script-src 'self';" in form.headers["content-security-policy"]
    assert form.headers["cache-control"] == "no-store"
    wrong = sign_in(server.root, "cb_wrong", "/compare")
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert "set-cookie" not in wrong.headers and "cb_wrong" not in wrong.text
    ingest = sign_in(server.root, tokens["ingest"])
    assert ingest.status_code == 403 and "ingest token" in ingest.text
    assert "set-cookie" not in ingest.headers
    signed = sign_in(server.root, tokens["read"], "/runs/1?tab=x")
    assert signed.status_code == 303 and signed.headers["location"] == "/runs/1?tab=x"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Max-Age=604800" in cookie and "Secure" not in cookie
    # Behind a TLS proxy (uvicorn trusts X-Forwarded-Proto from 127.0.0.1) the cookie is Secure.
    https = sign_in(server.root, tokens["read"], **{"X-Forwarded-Proto": "https"})
    assert "Secure" in https.headers["set-cookie"]


def test_login_never_redirects_off_site(secured):
    server, tokens = secured
    for next_path in FOREIGN_NEXTS:
        signed = sign_in(server.root, tokens["read"], next_path)
        assert signed.headers["location"] == "/", next_path
        form = httpx.get(f"{server.root}/login", params={"next": next_path})
        assert 'name="next" value="/"' in form.text, next_path


def test_login_from_another_site_is_refused(secured):
    server, tokens = secured
    host = server.root.removeprefix("http://")
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page"},
        {"Origin": f"http://127.0.0.1:{free_port()}"},
    ):
        refused = sign_in(server.root, tokens["read"], **headers)
        assert refused.status_code == 403 and "another site" in refused.text, headers
        assert "set-cookie" not in refused.headers
    same = sign_in(server.root, tokens["read"], Origin=f"http://{host}")
    assert same.status_code == 303


def test_logout_needs_the_csrf_token_and_ends_the_session(secured):
    server, tokens = secured
    cookies = {"callboard_session": session_of(server.root, tokens["read"])}
    page = httpx.get(f"{server.root}/", cookies=cookies).text
    csrf = re.search(r'data-csrf="([^"]+)"', page).group(1)
    with httpx.Client(base_url=server.root, cookies=cookies, timeout=10) as browser:
        assert browser.post("/logout", data={"csrf": "guess"}).status_code == 403
        assert browser.get("/").status_code == 200
        out = browser.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert 'callboard_session=""' in out.headers["set-cookie"]
    # The old cookie no longer opens anything.
    assert httpx.get(f"{server.root}/", cookies=cookies).status_code == 303
    assert httpx.get(f"{server.root}/api/v1/runs", cookies=cookies).status_code == 401


def test_failed_sign_ins_are_throttled_per_address(tmp_path):
    url = f"sqlite:///{tmp_path / 'throttle.db'}"
    token = make_token(url, "reader", "read")
    server = ServerProcess(url).start()
    try:
        statuses = [sign_in(server.root, f"cb_guess{i}").status_code for i in range(12)]
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
        throttled = sign_in(server.root, token)
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
        assert "set-cookie" not in throttled.headers
    finally:
        server.stop()


def test_without_tokens_the_dashboard_stays_open(tmp_path):
    server = ServerProcess(f"sqlite:///{tmp_path / 'open.db'}").start()
    try:
        assert httpx.get(f"{server.root}/").status_code == 200
        assert 'id="sign-out"' not in httpx.get(f"{server.root}/compare").text
        login = httpx.get(f"{server.root}/login", params={"next": "/compare"})
        assert login.status_code == 303 and login.headers["location"] == "/compare"
    finally:
        server.stop()
