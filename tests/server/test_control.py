import time

import pytest

from callboard.server.auth import create_token

from .helpers import create_run, post_events, wait_until_lost


def test_stop_walks_requested_acknowledged_stopped(api):
    run_id = create_run(api)
    assert api.get(f"/api/v1/runs/{run_id}/control").json()["state"] == "none"
    requested = api.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "diverging"}).json()
    assert requested["stop_requested"] and requested["state"] == "requested"
    assert requested["reason"] == "diverging" and requested["requested_at"]
    again = api.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "other"}).json()
    assert again["requested_at"] == requested["requested_at"] and again["reason"] == "diverging"
    acked = api.post(f"/api/v1/runs/{run_id}/control/ack").json()
    assert acked["state"] == "acknowledged" and acked["acknowledged_at"]
    post_events(api, run_id, {"seq": 1, "kind": "train_end", "data": {"status": "finished"}})
    detail = api.get(f"/api/v1/runs/{run_id}").json()
    assert detail["status"] == "stopped"
    assert detail["control"]["state"] == "stopped" and detail["control"]["stopped_at"]
    kinds = [e["kind"] for e in api.get(f"/api/v1/runs/{run_id}/events").json()["events"]]
    assert kinds == [
        "stop_requested",
        "command_requested",  # POST /stop issues a stop command
        "stop_acknowledged",
        "command_applied",  # ... which the acknowledgement applies
        "train_end",
    ]


def test_stop_without_body_and_on_ended_or_missing_runs(api):
    run_id = create_run(api)
    assert api.post(f"/api/v1/runs/{run_id}/stop").status_code == 200
    ended = create_run(api)
    post_events(api, ended, {"seq": 1, "kind": "train_end", "data": {"status": "finished"}})
    refused = api.post(f"/api/v1/runs/{ended}/stop")
    assert refused.status_code == 409 and "already ended" in refused.json()["detail"]
    assert api.post("/api/v1/runs/999/stop").status_code == 404
    assert api.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "x" * 2000}).status_code == 422


def test_acknowledging_without_a_request_changes_nothing(api):
    run_id = create_run(api)
    assert api.post(f"/api/v1/runs/{run_id}/control/ack").json()["state"] == "none"


def test_control_answers_the_same_fields_as_run_detail_and_clear_errors(api):
    run_id = create_run(api)
    api.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "enough"})
    control = api.get(f"/api/v1/runs/{run_id}/control").json()
    assert control == api.get(f"/api/v1/runs/{run_id}").json()["control"]
    assert control["run_id"] == run_id and control["status"] == "running"
    missing = api.get("/api/v1/runs/999/control")
    assert missing.status_code == 404 and missing.json() == {"detail": "run 999 not found"}
    for bad_id in ("0", "x", str(2**63)):
        answer = api.get(f"/api/v1/runs/{bad_id}/control")
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == [
            "path",
            "run_id",
        ]


def ended_run(api, status, stop_first):
    run_id = create_run(api)
    if stop_first:
        assert api.post(f"/api/v1/runs/{run_id}/stop").status_code == 200
        api.post(f"/api/v1/runs/{run_id}/control/ack")
    post_events(api, run_id, {"seq": 1, "kind": "train_end", "data": {"status": status}})
    assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == status
    return run_id


@pytest.mark.parametrize(
    ("status", "stop_first"),
    [
        ("finished", False),
        ("failed", False),
        ("stopped", False),  # e.g. an early stop
        ("stopped", True),  # a remote stop (it answered 200: the request was already there)
        ("failed", True),  # crashed while stopping
    ],
)
def test_stop_of_any_ended_run_is_409(api, status, stop_first):
    run_id = ended_run(api, status, stop_first)
    before = api.get(f"/api/v1/runs/{run_id}/control").json()
    refused = api.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "again"})
    assert refused.status_code == 409
    assert refused.json() == {"detail": f"run {run_id} has already ended with status {status!r}"}
    assert api.get(f"/api/v1/runs/{run_id}/control").json() == before


def test_a_lost_run_may_be_asked_to_stop_and_sees_it_when_it_returns(api, settings):
    settings.lost_after_seconds = 0.3
    run_id = create_run(api)
    wait_until_lost(api, run_id)
    requested = api.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "gone quiet"})
    assert requested.status_code == 200 and requested.json()["state"] == "requested"
    assert api.post(f"/api/v1/runs/{run_id}/heartbeat").status_code == 200
    control = api.get(f"/api/v1/runs/{run_id}/control").json()
    assert control["status"] == "running" and control["stop_requested"]


def by_name(api, name, project="default", token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.get("/api/v1/control", params={"name": name, "project": project}, headers=headers)


def end(api, run_id, status="finished"):
    post_events(api, run_id, {"seq": 99, "kind": "train_end", "data": {"status": status}})


def test_control_by_name_follows_the_newest_live_run_of_that_name(api):
    older = create_run(api, "job", "lab")
    newer = create_run(api, "job", "lab")
    create_run(api, "job", "other")
    create_run(api, "job-2", "lab")
    api.post(f"/api/v1/runs/{older}/stop", json={"reason": "old"})
    assert by_name(api, "job", "lab").json() == api.get(f"/api/v1/runs/{newer}/control").json()
    end(api, newer)
    found = by_name(api, "job", "lab").json()
    assert found["run_id"] == older and found["stop_requested"] and found["reason"] == "old"
    end(api, older, "stopped")
    missing = by_name(api, "job", "lab")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no live run named 'job' in project 'lab'"}
    assert by_name(api, "nobody").status_code == 404
    for bad in ("", "a\x00b", "x" * 201):
        assert by_name(api, bad).status_code == 422, bad


def add_token(api, role, project=None):
    with api.app.state.database.writer() as session:
        _, secret = create_token(session, f"{role}-{project}-{time.monotonic_ns()}", role, project)
        session.commit()
    api.app.state.tokens.invalidate()
    return secret


def test_ingest_tokens_may_look_up_control_by_name_within_their_project(api):
    run_id = create_run(api, "job", "vision")
    api.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "enough"})
    create_run(api, "job", "audio")
    scoped = add_token(api, "ingest", "vision")
    for token in (scoped, add_token(api, "ingest"), add_token(api, "read", "vision")):
        answer = by_name(api, "job", "vision", token)
        assert answer.status_code == 200
        # Only the run's id and its control state: nothing an ingest token may not read.
        assert answer.json() == {**api_control(api, run_id, token), "run_id": run_id}
        assert set(answer.json()) == CONTROL_FIELDS
    refused = by_name(api, "job", "audio", scoped)
    assert refused.status_code == 403 and "limited to project 'vision'" in refused.json()["detail"]
    assert by_name(api, "job", "vision").status_code == 401
    assert by_name(api, "job", "vision", "cb_wrong").status_code == 401
    # The run listing stays closed to ingest tokens.
    assert api.get("/api/v1/runs", headers={"Authorization": f"Bearer {scoped}"}).status_code == 403


CONTROL_FIELDS = {
    "run_id",
    "status",
    "stop_requested",
    "state",
    "reason",
    "requested_at",
    "acknowledged_at",
    "stopped_at",
}


def api_control(api, run_id, token):
    headers = {"Authorization": f"Bearer {token}"}
    return api.get(f"/api/v1/runs/{run_id}/control", headers=headers).json()
