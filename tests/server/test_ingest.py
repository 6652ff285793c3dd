from unittest import mock

from sqlalchemy import create_engine

from callboard.server.store import bulk_insert
from callboard.server.store.models import Base, MetricPoint

from .helpers import create_run, epoch_event, post_events, wait_until_lost


def test_creating_a_run_is_idempotent_on_its_uid(api):
    spec = {
        "uid": "client-uid-1",
        "name": "a",
        "project": "p",
        "config": {"lr": 0.01},
        "tags": ["x"],
        "host": "gpu1",
        "versions": {"keras": "3.15"},
    }
    first = api.post("/api/v1/runs", json=spec)
    again = api.post("/api/v1/runs", json=spec)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    run = api.get(f"/api/v1/runs/{first.json()['id']}").json()
    assert (run["config"], run["tags"], run["host"], run["project"]) == (
        {"lr": 0.01},
        ["x"],
        "gpu1",
        "p",
    )
    assert run["versions"] == {"keras": "3.15"}
    assert api.get("/api/v1/runs").json()["total"] == 1


def test_a_run_without_a_name_gets_one(api):
    run = api.post("/api/v1/runs", json={}).json()
    assert run["name"].startswith("run-") and run["status"] == "running"


def test_a_retried_batch_is_stored_once(api):
    run_id = create_run(api)
    batch = [epoch_event(1, 0, loss=0.9), epoch_event(2, 1, loss=0.8)]
    assert post_events(api, run_id, *batch)["accepted"] == 2
    again = post_events(api, run_id, *batch, epoch_event(3, 2, loss=0.7))
    assert (again["accepted"], again["duplicates"]) == (1, 2)
    events = api.get(f"/api/v1/runs/{run_id}/events").json()["events"]
    assert [e["seq"] for e in events] == [1, 2, 3]
    points = api.get(f"/api/v1/runs/{run_id}/metrics/loss").json()["points"]
    assert [(p["step"], p["value"]) for p in points] == [(0, 0.9), (1, 0.8), (2, 0.7)]


def test_non_finite_values_are_kept(api):
    run_id = create_run(api)
    post_events(api, run_id, epoch_event(1, 0, loss="NaN", a="Infinity", b="-Infinity", c=1))
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert run["last"] == {"loss": "NaN", "a": "Infinity", "b": "-Infinity", "c": 1.0}
    points = api.get(f"/api/v1/runs/{run_id}/metrics/b").json()["points"]
    assert points[0]["value"] == "-Infinity"


def test_run_status_follows_train_end(api):
    run_id = create_run(api)
    post_events(
        api,
        run_id,
        {"seq": 1, "kind": "train_begin", "data": {"epochs": 5}},
        epoch_event(2, 0, loss=1.0),
    )
    detail = api.get(f"/api/v1/runs/{run_id}").json()
    assert (detail["status"], detail["epochs"], detail["epochs_done"]) == ("running", 5, 1)
    post_events(
        api,
        run_id,
        {"seq": 3, "kind": "train_end", "data": {"status": "failed", "error": "ValueError: boom"}},
    )
    detail = api.get(f"/api/v1/runs/{run_id}").json()
    assert detail["status"] == "failed" and detail["error"] == "ValueError: boom"
    assert detail["ended_at"] is not None


def test_bad_batches_get_a_clear_422_and_store_nothing(api):
    run_id = create_run(api)
    bad_batches = [
        ([{"seq": 1, "kind": "epoch_end", "metrics": {"loss": "abc"}}], "loss"),
        ([{"seq": 0, "kind": "epoch_end"}], "seq"),
        ([{"seq": 1, "kind": "Bad Kind!"}], "kind"),
        ([{"seq": 1, "kind": "epoch_end", "metrics": {"loss": True}}], "loss"),
        ([{"seq": 1, "kind": "epoch_end", "surprise": 1}], "surprise"),
        ([epoch_event(1, 0, loss=1.0), {"seq": 2, "kind": "epoch_end", "epoch": -1}], "epoch"),
    ]
    for events, field in bad_batches:
        response = api.post(f"/api/v1/runs/{run_id}/events", json={"events": events})
        assert response.status_code == 422, events
        assert field in response.text
    assert api.post(f"/api/v1/runs/{run_id}/events", content=b"{not json").status_code == 422
    assert api.get(f"/api/v1/runs/{run_id}/events").json()["events"] == []
    assert api.get(f"/api/v1/runs/{run_id}").json()["epochs_done"] == 0


def test_posting_to_a_missing_run_is_404(api):
    response = api.post("/api/v1/runs/999/events", json={"events": [epoch_event(1, 0, l=1)]})
    assert response.status_code == 404
    assert response.json() == {"detail": "run 999 not found"}


def test_a_lost_run_that_reports_again_is_running(api, settings):
    settings.lost_after_seconds = 0.3
    run_id = create_run(api)
    wait_until_lost(api, run_id)
    kinds = [e["kind"] for e in api.get(f"/api/v1/runs/{run_id}/events").json()["events"]]
    assert kinds == ["lost"]
    post_events(api, run_id, epoch_event(1, 0, loss=1.0))
    assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == "running"


def test_bodies_that_are_not_json_text_get_a_422(api):
    # FastAPI echoes a body it cannot parse back in its 422, and failed (500) on bytes
    # that are not UTF-8; the ingest route answers 422 without echoing the body.
    run_id = create_run(api)
    url = f"/api/v1/runs/{run_id}/events"
    for content, content_type in [
        (b"\xff\xfe{", "application/json"),
        (b"\xff\xfe", "text/plain"),
        (b'{"events": []}', ""),
        (b"", "application/json"),
    ]:
        response = api.post(url, content=content, headers={"content-type": content_type})
        assert response.status_code == 422, (content, content_type)
        assert response.json()["detail"][0]["loc"][0] == "body"


def test_numbers_beyond_their_columns_get_a_422(api):
    run_id = create_run(api)
    for field, value in [("seq", 2**63), ("step", 2**63), ("epoch", 2**31)]:
        event = {"seq": 1, "kind": "metrics", field: value}
        response = api.post(f"/api/v1/runs/{run_id}/events", json={"events": [event]})
        assert response.status_code == 422 and field in response.text, field
    for bad_id in ("0", "x", str(2**63)):
        response = api.post(f"/api/v1/runs/{bad_id}/events", json={"events": []})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "run_id"]


def test_a_batch_out_of_step_order_keeps_each_metrics_latest_step(api):
    run_id = create_run(api)
    post_events(
        api,
        run_id,
        {"seq": 1, "kind": "metrics", "step": 10, "metrics": {"loss": 0.1, "acc": "NaN"}},
        {"seq": 2, "kind": "metrics", "step": 5, "metrics": {"loss": 0.5, "lr": 1.0}},
        {"seq": 3, "kind": "metrics", "step": 10, "metrics": {"acc": 0.9}},
    )
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert run["last"] == {"acc": 0.9, "loss": 0.1, "lr": 1.0}


def test_a_bulk_insert_is_compiled_once_whatever_its_row_counts():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    points = bulk_insert.BulkInsert(MetricPoint.__table__)
    counts = (4, 37, 1, points.rows_per_statement + 3)
    with (
        mock.patch.object(
            bulk_insert, "driver_statement", wraps=bulk_insert.driver_statement
        ) as compiled,
        engine.begin() as connection,
    ):
        cursor = connection.connection.cursor()
        for count in counts:
            rows = [(1, f"key{count}", step, None, 0.5, 1.0) for step in range(count)]
            points.insert(cursor, connection.dialect, rows)
        stored = cursor.execute("SELECT key, COUNT(*) FROM metric_points GROUP BY key").fetchall()
    assert compiled.call_count == 1
    assert dict(stored) == {f"key{count}": count for count in counts}
