"""Remote commands through the REST API (SQLite and PostgreSQL): issue, list, deliver,
settle, cancel; who may; what they do to the run and its stop; their events."""

import json
import time

import pytest

from callboard.server.api.schemas import MAX_ROW_ID
from callboard.server.auth import create_token
from callboard.server.commands import KINDS

from .helpers import create_run, post_events, wait_until_lost


def issue(api, run_id, kind, headers=None, **fields):
    return api.post(
        f"/api/v1/runs/{run_id}/commands", json={"kind": kind, **fields}, headers=headers
    )


def issued(api, run_id, kind, **fields):
    answer = issue(api, run_id, kind, **fields)
    assert answer.status_code == 201, answer.text
    return answer.json()


def pending(api, run_id, after=0, headers=None):
    path = f"/api/v1/runs/{run_id}/commands/pending"
    answer = api.get(path, params={"after": after, "wait": 0}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["commands"]


def outcome(api, run_id, command_id, state, **fields):
    path = f"/api/v1/runs/{run_id}/commands/{command_id}/outcome"
    return api.post(path, json={"state": state, **fields})


def cancel(api, run_id, command_id, headers=None):
    return api.post(f"/api/v1/runs/{run_id}/commands/{command_id}/cancel", headers=headers)


def commands(api, run_id):
    return api.get(f"/api/v1/runs/{run_id}/commands").json()["commands"]


def run_of(api, run_id):
    return api.get(f"/api/v1/runs/{run_id}").json()


def events(api, run_id, prefix="command_"):
    found = api.get(f"/api/v1/runs/{run_id}/events").json()["events"]
    return [(event["kind"], event["data"]) for event in found if event["kind"].startswith(prefix)]


def add_token(api, role, project=None):
    name = f"{role}-{project}-{time.monotonic_ns()}"
    with api.app.state.database.writer() as session:
        _, secret = create_token(session, name, role, project)
        session.commit()
    api.app.state.tokens.invalidate()
    return name, {"Authorization": f"Bearer {secret}"}


def test_every_kind_is_stored_requested_and_listed_oldest_first(api):
    run_id = create_run(api)
    before = time.time()
    made = []
    for kind in KINDS:
        value = 0.01 if kind == "set_learning_rate" else None
        command = issued(api, run_id, kind, value=value, reason=f"why {kind}")
        assert command["run_id"] == run_id and command["kind"] == kind
        assert command["value"] == value and command["reason"] == f"why {kind}"
        assert command["state"] == "requested" and command["requested_by"] == "open mode"
        assert command["requested_at"] >= before
        assert command["delivered_at"] is command["settled_at"] is command["detail"] is None
        assert command["epoch"] is command["step"] is None
        made.append(command)
    listed = commands(api, run_id)
    assert listed == made and [c["id"] for c in listed] == sorted(c["id"] for c in made)
    assert commands(api, create_run(api)) == []


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"kind": "explode"}, "kind", "stop"),
        ({}, "kind", "Field required"),
        ({"kind": "set_learning_rate"}, "value", "needs a value"),
        ({"kind": "set_learning_rate", "value": 0}, "value", "finite number > 0"),
        ({"kind": "set_learning_rate", "value": -0.1}, "value", "finite number > 0"),
        ({"kind": "set_learning_rate", "value": "0.1"}, "value", "valid number"),
        ({"kind": "set_learning_rate", "value": True}, "value", "valid number"),
        ({"kind": "set_learning_rate", "value": None}, "value", "needs a value"),
        ({"kind": "pause", "value": 1.0}, "value", "takes no value"),
        ({"kind": "stop", "value": 0}, "value", "takes no value"),
        ({"kind": "pause", "target": "gpu0"}, "target", "Extra inputs"),
        ({"kind": "pause", "reason": "x" * 1001}, "reason", "at most 1000"),
    ],
)
def test_a_bad_command_is_422_naming_the_field_and_stores_nothing(api, body, field, says):
    run_id = create_run(api)
    refused = api.post(f"/api/v1/runs/{run_id}/commands", json=body)
    assert refused.status_code == 422, refused.text
    errors = refused.json()["detail"]
    assert [error["loc"] for error in errors] == [["body", field]], errors
    assert says in errors[0]["msg"]
    assert commands(api, run_id) == []


@pytest.mark.parametrize("raw", [b"Infinity", b"NaN", b"1e999"])
def test_a_non_finite_learning_rate_is_422(api, raw):
    run_id = create_run(api)
    body = b'{"kind": "set_learning_rate", "value": ' + raw + b"}"
    refused = api.post(
        f"/api/v1/runs/{run_id}/commands",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "value"]
    json.dumps(refused.json())  # the echoed input is strict JSON


@pytest.mark.parametrize("status", ["finished", "failed", "stopped"])
def test_an_ended_run_takes_no_command(api, status):
    run_id = create_run(api)
    post_events(api, run_id, {"seq": 1, "kind": "train_end", "data": {"status": status}})
    refused = issue(api, run_id, "checkpoint")
    assert refused.status_code == 409
    assert refused.json() == {"detail": f"run {run_id} has already ended with status {status!r}"}
    assert commands(api, run_id) == []


def test_missing_runs_and_commands_are_404(api):
    run_id = create_run(api)
    other = create_run(api)
    command = issued(api, run_id, "pause")
    assert issue(api, 999_999, "pause").json() == {"detail": "run 999999 not found"}
    assert api.get("/api/v1/runs/999999/commands").status_code == 404
    assert api.get("/api/v1/runs/999999/commands/pending?wait=0").status_code == 404
    for in_run, command_id in ((other, command["id"]), (run_id, 999_999)):
        assert cancel(api, in_run, command_id).status_code == 404
        answer = outcome(api, in_run, command_id, "applied")
        assert answer.json() == {"detail": f"command {command_id} not found in run {in_run}"}
    assert commands(api, run_id)[0]["state"] == "requested"


def test_only_control_and_admin_tokens_issue_and_cancel_in_their_projects(api):
    run_id = create_run(api, project="vision")
    _, reader = add_token(api, "read")
    _, ingester = add_token(api, "ingest")
    controller_name, controller = add_token(api, "control")
    _, admin = add_token(api, "admin")
    _, outsider = add_token(api, "control", "audio")
    insider_name, insider = add_token(api, "control", "vision")
    for refused in (reader, ingester):
        assert issue(api, run_id, "pause", headers=refused).status_code == 403
    answer = issue(api, run_id, "pause", headers=outsider)
    assert answer.status_code == 404 and answer.json() == {"detail": f"run {run_id} not found"}
    by_controller = issue(api, run_id, "pause", headers=controller).json()
    assert by_controller["requested_by"] == controller_name
    by_insider = issue(api, run_id, "resume", headers=insider).json()
    assert by_insider["requested_by"] == insider_name
    assert issue(api, run_id, "checkpoint", headers=admin).status_code == 201
    assert cancel(api, run_id, by_controller["id"], headers=ingester).status_code == 403
    assert cancel(api, run_id, by_controller["id"], headers=outsider).status_code == 404
    assert cancel(api, run_id, by_controller["id"], headers=insider).status_code == 200
    path = f"/api/v1/runs/{run_id}/commands"
    assert api.get(path).status_code == 401
    for allowed in (reader, ingester, controller, admin, insider):
        assert len(api.get(path, headers=allowed).json()["commands"]) == 3
    assert api.get(path, headers=outsider).status_code == 404
    poll = f"{path}/pending?wait=0"
    for refused in (reader, controller):
        assert api.get(poll, headers=refused).status_code == 403
    assert len(api.get(poll, headers=ingester).json()["commands"]) == 2
    settle = f"{path}/{by_insider['id']}/outcome"
    assert api.post(settle, json={"state": "applied"}, headers=controller).status_code == 403
    assert api.post(settle, json={"state": "applied"}, headers=ingester).status_code == 200


def test_pending_delivers_once_and_redelivers_what_is_unsettled(api):
    run_id = create_run(api)
    first, second, third = (issued(api, run_id, kind) for kind in ("pause", "resume", "stop"))
    answered = pending(api, run_id)
    assert [c["id"] for c in answered] == [first["id"], second["id"], third["id"]]
    assert all(c["state"] == "delivered" and c["delivered_at"] for c in answered)
    assert [c["id"] for c in pending(api, run_id, after=first["id"])] == [second["id"], third["id"]]
    assert outcome(api, run_id, second["id"], "applied").status_code == 200
    again = pending(api, run_id)  # a new poll from the start: the unsettled ones only
    assert [c["id"] for c in again] == [first["id"], third["id"]]
    assert [c["delivered_at"] for c in again] == [
        answered[0]["delivered_at"],
        answered[2]["delivered_at"],
    ]
    assert pending(api, run_id, after=third["id"]) == []
    assert pending(api, run_id, after=MAX_ROW_ID) == []  # the largest id: no 500
    path = f"/api/v1/runs/{run_id}/commands/pending"
    for after in (-1, MAX_ROW_ID + 1, 2**63, "x"):
        refused = api.get(path, params={"after": after, "wait": 0})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "after"
    assert commands(api, run_id)[1]["state"] == "applied"


def test_an_outcome_settles_once_and_conflicting_ones_are_409(api):
    run_id = create_run(api)
    post_events(api, run_id, {"seq": 1, "kind": "epoch_end", "epoch": 2, "step": 30})
    lr = issued(api, run_id, "set_learning_rate", value=0.001)
    applied = outcome(api, run_id, lr["id"], "applied", detail="lr 0.01 -> 0.001", epoch=2, step=31)
    assert applied.status_code == 200
    settled = applied.json()
    assert settled["state"] == "applied" and settled["detail"] == "lr 0.01 -> 0.001"
    assert (settled["epoch"], settled["step"]) == (2, 31) and settled["settled_at"]
    same = outcome(api, run_id, lr["id"], "applied", detail="again", epoch=3)
    assert same.status_code == 200 and same.json() == settled
    conflict = outcome(api, run_id, lr["id"], "refused", detail="no")
    assert conflict.status_code == 409 and "already applied" in conflict.json()["detail"]
    assert cancel(api, run_id, lr["id"]).status_code == 409
    checkpoint = issued(api, run_id, "checkpoint")
    refused = outcome(api, run_id, checkpoint["id"], "refused", detail="no ModelCheckpoint")
    assert refused.json()["state"] == "refused" and refused.json()["detail"] == "no ModelCheckpoint"
    assert outcome(api, run_id, checkpoint["id"], "applied").status_code == 409
    bad = outcome(api, run_id, checkpoint["id"], "delivered")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "state"]
    long = outcome(api, run_id, issued(api, run_id, "pause")["id"], "refused", detail="x" * 9000)
    assert long.status_code == 200 and len(long.json()["detail"]) == 4000
    edge = {"epoch": 2**31 - 1, "step": 2**63 - 1}  # the columns' largest: no 500
    assert (
        outcome(api, run_id, issued(api, run_id, "pause")["id"], "applied", **edge).json()["step"]
        == 2**63 - 1
    )
    for field, value in (("epoch", 2**31), ("step", 2**63), ("epoch", -1), ("extra", 1)):
        refused = outcome(api, run_id, checkpoint["id"], "refused", **{field: value})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", field]


def test_cancel_withdraws_an_unsettled_command_once(api):
    run_id = create_run(api)
    command = issued(api, run_id, "checkpoint")
    assert pending(api, run_id)[0]["state"] == "delivered"
    cancelled = cancel(api, run_id, command["id"])
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled" and cancelled.json()["settled_at"]
    assert cancel(api, run_id, command["id"]).json() == cancelled.json()
    assert pending(api, run_id) == []
    for state in ("applied", "refused"):
        late = outcome(api, run_id, command["id"], state)
        assert late.status_code == 409 and "cancelled" in late.json()["detail"]


def test_pause_and_resume_applied_change_the_runs_status(api):
    run_id = create_run(api)
    pause = issued(api, run_id, "pause")
    assert run_of(api, run_id)["status"] == "running"  # until the training applies it
    outcome(api, run_id, pause["id"], "applied", epoch=0, step=5)
    assert run_of(api, run_id)["status"] == "paused"
    listed = api.get("/api/v1/runs", params={"status": "paused"}).json()["runs"]
    assert [run["id"] for run in listed] == [run_id]
    assert api.post(f"/api/v1/runs/{run_id}/heartbeat").json() == {"status": "paused"}
    post_events(api, run_id, {"seq": 1, "kind": "batch_end", "step": 5})
    assert run_of(api, run_id)["status"] == "paused"  # events of a paused run keep it paused
    assert issued(api, run_id, "checkpoint")["state"] == "requested"  # a paused run takes them
    refused = issued(api, run_id, "resume")
    outcome(api, run_id, refused["id"], "refused", detail="busy")
    assert run_of(api, run_id)["status"] == "paused"
    outcome(api, run_id, issued(api, run_id, "resume")["id"], "applied")
    assert run_of(api, run_id)["status"] == "running"


def test_a_paused_run_that_heartbeats_is_never_lost_but_a_silent_one_is(api, settings):
    settings.lost_after_seconds = 1.0
    paused = create_run(api, "paused")
    outcome(api, paused, issued(api, paused, "pause")["id"], "applied")
    canary = create_run(api, "canary")  # silent from the start: lost after a sweep past 1 s
    deadline = time.monotonic() + 10
    while run_of(api, canary)["status"] != "lost":  # heartbeats all along, as a paused client
        assert time.monotonic() < deadline, "the sweeper never marked the canary lost"
        assert api.post(f"/api/v1/runs/{paused}/heartbeat").json() == {"status": "paused"}
        time.sleep(0.05)
    assert run_of(api, paused)["status"] == "paused"
    wait_until_lost(api, paused)  # heartbeats stopped: lost like a silent running run
    assert api.post(f"/api/v1/runs/{paused}/heartbeat").json() == {"status": "paused"}
    assert run_of(api, paused)["status"] == "paused"  # back as it was: paused
    wait_until_lost(api, canary)
    assert api.post(f"/api/v1/runs/{canary}/heartbeat").json() == {"status": "running"}


def control(api, run_id):
    return api.get(f"/api/v1/runs/{run_id}/control").json()


def test_post_stop_issues_a_stop_command_and_ack_applies_it(api):
    run_id = create_run(api)
    asked = api.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "diverging"}).json()
    assert asked["state"] == "requested"
    api.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "twice"})
    (stop,) = commands(api, run_id)  # asking again issues no second command
    assert (stop["kind"], stop["reason"], stop["state"]) == ("stop", "diverging", "requested")
    assert stop["requested_by"] == "open mode"
    assert control(api, run_id)["stop_requested"] is True
    assert api.post(f"/api/v1/runs/{run_id}/control/ack").json()["state"] == "acknowledged"
    acknowledged = commands(api, run_id)[0]
    assert acknowledged["state"] == "applied" and acknowledged["epoch"] is None
    # A client that reports too (after its acknowledgement) says where the stop took effect,
    # once; a refusal now conflicts.
    reported = outcome(api, run_id, stop["id"], "applied", epoch=3, step=40, detail="at batch 4")
    assert reported.status_code == 200
    assert (reported.json()["epoch"], reported.json()["step"]) == (3, 40)
    assert reported.json()["settled_at"] == acknowledged["settled_at"]
    again = outcome(api, run_id, stop["id"], "applied", epoch=9, step=99)
    assert again.json() == reported.json()
    assert outcome(api, run_id, stop["id"], "refused").status_code == 409
    post_events(api, run_id, {"seq": 1, "kind": "train_end", "data": {"status": "finished"}})
    assert run_of(api, run_id)["status"] == "stopped"


@pytest.mark.parametrize("kind", ["stop", "stop_after_epoch"])
def test_an_applied_stop_acknowledges_the_runs_stop(api, kind):
    run_id = create_run(api)
    command = issued(api, run_id, kind, reason="enough")
    assert control(api, run_id)["stop_requested"] is (kind == "stop")  # old clients poll it
    outcome(api, run_id, command["id"], "applied", epoch=4)
    state = control(api, run_id)
    assert state["state"] == "acknowledged" and state["reason"] == "enough"
    post_events(api, run_id, {"seq": 1, "kind": "train_end", "data": {"status": "finished"}})
    assert run_of(api, run_id)["status"] == "stopped"


def test_cancelling_the_last_waiting_stop_withdraws_the_stop(api):
    run_id = create_run(api)
    first, second = issued(api, run_id, "stop"), issued(api, run_id, "stop")
    cancel(api, run_id, first["id"])
    assert control(api, run_id)["state"] == "requested"  # the other stop still waits
    cancel(api, run_id, second["id"])
    assert control(api, run_id)["state"] == "none"
    acknowledged = create_run(api)
    stop = issued(api, acknowledged, "stop")
    api.post(f"/api/v1/runs/{acknowledged}/control/ack")
    assert cancel(api, acknowledged, stop["id"]).status_code == 409  # ack applied it


def test_each_step_of_a_command_is_an_event_of_the_run(api):
    run_id = create_run(api)
    lr = issued(api, run_id, "set_learning_rate", value=0.5, reason="warm")
    outcome(api, run_id, lr["id"], "applied", detail="set", epoch=1, step=9)
    checkpoint = issued(api, run_id, "checkpoint")
    outcome(api, run_id, checkpoint["id"], "refused", detail="no path")
    paused = issued(api, run_id, "pause")
    cancel(api, run_id, paused["id"])
    assert events(api, run_id) == [
        (
            "command_requested",
            {
                "command_id": lr["id"],
                "kind": "set_learning_rate",
                "value": 0.5,
                "reason": "warm",
                "by": "open mode",
            },
        ),
        (
            "command_applied",
            {
                "command_id": lr["id"],
                "kind": "set_learning_rate",
                "value": 0.5,
                "detail": "set",
                "epoch": 1,
                "step": 9,
            },
        ),
        (
            "command_requested",
            {
                "command_id": checkpoint["id"],
                "kind": "checkpoint",
                "value": None,
                "reason": None,
                "by": "open mode",
            },
        ),
        (
            "command_refused",
            {
                "command_id": checkpoint["id"],
                "kind": "checkpoint",
                "value": None,
                "detail": "no path",
                "epoch": None,
                "step": None,
            },
        ),
        (
            "command_requested",
            {
                "command_id": paused["id"],
                "kind": "pause",
                "value": None,
                "reason": None,
                "by": "open mode",
            },
        ),
        ("command_cancelled", {"command_id": paused["id"], "kind": "pause"}),
    ]
