import csv
import io
import math

import keras
import numpy as np

from callboard.server.store.series import ROLLUP_ABOVE_POINTS
from callboard.server.store.storable import encode_number

from .helpers import create_run, epoch_event, post_events


def test_runs_list_filters_sorts_and_pages(api):
    a = create_run(api, "alpha", "vision", tags=["baseline", "gpu"])
    b = create_run(api, "beta", "vision")
    c = create_run(api, "alphabet", "nlp", tags=["gpu"])
    post_events(api, b, {"seq": 1, "kind": "train_end", "data": {"status": "finished"}})

    def ids(**params):
        return [r["id"] for r in api.get("/api/v1/runs", params=params).json()["runs"]]

    assert ids() == [c, b, a]
    assert ids(project="vision") == [b, a]
    assert ids(name="alpha") == [a]
    assert ids(q="alpha") == [c, a]
    assert ids(status="finished") == [b]
    assert ids(tag="gpu") == [c, a]
    assert ids(tag="baseline") == [a]
    assert ids(sort="name") == [a, c, b]
    page = api.get("/api/v1/runs", params={"limit": 2, "offset": 2}).json()
    assert (page["total"], [r["id"] for r in page["runs"]]) == (3, [a])
    assert api.get("/api/v1/runs", params={"status": "bogus"}).status_code == 422
    assert api.get("/api/v1/runs", params={"limit": 0}).status_code == 422
    # An offset past 64 bits failed in the database (500) before it was bounded.
    assert api.get("/api/v1/runs", params={"offset": 2**63}).status_code == 422


def test_run_detail_and_metric_keys(api):
    run_id = create_run(api, "detail", config={"lr": 0.1, "layers": [64, 32]})
    post_events(
        api,
        run_id,
        epoch_event(1, 0, loss=1.0, val_loss=1.5),
        epoch_event(2, 1, loss=0.5, val_loss=0.9),
        {"seq": 3, "kind": "batch_end", "epoch": 2, "step": 250, "metrics": {"batch/loss": 0.4}},
    )
    detail = api.get(f"/api/v1/runs/{run_id}").json()
    assert detail["epochs_done"] == 2 and detail["last_epoch"] == 1
    assert detail["last"] == {"batch/loss": 0.4, "loss": 0.5, "val_loss": 0.9}
    assert detail["config"] == {"lr": 0.1, "layers": [64, 32]}
    assert api.get(f"/api/v1/runs/{run_id}/metrics").json()["keys"] == [
        "batch/loss",
        "loss",
        "val_loss",
    ]
    series = api.get(f"/api/v1/runs/{run_id}/metrics/batch/loss").json()
    assert series["points"][0]["step"] == 250 and series["points"][0]["epoch"] == 2
    assert api.get(f"/api/v1/runs/{run_id}/metrics/nope").status_code == 404
    assert api.get("/api/v1/runs/12345").status_code == 404


def test_downsampling_bounds_points_and_keeps_spikes(api):
    run_id = create_run(api)
    steps = 5000
    values = [1.0 / (1 + s / 100) for s in range(steps)]
    values[1234] = 50.0
    values[4321] = -7.0
    values[2000] = math.nan
    events = [
        {
            "seq": s + 1,
            "kind": "metrics",
            "step": s,
            "metrics": {"loss": "NaN" if math.isnan(v) else v},
        }
        for s, v in enumerate(values)
    ]
    for start in range(0, steps, 2500):
        post_events(api, run_id, *events[start : start + 2500])
    full = api.get(f"/api/v1/runs/{run_id}/metrics/loss").json()
    assert full["total"] == steps and len(full["points"]) == steps
    small = api.get(f"/api/v1/runs/{run_id}/metrics/loss", params={"max_points": 200}).json()
    assert small["downsampled"] and small["total"] == steps
    assert len(small["points"]) <= 201
    numbers = [p["value"] for p in small["points"] if p["value"] != "NaN"]
    assert max(numbers) == 50.0 and min(numbers) == -7.0
    assert any(p["value"] == "NaN" and p["step"] == 2000 for p in small["points"])
    assert small["points"][0]["step"] == 0 and small["points"][-1]["step"] == steps - 1
    stepped = [p["step"] for p in small["points"]]
    assert stepped == sorted(stepped)


def test_long_series_downsample_from_rollups_like_from_points(api):
    # Above ROLLUP_ABOVE_POINTS the chart is drawn from metric_rollups: same shape as the
    # points path (bounded, spikes and NaN kept, ends kept, sorted), and retries add nothing.
    run_id = create_run(api)
    steps = ROLLUP_ABOVE_POINTS + 5000
    values = [1.0 / (1 + s / 100) for s in range(steps)]
    values[1234], values[steps - 77], values[2000] = 50.0, -7.0, math.nan
    values[9000] = math.inf
    events = [
        {
            "seq": s + 1,
            "kind": "metrics",
            "step": s,
            "epoch": s // 1000,
            "metrics": {"loss": v if math.isfinite(v) else encode_number(v), "other": 1.0},
        }
        for s, v in enumerate(values)
    ]
    for start in range(0, steps, 5000):
        post_events(api, run_id, *events[start : start + 5000])
    post_events(api, run_id, *events[:5000])  # a retried batch: stored once, rolled up once
    for max_points in (2000, 200):
        small = api.get(f"/api/v1/runs/{run_id}/metrics/loss", params={"max_points": max_points})
        small = small.json()
        assert small["downsampled"] and small["total"] == steps
        assert max_points // 4 <= len(small["points"]) <= max_points + 1
        values_seen = [p["value"] for p in small["points"] if p["value"] != "NaN"]
        assert "Infinity" in values_seen
        numbers = [v for v in values_seen if v != "Infinity"]
        assert max(numbers) == 50.0 and min(numbers) == -7.0
        assert any(p["value"] == "NaN" and p["step"] == 2000 for p in small["points"])
        assert small["points"][0]["step"] == 0 and small["points"][-1]["step"] == steps - 1
        assert small["points"][-1]["epoch"] == (steps - 1) // 1000
        stepped = [p["step"] for p in small["points"]]
        assert stepped == sorted(stepped)
    after = api.get(
        f"/api/v1/runs/{run_id}/metrics/loss", params={"max_points": 200, "after_step": 100}
    ).json()
    assert after["total"] == steps - 101 and after["points"][0]["step"] == 101


def test_csv_export_matches_keras_csv_logger(api, tmp_path):
    keras.utils.set_random_seed(1)
    x = np.random.rand(32, 3).astype("float32")
    y = x.sum(axis=1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", metrics=["mae"])
    path = tmp_path / "log.csv"
    history = model.fit(
        x,
        y,
        epochs=3,
        verbose=0,
        validation_split=0.25,
        callbacks=[keras.callbacks.CSVLogger(str(path))],
    )
    run_id = create_run(api)
    for epoch in range(3):
        logs = {k: v[epoch] for k, v in history.history.items()}
        post_events(api, run_id, epoch_event(epoch + 1, epoch, **logs))
    exported = api.get(f"/api/v1/runs/{run_id}/export.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    ours = list(csv.reader(io.StringIO(exported.text)))
    theirs = list(csv.reader(io.StringIO(path.read_text())))
    assert ours[0] == theirs[0]
    for our_row, their_row in zip(ours[1:], theirs[1:], strict=True):
        assert our_row[0] == their_row[0]
        assert [float(v) for v in our_row[1:]] == [float(v) for v in their_row[1:]]


def test_events_filter_by_kind_and_page_by_id(api):
    run_id = create_run(api)
    post_events(
        api,
        run_id,
        {"seq": 1, "kind": "train_begin"},
        epoch_event(2, 0, loss=1.0),
        {"seq": 3, "kind": "checkpoint_saved", "epoch": 0, "data": {"path": "/tmp/m.keras"}},
    )
    events = api.get(f"/api/v1/runs/{run_id}/events").json()["events"]
    assert [e["kind"] for e in events] == ["train_begin", "epoch_end", "checkpoint_saved"]
    assert events[2]["data"] == {"path": "/tmp/m.keras"}
    only = api.get(f"/api/v1/runs/{run_id}/events", params={"kind": "checkpoint_saved"}).json()
    assert [e["seq"] for e in only["events"]] == [3]
    after = api.get(f"/api/v1/runs/{run_id}/events", params={"after_id": events[0]["id"]})
    assert [e["seq"] for e in after.json()["events"]] == [2, 3]
    no_metrics = api.get(f"/api/v1/runs/{run_id}/events", params={"include_metrics": False})
    assert [e["seq"] for e in no_metrics.json()["events"]] == [1, 3]


def test_listing_runs_leaves_their_configs_in_the_database(api):
    # Each listed run's whole config was loaded to answer a list that never sends it:
    # 30 runs with a 7 MB config each took one reader's GET /runs to +390 MB.
    from sqlalchemy import event

    create_run(api, name="big", config={"blob": "x" * 100_000}, versions={"keras": "3"})
    statements = []

    def record(_conn, _cursor, statement, *_):
        statements.append(statement)

    engine = api.app.state.database.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        listed = api.get("/api/v1/runs").json()["runs"]
        assert api.get("/compare").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert [run["name"] for run in listed] == ["big"]
    loaded = " ".join(statements)
    assert "runs.config" not in loaded and "runs.versions" not in loaded
    detail = api.get(f"/api/v1/runs/{listed[0]['id']}").json()
    assert len(detail["config"]["blob"]) == 100_000
