"""The rules API as an attacker tries it: bad bodies, webhooks aimed at the server itself,
every role and project scope, secrets and webhook paths never answered (SQLite, PostgreSQL)."""

import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from callboard.server.api.routes import rules as rules_routes
from callboard.server.main import create_app
from tests.server.helpers import create_run, epoch_event, post_events, serving
from tests.server_process import free_port

DEADLINE = 15.0
NAN_LOSS = {"kind": "nan", "metric": "loss"}
STOP = [{"kind": "command", "command": "stop"}]
HOOK_PATH = "/services/T0PATHSECRET/B0PATHSECRET/xoxbPATHSECRET"
HOOK_SECRET = "s1gning-SECRET-value"


def rule_body(name="nan loss", project=None, condition=NAN_LOSS, actions=STOP, **extra):
    return {"name": name, "project": project, "condition": condition, "actions": actions, **extra}


def hook(url, **fields):
    return {"kind": "webhook", "url": url, **fields}


def add_rule(api, body, headers=None):
    """POST `body` as JSON text (NaN and Infinity sent as such): the response."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    return api.post("/api/v1/rules", content=json.dumps(body), headers=headers)


def added(api, body, headers=None):
    response = add_rule(api, body, headers)
    assert response.status_code == 201, response.text
    return response.json()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def locs(response):
    return [tuple(problem["loc"]) for problem in response.json()["detail"]]


def fire_nan(api, run_id, seq=1):
    post_events(api, run_id, epoch_event(seq, seq - 1, loss="NaN"))


def wait_for_alerts(api, count, headers=None, **params):
    """The alerts `headers` sees once there are `count` of them (long-polls, with a deadline)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        response = api.get("/api/v1/alerts", params={"wait": 5, **params}, headers=headers)
        assert response.status_code == 200, response.text
        alerts = response.json()["alerts"]
        if len(alerts) >= count:
            return alerts
        assert time.monotonic() < deadline, f"{len(alerts)} alerts, waited for {count}"


def on_loss(kind, **fields):
    return {"condition": {"kind": kind, "metric": "loss", **fields}}


def commands(*names, **fields):
    return {"actions": [{"kind": "command", "command": name, **fields} for name in names]}


WEBHOOK_URL = ("actions", 0, "webhook", "url")
# what the body changes: where (after "body") the 422 must point
BAD_BODIES = {
    "unknown condition kind": (on_loss("spike"), ("condition",)),
    "above without value": (on_loss("above"), ("condition", "above", "value")),
    "value NaN": (on_loss("above", value=float("nan")), ("condition", "above", "value")),
    "value Infinity": (on_loss("below", value=float("inf")), ("condition", "below", "value")),
    "value 'Infinity'": (on_loss("below", value="Infinity"), ("condition", "below", "value")),
    "patience 0": (on_loss("plateau", patience=0), ("condition", "plateau", "patience")),
    "mode median": (
        on_loss("plateau", patience=3, mode="median"),
        ("condition", "plateau", "mode"),
    ),
    "status running": (
        {"condition": {"kind": "status", "status": "running"}},
        ("condition", "status", "status"),
    ),
    "silent 0 seconds": (
        {"condition": {"kind": "silent", "seconds": 0}},
        ("condition", "silent", "seconds"),
    ),
    "unknown condition field": (on_loss("nan", threshold=1), ("condition", "nan", "threshold")),
    "ftp webhook": ({"actions": [hook("ftp://hooks.example.org/x")]}, WEBHOOK_URL),
    "javascript webhook": ({"actions": [hook("javascript:alert(1)")]}, WEBHOOK_URL),
    "webhook with user:pass@": (
        {"actions": [*STOP, hook("https://user:pass@hooks.example.org/x")]},
        ("actions", 1, "webhook", "url"),
    ),
    "no actions": ({"actions": []}, ("actions",)),
    "11 actions": (commands(*["stop"] * 11), ("actions",)),
    "set_learning_rate alone": (commands("set_learning_rate"), ("actions", 0, "command")),
    "set_learning_rate value and factor": (
        commands("set_learning_rate", value=1e-3, factor=0.5),
        ("actions", 0, "command"),
    ),
    "stop with a value": (commands("stop", value=1), ("actions", 0, "command")),
    "unknown command": (commands("reboot"), ("actions", 0, "command", "command")),
    "unknown field": ({"colour": "red"}, ("colour",)),
    "control character in name": ({"name": "nan\x1b[2Jloss"}, ("name",)),
    "secret too long": (
        {"actions": [hook("https://hooks.example.org/x", secret="s" * 201)]},
        ("actions", 0, "webhook", "secret"),
    ),
}


@pytest.mark.parametrize("changes, field", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_rule_is_a_422_naming_the_field(api, changes, field):
    response = add_rule(api, {**rule_body(), **changes})
    assert response.status_code == 422, response.text
    assert ("body", *field) in locs(response)
    assert api.get("/api/v1/rules").json() == {"rules": []}


SELF_ON_TESTCLIENT = (  # TestClient's app listens as testserver:80, reached as testserver
    "http://testserver/api/v1/runs",
    "http://TESTSERVER.:80/api/v1/runs",
    "http://localhost/api/v1/runs",
    "http://localhost:80/api/v1/runs",
    "http://localhost./api/v1/runs",
    "http://127.0.0.1/api/v1/runs",
    "http://127.1/api/v1/runs",  # 127.0.0.1 once parsed, as every HTTP client reads it
    "http://[::1]/api/v1/runs",
    "http://[::ffff:127.0.0.1]/api/v1/runs",
    "http://0.0.0.0/api/v1/runs",
)


@pytest.mark.parametrize("url", SELF_ON_TESTCLIENT)
def test_webhook_at_this_server_is_refused(api, url):
    body = rule_body(actions=[hook("https://hooks.example.org/x"), *STOP, hook(url)])
    response = add_rule(api, body)
    assert response.status_code == 422, response.text
    assert locs(response) == [("body", "actions", 2, "url")]
    assert api.get("/api/v1/rules").json() == {"rules": []}


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest", "http://[fe80::1]:8080/x", "http://[::ffff:169.254.1.1]/"],
)
def test_webhook_at_a_link_local_address_is_refused(api, url):
    """Cloud metadata services answer on link-local addresses, with the machine's credentials."""
    response = add_rule(api, rule_body(actions=[hook(url)]))
    assert response.status_code == 422, response.text
    assert locs(response) == [("body", "actions", 0, "url")]
    assert "link-local" in response.json()["detail"][0]["msg"]


def test_webhook_at_another_local_port_is_accepted(api):
    """A receiver on this machine's loopback, on another port, is how local receivers work."""
    rule = added(api, rule_body(actions=[hook("http://127.0.0.1:8125/hook")]))
    assert rule["actions"] == [
        {"kind": "webhook", "url": "http://127.0.0.1:8125/…", "has_secret": False}
    ]


def test_webhook_at_the_served_port_is_refused(settings):
    """A real server on 127.0.0.1:P refuses every local name for port P, not another port."""
    with serving(settings) as (_app, root):
        port = int(root.rsplit(":", 1)[1])
        for host in ("127.0.0.1", "localhost", "localhost.", "[::1]", "0.0.0.0", "127.0.0.2"):
            body = rule_body(actions=[hook(f"http://{host}:{port}/api/v1/tokens")])
            response = httpx.post(f"{root}/api/v1/rules", json=body, timeout=10)
            assert response.status_code == 422, (host, response.text)
            assert locs(response) == [("body", "actions", 0, "url")]
        other = rule_body(actions=[hook(f"http://127.0.0.1:{free_port()}/hook")])
        assert httpx.post(f"{root}/api/v1/rules", json=other, timeout=10).status_code == 201


def test_webhook_at_the_public_url_is_refused(settings):
    public = settings.model_copy(update={"public_url": "https://callboard.example.org/board/"})
    with TestClient(create_app(public)) as api:
        for url in (
            "https://callboard.example.org/api/v1/runs",
            "https://CallBoard.Example.org.:443/elsewhere",
        ):
            response = add_rule(api, rule_body(actions=[hook(url)]))
            assert response.status_code == 422, (url, response.text)
            assert locs(response) == [("body", "actions", 0, "url")]
        added(api, rule_body(actions=[hook("https://hooks.example.org/callboard")]))
        added(api, rule_body(actions=[hook("https://callboard.example.org:8443/hook")]))


@pytest.fixture
def tokens(api):
    """Header dicts for each role (`*_a`: scoped to project A) and their token ids; `api`
    itself then calls as the unscoped admin."""
    root = api.post("/api/v1/tokens", json={"name": "root", "role": "admin"}).json()
    api.headers.update(bearer(root["token"]))
    headers, ids = {"admin": bearer(root["token"])}, {"admin": root["id"]}
    for name, role, project in (
        ("ingest", "ingest", None),
        ("read", "read", None),
        ("control", "control", None),
        ("read_a", "read", "A"),
        ("control_a", "control", "A"),
        ("admin_a", "admin", "A"),
    ):
        made = api.post("/api/v1/tokens", json={"name": name, "role": role, "project": project})
        assert made.status_code == 201, made.text
        headers[name], ids[name] = bearer(made.json()["token"]), made.json()["id"]
    return headers, ids


@pytest.fixture
def rules(api, tokens):
    """Rules for every project, for A and for B (added by the admin): name -> answer."""
    return {
        project: added(api, rule_body(name=f"rule {project}", project=project))
        for project in (None, "A", "B")
    }


def rule_names(api, headers, **params):
    response = api.get("/api/v1/rules", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return [rule["name"] for rule in response.json()["rules"]]


def test_ingest_token_neither_lists_nor_adds(api, tokens, rules):
    headers, _ = tokens
    assert api.get("/api/v1/rules", headers=headers["ingest"]).status_code == 403
    assert add_rule(api, rule_body(project="A"), headers["ingest"]).status_code == 403
    assert (
        api.delete(f"/api/v1/rules/{rules['A']['id']}", headers=headers["ingest"]).status_code
        == 403
    )


def test_read_token_lists_but_neither_adds_nor_removes(api, tokens, rules):
    headers, _ = tokens
    assert rule_names(api, headers["read"]) == ["rule None", "rule A", "rule B"]
    assert add_rule(api, rule_body(project="A"), headers["read"]).status_code == 403
    for rule in rules.values():
        assert api.delete(f"/api/v1/rules/{rule['id']}", headers=headers["read"]).status_code == 403
    assert len(rule_names(api, headers["admin"])) == 3


@pytest.mark.parametrize("scoped", ["control_a", "admin_a"])
def test_project_token_manages_only_its_projects_rules(api, tokens, rules, scoped):
    """A control (or admin) token of project A: A's rules only, never B's nor every project's."""
    headers, _ = tokens
    mine = added(api, rule_body(name="mine", project="A"), headers[scoped])
    assert mine["project"] == "A" and mine["created_by"] == scoped
    for project in ("B", None):
        refused = add_rule(api, rule_body(name="escalate", project=project), headers[scoped])
        assert refused.status_code == 403, (project, refused.text)
    unseen = api.delete(f"/api/v1/rules/{rules['B']['id']}", headers=headers[scoped])
    assert unseen.status_code == 404 and unseen.json() == {
        "detail": f"rule {rules['B']['id']} not found"
    }
    assert (
        api.delete(f"/api/v1/rules/{rules[None]['id']}", headers=headers[scoped]).status_code == 403
    )
    assert rule_names(api, headers[scoped]) == ["rule None", "rule A", "mine"]
    assert rule_names(api, headers[scoped], project="B") == []
    removed = api.delete(f"/api/v1/rules/{rules['A']['id']}", headers=headers[scoped])
    assert removed.status_code == 200 and removed.json()["name"] == "rule A"
    assert rule_names(api, headers["admin"]) == ["rule None", "rule B", "mine"]


def test_admin_manages_every_rule(api, tokens, rules):
    headers, _ = tokens
    every = added(api, rule_body(name="every", project=None), headers["admin"])
    assert rule_names(api, headers["admin"], project="B") == ["rule B"]
    for rule in [*rules.values(), every]:
        assert api.get(f"/api/v1/rules/{rule['id']}/deliveries").json() == {"deliveries": []}
        removed = api.delete(f"/api/v1/rules/{rule['id']}", headers=headers["admin"])
        assert removed.status_code == 200 and removed.json()["id"] == rule["id"]
    assert rule_names(api, headers["admin"]) == []
    assert api.delete(f"/api/v1/rules/{every['id']}").status_code == 404


def test_deliveries_log_is_for_admins_of_the_rules_project(api, tokens, rules):
    headers, _ = tokens
    path = f"/api/v1/rules/{rules['A']['id']}/deliveries"
    for role in ("read", "control", "control_a", "ingest"):
        assert api.get(path, headers=headers[role]).status_code == 403, role
    assert api.get(path, headers=headers["admin_a"]).status_code == 200
    b_path = f"/api/v1/rules/{rules['B']['id']}/deliveries"
    assert api.get(b_path, headers=headers["admin_a"]).status_code == 404


def firing_counts(api, headers):
    return {
        rule["name"]: rule["firings"]
        for rule in api.get("/api/v1/rules", headers=headers).json()["rules"]
    }


def test_project_token_sees_only_its_projects_rules_and_alerts(api, tokens, rules):
    headers, _ = tokens
    hooked = added(
        api, rule_body(name="hooked", actions=[hook(f"http://127.0.0.1:{free_port()}/h")])
    )
    run_a, run_b = create_run(api, project="A"), create_run(api, project="B")
    fire_nan(api, run_a)
    fire_nan(api, run_b)
    everything = wait_for_alerts(api, 6, headers["admin"])  # every-project rules on a and b
    assert sorted((a["rule_name"], a["run"]["project"]) for a in everything) == [
        ("hooked", "A"),
        ("hooked", "B"),
        ("rule A", "A"),
        ("rule B", "B"),
        ("rule None", "A"),
        ("rule None", "B"),
    ]
    assert rule_names(api, headers["read_a"]) == ["rule None", "rule A", "hooked"]
    assert rule_names(api, headers["read_a"], project="B") == []
    assert firing_counts(api, headers["admin"]) == {
        "rule None": 2,
        "rule A": 1,
        "rule B": 1,
        "hooked": 2,
    }
    assert firing_counts(api, headers["read_a"]) == {"rule None": 1, "rule A": 1, "hooked": 1}
    path = f"/api/v1/rules/{hooked['id']}/deliveries"
    logged = api.get(path, headers=headers["admin"]).json()["deliveries"]
    assert sorted(delivery["run_id"] for delivery in logged) == [run_a, run_b]
    logged = api.get(path, headers=headers["admin_a"]).json()["deliveries"]
    assert [delivery["run_id"] for delivery in logged] == [run_a]
    seen = api.get("/api/v1/alerts", headers=headers["read_a"]).json()["alerts"]
    assert sorted((a["rule_name"], a["run"]["id"]) for a in seen) == [
        ("hooked", run_a),
        ("rule A", run_a),
        ("rule None", run_a),
    ]
    of_b = api.get(
        "/api/v1/alerts", params={"run_id": run_b, "wait": 0.5}, headers=headers["read_a"]
    )
    assert of_b.status_code == 200 and of_b.json() == {"alerts": []}


def test_revoked_token_is_refused(api, tokens, rules):
    headers, ids = tokens
    control = headers["control"]
    mine = added(api, rule_body(name="mine", project="A"), control)
    assert api.delete(f"/api/v1/tokens/{ids['control']}").status_code == 200
    for method, path in (
        ("GET", "/api/v1/rules"),
        ("GET", "/api/v1/alerts"),
        ("DELETE", f"/api/v1/rules/{mine['id']}"),
    ):
        assert api.request(method, path, headers=control).status_code == 401, path
    assert add_rule(api, rule_body(name="again", project="A"), control).status_code == 401
    assert "mine" in rule_names(api, headers["admin"])


def test_no_answer_shows_a_webhook_path_or_secret(api):
    receiver = f"http://127.0.0.1:{free_port()}{HOOK_PATH}?token=QUERYSECRET"  # nobody listens
    body = rule_body(actions=[hook(receiver, secret=HOOK_SECRET), *STOP])
    answers = [add_rule(api, body)]
    rule = answers[0].json()
    assert rule["actions"][0] == {
        "kind": "webhook",
        "url": f"{receiver.split('/services')[0]}/…",
        "has_secret": True,
    }
    run_id = create_run(api)
    fire_nan(api, run_id)
    alerts = wait_for_alerts(api, 1, run_id=run_id)
    assert alerts[0]["done"][0] == f"webhook {rule['actions'][0]['url']} queued"
    deadline = time.monotonic() + DEADLINE
    while not api.get(f"/api/v1/rules/{rule['id']}/deliveries").json()["deliveries"][0]["attempts"]:
        assert time.monotonic() < deadline, "the webhook was never attempted"
        time.sleep(0.05)
    for path in (
        "/api/v1/rules",
        "/api/v1/alerts",
        f"/api/v1/rules/{rule['id']}/deliveries",
        f"/api/v1/runs/{run_id}/events",
    ):
        answers.append(api.get(path))
    answers.append(api.delete(f"/api/v1/rules/{rule['id']}"))
    assert [answer.status_code for answer in answers] == [201, 200, 200, 200, 200, 200]
    for answer in answers:
        for secret in ("PATHSECRET", "QUERYSECRET", HOOK_SECRET):
            assert secret not in answer.text, (answer.request.url, answer.text)


def test_removing_a_rule_removes_its_alerts(api):
    kept, removed = (added(api, rule_body(name=name)) for name in ("kept", "removed"))
    run_id = create_run(api)
    fire_nan(api, run_id)
    assert {alert["rule_name"] for alert in wait_for_alerts(api, 2)} == {"kept", "removed"}
    assert api.delete(f"/api/v1/rules/{removed['id']}").json()["firings"] == 1
    alerts = api.get("/api/v1/alerts").json()["alerts"]
    assert [alert["rule_id"] for alert in alerts] == [kept["id"]]
    assert [(r["name"], r["firings"]) for r in api.get("/api/v1/rules").json()["rules"]] == [
        ("kept", 1)
    ]
    assert api.get(f"/api/v1/rules/{removed['id']}/deliveries").status_code == 404


def test_rules_beyond_the_maximum_are_a_409(api, monkeypatch):
    monkeypatch.setattr(rules_routes, "MAX_RULES", 2)
    first, _second = added(api, rule_body(name="one")), added(api, rule_body(name="two"))
    refused = add_rule(api, rule_body(name="three"))
    assert refused.status_code == 409 and "2 rules at most" in refused.json()["detail"]
    assert api.delete(f"/api/v1/rules/{first['id']}").status_code == 200
    added(api, rule_body(name="three"))
    assert [rule["name"] for rule in api.get("/api/v1/rules").json()["rules"]] == ["two", "three"]
