"""The typed contract: `/openapi.json` describes every answer, and real answers match it.

Removing one route's answer model leaves FastAPI's empty `{}` schema (or no
content at all) on its 2xx answer, which `test_every_operation_documents_its_answer`
refuses; a model that no longer matches what a route sends fails the tours below.
"""

import json

import httpx
import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from callboard.server.api.answers import ControlState, IngestResult, MetricSeries
from callboard.server.main import create_app
from callboard.server.settings import Settings
from callboard.server.store import migrate

from .helpers import create_run, epoch_event, post_events

OPENAPI = create_app().openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, methods in OPENAPI["paths"].items()
    for method, operation in methods.items()
]
STREAMS = {"/api/v1/runs/{run_id}/stream", "/api/v1/stream"}
JSON = "application/json"


def resolved(schema):
    """`schema` with a top-level `$ref` followed into the components."""
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return OPENAPI["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return schema


def validator(schema):
    return jsonschema_rs.Draft202012Validator({**schema, "components": OPENAPI["components"]})


def answer_schema(method, path, status, media_type=JSON):
    """The schema `/openapi.json` documents for `status` answers of `method path`."""
    responses = OPENAPI["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answers {status}, undocumented"
    content = responses[str(status)].get("content", {})
    assert media_type in content, f"{method} {path} {status}: no {media_type} documented"
    return content[media_type]


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=lambda x: str(x)[:60])
def test_every_operation_documents_its_answer(method, path, operation):
    answers = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
    assert answers, f"{method} {path} documents no 2xx answer"
    for code, answer in answers.items():
        assert answer.get("content"), f"{method} {path} {code}: no content documented"
        for media_type, content in answer["content"].items():
            schema = content.get("schema")
            assert schema, f"{method} {path} {code} {media_type}: empty schema"
            if media_type == JSON:  # an object with named fields, not "any JSON"
                assert resolved(schema).get("properties"), f"{method} {path} {code}: no fields"
            elif media_type == "text/event-stream":
                payloads = content["itemSchema"]["anyOf"]
                assert all(p["properties"]["data"]["contentSchema"] for p in payloads)


def test_every_schema_reference_resolves():
    text = json.dumps(OPENAPI)
    names = {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}
    assert names <= set(OPENAPI["components"]["schemas"]), names - set(
        OPENAPI["components"]["schemas"]
    )


def test_error_answers_are_documented_as_problems():
    for method, path, operation in OPERATIONS:
        for code, answer in operation["responses"].items():
            if code.startswith("4") and code != "422" or code == "503":
                ref = answer["content"][JSON]["schema"]["$ref"]
                assert ref.endswith("/Problem"), (method, path, code)


class Tour:
    """A TestClient whose every answer is checked against the documented schema."""

    def __init__(self, client):
        self.client = client
        self.seen = set()

    def call(self, method, path, status=200, fill=None, **kwargs):
        """`method path` (a template, filled from `fill`), expecting `status`: its answer."""
        response = self.client.request(method, path.format(**(fill or {})), **kwargs)
        assert response.status_code == status, response.text
        media_type = response.headers["content-type"].partition(";")[0]
        documented = answer_schema(method, path, status, media_type)
        answer = response.json() if media_type == JSON else response.text
        errors = [e.message for e in validator(documented["schema"]).iter_errors(answer)]
        assert not errors, f"{method} {path} {status}: {errors}"
        if status < 300:
            self.seen.add((method, path))
        return answer


@pytest.fixture
def tour(tmp_path):
    url = f"sqlite:///{tmp_path / 'contract.db'}"
    migrate.upgrade(url)
    settings = Settings(database_url=url, skip_migrations=True, allowed_hosts="testserver")
    with TestClient(create_app(settings)) as client:
        yield Tour(client)


BATCH = [
    {"seq": 1, "kind": "train_begin", "data": {"epochs": 3}},
    epoch_event(2, 0, loss=1.0, val_loss="NaN"),
    epoch_event(3, 1, loss="Infinity", val_loss=0.5),
    {"seq": 4, "kind": "batch_end", "step": 7, "metrics": {"batch/loss": "-Infinity"}},
]


def test_real_answers_match_the_documented_schemas(tour):
    spec = {"name": "toured", "project": "p", "uid": "contract-0001", "tags": ["a"]}
    run = tour.call("POST", "/api/v1/runs", 201, json=spec)
    assert tour.call("POST", "/api/v1/runs", 200, json=spec)["id"] == run["id"]
    ids = {"run_id": run["id"]}
    nan = {"kind": "nan", "metric": "val_loss"}
    hook = {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s"}
    rule = {"name": "nan", "project": "p", "condition": nan, "actions": [hook]}
    rule = tour.call("POST", "/api/v1/rules", 201, json=rule)
    events_path = "/api/v1/runs/{run_id}/events"
    assert tour.call("POST", events_path, fill=ids, json={"events": BATCH})["accepted"] == 4
    alerts = tour.call("GET", "/api/v1/alerts", params={"after": 0, "wait": 10})["alerts"]
    assert alerts[0]["value"] == "NaN" and alerts[0]["run"]["id"] == run["id"]
    assert tour.call("GET", "/api/v1/rules")["rules"][0]["firings"] == 1
    one_rule = {"rule_id": rule["id"]}
    assert tour.call("GET", "/api/v1/rules/{rule_id}/deliveries", fill=one_rule)["deliveries"]
    assert tour.call("DELETE", "/api/v1/rules/{rule_id}", fill=one_rule)["id"] == rule["id"]
    assert tour.call("GET", "/api/v1/runs/{run_id}", fill=ids)["last"]["loss"] == "Infinity"
    assert tour.call("GET", "/api/v1/runs")["runs"][0]["epochs"] == 3
    assert tour.call("GET", events_path, fill=ids)["events"][1]["metrics"]["val_loss"] == "NaN"
    assert "loss" in tour.call("GET", "/api/v1/runs/{run_id}/metrics", fill=ids)["keys"]
    key = {**ids, "key": "loss"}
    series = tour.call("GET", "/api/v1/runs/{run_id}/metrics/{key}", fill=key)
    assert [point["value"] for point in series["points"]] == [1.0, "Infinity"]
    assert "loss" in tour.call("GET", "/api/v1/runs/{run_id}/export.csv", fill=ids)
    chosen = {"ids": str(run["id"])}
    extremes = tour.call("GET", "/api/v1/extremes", params=chosen)["runs"][str(run["id"])]
    assert extremes["val_loss"]["min"] == 0.5 and extremes["loss"]["max"] == "Infinity"
    assert tour.call("GET", "/api/v1/sparklines", params=chosen)["sparklines"]
    grouped = {**chosen, "key": "loss", "group_by": "tags"}
    (group,) = tour.call("GET", "/api/v1/aggregate", params=grouped)["groups"]
    assert (group["label"], group["x"], group["mean"]) == ("a", [0], [1.0])  # Infinity left out
    assert tour.call("POST", "/api/v1/runs/{run_id}/heartbeat", fill=ids)["status"] == "running"
    assert tour.call("GET", "/api/v1/runs/{run_id}/control", fill=ids)["state"] == "none"
    stop = tour.call("POST", "/api/v1/runs/{run_id}/stop", fill=ids, json={"reason": "enough"})
    assert stop["stop_requested"] is True
    tour.call("POST", "/api/v1/runs/{run_id}/control/ack", fill=ids)
    named = {"name": "toured", "project": "p"}
    assert tour.call("GET", "/api/v1/control", params=named)["state"] == "acknowledged"
    commands = "/api/v1/runs/{run_id}/commands"
    lr = {"kind": "set_learning_rate", "value": 0.01}
    command = tour.call("POST", commands, 201, fill=ids, json=lr)
    assert tour.call("GET", commands, fill=ids)["commands"][-1] == command
    pending = tour.call("GET", commands + "/pending", fill=ids, params={"wait": 0})
    assert pending["commands"][-1]["state"] == "delivered"
    one = {**ids, "command_id": command["id"]}
    applied = {"state": "applied", "epoch": 1}
    settled = tour.call("POST", commands + "/{command_id}/outcome", fill=one, json=applied)
    assert settled["epoch"] == 1
    pause = tour.call("POST", commands, 201, fill=ids, json={"kind": "pause"})
    paused = {**ids, "command_id": pause["id"]}
    cancelled = tour.call("POST", commands + "/{command_id}/cancel", fill=paused)
    assert cancelled["state"] == "cancelled"
    edit = {"name": "renamed", "tags": ["b"], "note": "*hi*", "archived": True}
    edited = tour.call("PATCH", "/api/v1/runs/{run_id}", fill=ids, json=edit)
    assert edited["name"] == "renamed" and edited["archived"] is True
    assert edited["note_html"] == "<p><em>hi</em></p>\n"
    assert tour.call("DELETE", "/api/v1/runs/{run_id}", fill=ids)["name"] == "renamed"
    stock = {"data": '{"epoch": 0, "loss": NaN}'}  # a form post, as Keras sends it
    assert tour.call("POST", "/publish/epoch/end/", data=stock)["epoch"] == 0
    assert tour.call("GET", "/api/v1/health")["status"] == "ok"
    token = tour.call("POST", "/api/v1/tokens", 201, json={"name": "first", "role": "admin"})
    admin = {"Authorization": f"Bearer {token['token']}"}
    assert [t["name"] for t in tour.call("GET", "/api/v1/tokens", headers=admin)["tokens"]] == [
        "first"
    ]
    spec = {"name": "r", "role": "read"}
    reader = tour.call("POST", "/api/v1/tokens", 201, json=spec, headers=admin)
    revoked = tour.call(
        "DELETE", "/api/v1/tokens/{token_id}", fill={"token_id": reader["id"]}, headers=admin
    )
    assert revoked["revoked_at"] is not None

    documented = {(method, path) for method, path, _ in OPERATIONS if path not in STREAMS}
    assert documented - tour.seen == set()


@pytest.mark.parametrize(
    ("method", "path", "body", "model"),
    [
        ("POST", "/api/v1/runs/{run_id}/events", {"events": BATCH}, IngestResult),
        ("GET", "/api/v1/runs/{run_id}/control", None, ControlState),
        ("GET", "/api/v1/runs/{run_id}/metrics/loss", None, MetricSeries),
    ],
)
def test_hand_encoded_answers_are_their_models(tour, method, path, body, model):
    """Routes answering orjson bytes, past FastAPI's response validation, send their model."""
    run = tour.call("POST", "/api/v1/runs", 201, json={"name": "lean"})
    if body is None:
        tour.call(
            "POST",
            "/api/v1/runs/{run_id}/events",
            fill={"run_id": run["id"]},
            json={"events": BATCH},
        )
    response = tour.client.request(method, path.format(run_id=run["id"]), json=body)
    assert response.status_code == 200, response.text
    model.model_validate_json(response.content, strict=True)


def test_error_answers_match_the_documented_schemas(tour):
    missing = {"run_id": 999_999}
    tour.call("GET", "/api/v1/runs/{run_id}", 404, fill=missing)
    tour.call("GET", "/api/v1/runs/{run_id}/control", 404, fill=missing)
    tour.call("POST", "/api/v1/runs/{run_id}/events", 404, fill=missing, json={"events": BATCH})
    tour.call("POST", "/api/v1/runs/{run_id}/events", 422, fill={"run_id": 1}, json={})
    tour.call("GET", "/api/v1/runs", 422, params={"limit": 0})
    tour.call("POST", "/publish/epoch/end/", 422, content=b"[1]")
    tour.call("GET", "/api/v1/control", 404, params={"name": "nobody"})
    tour.call("POST", "/api/v1/runs", 201, json={"project": "a", "uid": "contract-0002"})
    tour.call("POST", "/api/v1/runs", 409, json={"project": "b", "uid": "contract-0002"})
    admin = tour.call("POST", "/api/v1/tokens", 201, json={"name": "first", "role": "admin"})
    tour.call("GET", "/api/v1/runs", 401)
    spec = {"name": "reader", "role": "read"}
    auth = {"Authorization": f"Bearer {admin['token']}"}
    reader = tour.call("POST", "/api/v1/tokens", 201, json=spec, headers=auth)
    tour.call("POST", "/api/v1/tokens", 409, json=spec, headers=auth)
    auth = {"Authorization": f"Bearer {reader['token']}"}
    tour.call("POST", "/api/v1/runs", 403, json={"name": "refused"}, headers=auth)


def payloads_until_run(response):
    """`(event name, JSON data)` of a stream's messages, up to its first `run` message."""
    payloads, message = [], {}
    for line in response.iter_lines():
        if line and not line.startswith(":"):
            field, _, value = line.partition(":")
            message[field] = value.lstrip()
        elif "data" in message:
            payloads.append((message.get("event", "message"), json.loads(message["data"])))
            if payloads[-1][0] == "run":
                return payloads
            message = {}
    raise AssertionError("the stream ended before a run message")


def test_live_stream_payloads_match_their_documented_schemas(server_factory):
    server = server_factory()
    with httpx.Client(base_url=server.root, timeout=10) as client:
        run_id = create_run(client, "streamed")
        post_events(client, run_id, *BATCH)
        for path, url, events in (
            ("/api/v1/runs/{run_id}/stream", f"/api/v1/runs/{run_id}/stream", len(BATCH)),
            ("/api/v1/stream", "/api/v1/stream?after=0", 0),
        ):
            documented = answer_schema("GET", path, 200, "text/event-stream")
            schemas = {
                payload["properties"]["event"]["const"]: payload["properties"]["data"]
                for payload in documented["itemSchema"]["anyOf"]
            }
            with client.stream("GET", url) as response:
                payloads = payloads_until_run(response)
            assert [event for event, _ in payloads] == ["message"] * events + ["run"]
            for event, data in payloads:
                content = schemas[event]
                assert content["contentMediaType"] == JSON
                validator(content["contentSchema"]).validate(data)
