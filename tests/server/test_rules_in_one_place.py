"""Rules written once, checked through every route that uses them.

Each test walks the app's own route table, so a route added with a copy of a
rule that behaves differently (a second caller lookup, another 404, CSRF left
out, a blocking database call on the event loop) fails here.
"""

import asyncio

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from callboard.server.api.deps import SAFE_METHODS, SESSION_COOKIE
from callboard.server.api.schemas import MAX_ROW_ID
from callboard.server.http.rate_limit import RateLimiter, retry_after
from callboard.server.main import create_app
from callboard.server.settings import Settings
from callboard.server.web.login import LOGIN_BURST
from tests.server.helpers import create_run, epoch_event, post_events

try:  # FastAPI 0.13x+ keeps included routers as such; older ones list every route in app.routes
    from fastapi.routing import iter_route_contexts
except ImportError:  # pragma: no cover

    def iter_route_contexts(routes):
        return routes


MISSING_RUN = 999_999
EVENTS = {"events": [epoch_event(1, 0, loss=1.0)]}


@pytest.fixture
def client(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'rules.db'}")
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def world(client):
    """An unscoped admin, an admin of project team-a, a spare token, a run in each project."""
    root = client.post("/api/v1/tokens", json={"name": "root", "role": "admin"}).json()["token"]
    client.headers.update(bearer(root))
    scoped = client.post(
        "/api/v1/tokens", json={"name": "a-admin", "role": "admin", "project": "team-a"}
    ).json()["token"]
    spare = client.post("/api/v1/tokens", json={"name": "spare", "role": "read"}).json()["id"]
    mine = create_run(client, "mine", project="team-a")
    other = create_run(client, "other", project="team-b")
    for run_id in (mine, other):
        post_events(client, run_id, epoch_event(1, 0, loss=1.0))
    command = client.post(f"/api/v1/runs/{mine}/commands", json={"kind": "checkpoint"}).json()
    assert command["id"] == 1  # `concrete` names it
    return {"root": root, "scoped": scoped, "spare": spare, "mine": mine, "other": other}


def routes(app, keep):
    """`(method, path)` of every route of `app` for which `keep(method, path)` holds."""
    found = set()
    for route in iter_route_contexts(app.routes):
        for method in getattr(route, "methods", None) or ():
            if keep(method, route.path):
                found.add((method, route.path))
    return sorted(found)


def concrete(path, run_id, token_id=0):
    path = path.replace("{key:path}", "{key}")
    path = path.format(
        run_id=run_id, token_id=token_id, key="loss", name="missing", command_id=1, rule_id=1
    )
    return path + "?wait=0" if path.endswith("/pending") else path


def body_for(path):
    return EVENTS if path.endswith("/events") else {}


def sign_in(client, token):
    answer = client.post("/login", data={"token": token, "next": "/"})
    assert answer.status_code == 303, answer.text
    cookie = answer.cookies[SESSION_COOKIE]
    client.cookies.clear()
    return cookie


def test_a_request_resolves_its_caller_once(client, world, monkeypatch):
    """A `VisibleRun` route, the fast paths and the pages look the caller up once each."""
    tokens = client.app.state.tokens
    monkeypatch.setattr(tokens, "ttl", 3600.0)  # every look-up below answers from the cache
    tokens.invalidate()
    cookie = sign_in(client, world["root"])
    lookups = []
    for name in ("for_token", "for_session"):
        original = getattr(tokens, name)

        def counted(secret, original=original):
            lookups.append(secret)
            return original(secret)

        monkeypatch.setattr(tokens, name, counted)
    run_id = world["mine"]
    requests = [
        ("GET", f"/api/v1/runs/{run_id}", {}),
        ("GET", f"/api/v1/runs/{run_id}/metrics", {}),
        ("GET", f"/api/v1/runs/{run_id}/metrics/loss", {}),
        ("GET", f"/api/v1/runs/{run_id}/events", {}),
        ("GET", f"/api/v1/runs/{run_id}/export.csv", {}),
        ("POST", f"/api/v1/runs/{run_id}/events", {"json": EVENTS}),
        ("GET", f"/api/v1/runs/{run_id}/control", {}),
        ("POST", f"/api/v1/runs/{run_id}/control/ack", {}),
        ("GET", f"/runs/{run_id}", {}),
    ]
    for credential in ({}, {"Cookie": f"{SESSION_COOKIE}={cookie}", "Authorization": ""}):
        client.request("GET", "/api/v1/runs", headers=credential)  # the cache holds the caller
        for method, path, kwargs in requests:
            lookups.clear()
            answer = client.request(method, path, headers=credential, **kwargs)
            if method == "POST" and credential:
                assert answer.status_code == 403  # a cookie write without the CSRF token
            else:
                assert answer.status_code == 200, (method, path, answer.text)
            assert len(lookups) == 1, (method, path, credential, len(lookups))


def test_every_cookie_write_needs_the_sessions_csrf_token(client, world):
    """Wrong or missing X-CSRF-Token: 403 on every state-changing route; right one: admitted."""
    cookie = sign_in(client, world["root"])
    csrf = client.app.state.tokens.for_session(cookie).csrf_token
    session = {"Cookie": f"{SESSION_COOKIE}={cookie}", "Authorization": ""}
    writes = routes(
        client.app, lambda method, path: method not in SAFE_METHODS and path != "/login"
    )
    assert len(writes) >= 9, writes  # runs, heartbeat, events, stop, ack, tokens x2, publish, …
    for method, template in writes:
        path = concrete(template, world["mine"], world["spare"])
        for sent in ({}, {"X-CSRF-Token": "guess"}, {"X-CSRF-Token": csrf[:-1]}):
            answer = client.request(method, path, headers={**session, **sent}, json={})
            assert answer.status_code == 403, (method, path, sent, answer.text)
            assert "CSRF" in answer.text, (method, path)
        if template == "/logout":
            continue  # the right token ends the session
        allowed = client.request(
            method, path, headers={**session, "X-CSRF-Token": csrf}, json=body_for(template)
        )
        assert allowed.status_code != 403, (method, path, allowed.text)


def test_another_projects_run_is_answered_as_a_missing_one(client, world):
    """Every route naming a run: the same 404 for a run of another project as for none."""
    scoped = bearer(world["scoped"])
    run_routes = routes(client.app, lambda _method, path: "{run_id}" in path)
    assert len(run_routes) >= 12, run_routes
    for method, template in run_routes:
        answers = {}
        for run_id in (world["other"], MISSING_RUN):
            answers[run_id] = client.request(
                method, concrete(template, run_id), headers=scoped, json=body_for(template)
            )
            assert answers[run_id].status_code == 404, (method, template, run_id)
        if template.startswith("/api/"):
            for run_id, answer in answers.items():
                assert answer.json() == {"detail": f"run {run_id} not found"}, (method, template)
        if template.endswith("/stream"):
            continue  # its own run's stream would not end
        # The caller's own run is there for it (a write may refuse it, but not as missing);
        # deleting one takes a run of its own, so the other routes keep theirs.
        own_run = create_run(client, "spare", project="team-a") if method == "DELETE" else None
        own = client.request(
            method,
            concrete(template, own_run or world["mine"]),
            headers=scoped,
            json=body_for(template),
        )
        assert own.status_code != 404, (method, template, own.text)


def test_the_event_loop_never_waits_for_the_database(client, world, monkeypatch):
    """Async routes and dependencies reach the database on worker threads only.

    The token cache is off (every look-up misses), so each request needs the database.
    """
    tokens = client.app.state.tokens
    monkeypatch.setattr(tokens, "ttl", 0.0)
    tokens.invalidate()
    cookie = sign_in(client, world["root"])
    session = {"Cookie": f"{SESSION_COOKIE}={cookie}", "Authorization": ""}
    csrf = tokens.for_session(cookie).csrf_token
    on_the_loop = []

    def checkout(*_args):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        on_the_loop.append(current)

    engine = client.app.state.database.engine
    every_route = routes(
        client.app,
        lambda method, path: method != "HEAD" and path not in ("/logout", "/api/v1/stream"),
    )
    tour = []
    for method, template in every_route:
        run_id = MISSING_RUN if template.endswith("/stream") else world["mine"]
        body = {} if method in SAFE_METHODS else {"json": body_for(template)}
        tour.append((method, concrete(template, run_id, world["spare"]), body))
    tour += [
        ("POST", "/login", {"data": {"token": "cb_wrong", "next": "/"}}),
        ("POST", "/login", {"data": {"token": world["root"], "next": "/"}}),
        ("POST", "/publish/epoch/end/", {"content": b'{"epoch": 0, "loss": 1.0}'}),
        ("POST", "/logout", {"headers": session, "data": {"csrf": csrf}}),
    ]
    assert len(tour) > 25, tour
    event.listen(engine, "checkout", checkout)
    try:
        for current in tour:
            method, path, kwargs = current
            answer = client.request(method, path, **kwargs)
            assert answer.status_code < 500, (method, path, answer.status_code)
    finally:
        event.remove(engine, "checkout", checkout)
    assert on_the_loop == []


def test_failed_sign_ins_share_the_servers_rate_limiter(client, world):
    answers = [client.post("/login", data={"token": f"cb_guess{i}"}) for i in range(LOGIN_BURST)]
    assert [answer.status_code for answer in answers] == [401] * LOGIN_BURST
    throttled = client.post("/login", data={"token": world["root"]})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert SESSION_COOKIE not in throttled.cookies


def test_every_id_in_a_path_has_the_same_bounds(client):
    """Path ids (FastAPI's `RowId` and the fast paths' `documented_path`) are described alike."""
    bounds = set()
    for operations in client.get("/openapi.json").json()["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"].endswith("_id"):
                    schema = parameter["schema"]
                    bounds.add((schema["type"], schema["minimum"], schema["maximum"]))
    assert bounds == {("integer", 1, MAX_ROW_ID)}


def test_the_rate_limiter_counts_failures_after_the_fact():
    """`wait` only looks; `spend` takes one even from an empty budget; keys are apart."""
    limiter = RateLimiter(rate=1 / 3600, burst=2)
    assert limiter.wait("a") == limiter.wait("a") == 0.0
    limiter.spend("a")
    limiter.spend("a")
    assert 3500 < limiter.wait("a") <= 3600
    limiter.spend("a")  # a budget never goes below empty: one refill still lets it try
    assert 3500 < limiter.wait("a") <= 3600
    assert limiter.acquire("a") > 0 and limiter.acquire("b") == 0.0
    assert retry_after(0.01) == "1" and retry_after(2.4) == "3"
