"""Managing runs over REST: rename, tags, note, archive, restore, delete (SQLite, PostgreSQL).

Each edit is a server event on the run naming who made it; archived runs leave the
default list; a deletion takes every row of the run, in every table, with it.
"""

import time

import pytest
from sqlalchemy import func, select

from callboard.server.store.models import (
    Command,
    Event,
    MetricPoint,
    MetricRollup,
    RuleFiring,
    RuleState,
    Run,
    WebhookDelivery,
)
from tests.server.helpers import create_run, epoch_event, post_events

RUN_TABLES = (Run, Event, MetricPoint, MetricRollup, Command, RuleState, RuleFiring)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def patch(api, run_id, headers=None, **fields):
    return api.patch(f"/api/v1/runs/{run_id}", json=fields, headers=headers)


def patched(api, run_id, **fields):
    response = patch(api, run_id, **fields)
    assert response.status_code == 200, response.text
    return response.json()


def server_events(api, run_id, headers=None):
    answer = api.get(f"/api/v1/runs/{run_id}/events", headers=headers).json()["events"]
    return [(event["kind"], event["data"]) for event in answer if event["seq"] is None]


def listed(api, **params):
    return [run["name"] for run in api.get("/api/v1/runs", params=params).json()["runs"]]


def test_each_field_changes_only_itself_and_is_an_event(api):
    run_id = create_run(api, "first-name", tags=["a", "b"])
    renamed = patched(api, run_id, name="better name")
    assert (renamed["name"], renamed["tags"], renamed["note"]) == ("better name", ["a", "b"], None)
    tagged = patched(api, run_id, tags=["b", "c"])
    assert (tagged["name"], tagged["tags"]) == ("better name", ["b", "c"])
    noted = patched(api, run_id, note="**lr** 3e-4")
    assert noted["note"] == "**lr** 3e-4"
    assert noted["note_html"] == "<p><strong>lr</strong> 3e-4</p>\n"
    assert patched(api, run_id, archived=True)["archived"] is True
    restored = patched(api, run_id, archived=False)
    assert restored["archived"] is False and restored["note"] == "**lr** 3e-4"
    assert patched(api, run_id, note="")["note"] is None
    by = "open mode"
    assert server_events(api, run_id) == [
        ("renamed", {"from": "first-name", "to": "better name", "by": by}),
        ("tagged", {"added": ["c"], "removed": ["a"], "tags": ["b", "c"], "by": by}),
        ("noted", {"chars": 11, "by": by}),
        ("archived", {"by": by}),
        ("unarchived", {"by": by}),
        ("noted", {"chars": 0, "by": by}),
    ]


def test_a_field_set_to_what_it_is_changes_nothing(api):
    run_id = create_run(api, "same", tags=["x"])
    before = api.get(f"/api/v1/runs/{run_id}").json()
    after = patched(api, run_id, name="same", tags=["x"], archived=False, note=None)
    assert after["updated_at"] == before["updated_at"]
    assert server_events(api, run_id) == []


def test_the_note_is_markdown_rendered_safely(api):
    run_id = create_run(api, "noted")
    note = "# Hi\n<script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(2)>"
    html = patched(api, run_id, note=note)["note_html"]
    assert "<h1>Hi</h1>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
    assert "<img" not in html and 'href="javascript' not in html


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "bad\nname"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": None}, "name"),
        ({"tags": "a"}, "tags"),
        ({"tags": ["x" * 101]}, "tags"),
        ({"tags": [str(i) for i in range(51)]}, "tags"),
        ({"note": "x" * 20_001}, "note"),
        ({"note": 3}, "note"),
        ({"archived": "yes"}, "archived"),
        ({"archived": 1}, "archived"),
        ({"status": "finished"}, "status"),
    ],
)
def test_a_bad_field_is_a_422_naming_it(api, body, field):
    run_id = create_run(api, "strict")
    response = api.patch(f"/api/v1/runs/{run_id}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["body", field]
    assert api.get(f"/api/v1/runs/{run_id}").json()["name"] == "strict"


def test_a_missing_run_is_a_404(api):
    assert patch(api, 999_999, name="x").status_code == 404
    assert api.delete("/api/v1/runs/999999").status_code == 404


def test_archived_runs_leave_the_default_list_and_come_back(api):
    kept, archived = create_run(api, "kept"), create_run(api, "shelved")
    patched(api, archived, archived=True)
    assert listed(api) == ["kept"]
    assert listed(api, archived="true") == ["shelved"]
    assert api.get("/api/v1/runs").json()["total"] == 1
    assert api.get(f"/api/v1/runs/{archived}").json()["archived"] is True  # still readable
    patched(api, archived, archived=False)
    assert listed(api) == ["shelved", "kept"]
    assert listed(api, archived="true") == []
    assert kept


@pytest.fixture
def tokens(api):
    """A bearer header per role (unscoped), and a control token scoped to project `team-a`."""
    root = api.post("/api/v1/tokens", json={"name": "admin", "role": "admin"}).json()
    headers = {"admin": bearer(root["token"])}
    for name, role, project in [
        ("read", "read", None),
        ("control", "control", None),
        ("ingest", "ingest", None),
        ("a-control", "control", "team-a"),
    ]:
        spec = {"name": name, "role": role, "project": project}
        made = api.post("/api/v1/tokens", json=spec, headers=headers["admin"])
        assert made.status_code == 201, made.text
        headers[name] = bearer(made.json()["token"])
    return headers


def test_who_may_edit_and_delete(api, tokens):
    admin = tokens["admin"]
    make = {"name": "a-run", "project": "team-a", "uid": "manage-roles-a"}
    mine = api.post("/api/v1/runs", json=make, headers=admin).json()["id"]
    make = {"name": "b-run", "project": "team-b", "uid": "manage-roles-b"}
    other = api.post("/api/v1/runs", json=make, headers=admin).json()["id"]
    assert patch(api, mine, tokens["read"], name="x").status_code == 403
    assert patch(api, mine, tokens["ingest"], name="x").status_code == 403
    assert patch(api, mine, tokens["control"], name="by-control").status_code == 200
    assert patch(api, mine, tokens["a-control"], name="by-a").status_code == 200
    assert patch(api, other, tokens["a-control"], name="x").status_code == 404
    assert patch(api, other, tokens["a-control"], bad="body").status_code == 404  # before the body
    events = server_events(api, mine, admin)
    assert [data["by"] for kind, data in events] == ["control", "a-control"]
    for role in ("read", "ingest", "control", "a-control"):
        assert api.delete(f"/api/v1/runs/{mine}", headers=tokens[role]).status_code == 403, role
    assert api.get(f"/api/v1/runs/{mine}", headers=admin).json()["name"] == "by-a"
    gone = api.delete(f"/api/v1/runs/{mine}", headers=admin)
    assert gone.status_code == 200 and gone.json()["name"] == "by-a"
    assert api.get(f"/api/v1/runs/{mine}", headers=admin).status_code == 404
    assert api.get(f"/api/v1/runs/{other}", headers=admin).status_code == 200


def rows_of(database, run_id):
    """How many rows each table holds of run `run_id` (webhook deliveries through firings)."""
    with database.reader() as session:
        counts = {
            model.__tablename__: session.scalar(
                select(func.count())
                .select_from(model)
                .where((model.id if model is Run else model.run_id) == run_id)
            )
            for model in RUN_TABLES
        }
        counts["webhook_deliveries"] = session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .join(RuleFiring, RuleFiring.id == WebhookDelivery.firing_id)
            .where(RuleFiring.run_id == run_id)
        )
    return counts


def filled_run(api, name):
    """A run with events, points, rollups, a command, and a rule's state, firing and webhook."""
    run_id = create_run(api, name, project="deleting")
    post_events(api, run_id, *(epoch_event(seq, seq - 1, loss=10.0 + seq) for seq in range(1, 21)))
    assert api.post(f"/api/v1/runs/{run_id}/commands", json={"kind": "pause"}).status_code == 201
    return run_id


def test_delete_takes_every_row_of_the_run_and_nothing_else(api):
    rule = {
        "name": "loss high",
        "project": "deleting",
        "condition": {"kind": "above", "metric": "loss", "value": 5},
        "actions": [{"kind": "webhook", "url": "http://127.0.0.1:9/hook"}],
    }
    assert api.post("/api/v1/rules", json=rule).status_code == 201
    doomed, kept = filled_run(api, "doomed"), filled_run(api, "kept")
    database = api.app.state.database
    deadline = time.monotonic() + 20
    while not all(rows_of(database, run)["webhook_deliveries"] for run in (doomed, kept)):
        assert time.monotonic() < deadline, rows_of(database, doomed)
        time.sleep(0.05)
    before = rows_of(database, doomed)
    assert all(before.values()), before  # a row in every table
    assert api.delete(f"/api/v1/runs/{doomed}").status_code == 200
    assert set(rows_of(database, doomed).values()) == {0}
    assert rows_of(database, kept) == before
    assert listed(api) == ["kept"] and listed(api, archived="true") == []
