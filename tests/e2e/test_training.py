"""A real Keras training against a real `callboard serve`."""

import math
import subprocess
import sys
import threading
import time
import uuid

import httpx
import keras

from callboard.client import RemoteMonitor, RemoteStop

from .training import inject_logs, slow_batches, tiny_data, tiny_model


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def find_run(root, name, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = httpx.get(f"{root}/api/v1/runs", params={"name": name}).json()["runs"]
        if runs:
            return runs[0]
        time.sleep(0.05)
    raise AssertionError(f"run {name!r} never appeared")


def series(root, run_id, key):
    points = httpx.get(f"{root}/api/v1/runs/{run_id}/metrics/{key}").json()["points"]
    return [(p["step"], p["value"]) for p in points]


def test_stored_epochs_equal_history(live_server):
    name = unique("history")
    x, y = tiny_data()
    history = tiny_model().fit(
        x,
        y,
        epochs=4,
        batch_size=16,
        validation_split=0.25,
        verbose=0,
        callbacks=[
            RemoteMonitor(
                root=live_server.root,
                run=name,
                project="e2e",
                config={"units": 8},
                batch_frequency=2,
            )
        ],
    )
    run = find_run(live_server.root, name)
    assert run["status"] == "finished" and run["epochs_done"] == 4
    for key, values in history.history.items():
        assert series(live_server.root, run["id"], key) == list(enumerate(values)), key
    batch_points = series(live_server.root, run["id"], "batch/loss")
    assert [step for step, _ in batch_points] == list(range(2, 4 * 6 + 1, 2))
    detail = httpx.get(f"{live_server.root}/api/v1/runs/{run['id']}").json()
    assert detail["config"] == {"units": 8} and detail["params"]["epochs"] == 4
    assert "keras" in detail["versions"]


def test_stock_remote_monitor_form_with_nan_is_stored_exactly(live_server):
    name = unique("stock-form")
    x, y = tiny_data()
    history = tiny_model().fit(
        x,
        y,
        epochs=3,
        verbose=0,
        callbacks=[
            inject_logs(odd=lambda epoch: math.nan if epoch == 1 else float(epoch)),
            keras.callbacks.RemoteMonitor(
                root=live_server.root, path=f"/publish/epoch/end/?run={name}"
            ),
        ],
    )
    run = find_run(live_server.root, name)
    assert run["epochs_done"] == 3
    assert series(live_server.root, run["id"], "loss") == list(enumerate(history.history["loss"]))
    assert series(live_server.root, run["id"], "odd") == [(0, 0.0), (1, "NaN"), (2, 2.0)]


def test_stock_remote_monitor_json_is_stored_exactly(live_server):
    name = unique("stock-json")
    x, y = tiny_data()
    history = tiny_model().fit(
        x,
        y,
        epochs=3,
        verbose=0,
        validation_split=0.25,
        callbacks=[
            keras.callbacks.RemoteMonitor(
                root=live_server.root,
                path=f"/publish/epoch/end/?run={name}&project=stock",
                send_as_json=True,
                headers={"X-Anything": "1"},
            )
        ],
    )
    run = find_run(live_server.root, name)
    assert run["project"] == "stock"
    for key, values in history.history.items():
        assert series(live_server.root, run["id"], key) == list(enumerate(values)), key


def test_stop_from_another_process_ends_fit_early(live_server):
    name = unique("stoppable")
    x, y = tiny_data()
    epochs = 200

    def press_stop():
        find_run(live_server.root, name)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "callboard.server",
                "stop",
                name,
                "--reason",
                "e2e",
                "--root",
                live_server.root,
            ],
            check=True,
            capture_output=True,
        )

    stopper = threading.Thread(target=press_stop)
    stopper.start()
    started = time.monotonic()
    history = tiny_model().fit(
        x,
        y,
        epochs=epochs,
        batch_size=16,
        verbose=0,
        callbacks=[
            RemoteMonitor(root=live_server.root, run=name),
            RemoteStop(interval=0.2),
            slow_batches(0.01),
        ],
    )
    stopper.join()
    assert len(history.history["loss"]) < epochs
    assert time.monotonic() - started < 60
    run = find_run(live_server.root, name)
    detail = httpx.get(f"{live_server.root}/api/v1/runs/{run['id']}").json()
    assert detail["status"] == "stopped"
    assert detail["control"]["state"] == "stopped" and detail["control"]["reason"] == "e2e"
    kinds = [
        e["kind"]
        for e in httpx.get(
            f"{live_server.root}/api/v1/runs/{run['id']}/events", params={"include_metrics": False}
        ).json()["events"]
    ]
    # The stop is a `stop` command too: requested with it, applied by the acknowledgement.
    assert kinds[-5:] == [
        "stop_requested",
        "command_requested",
        "stop_acknowledged",
        "command_applied",
        "train_end",
    ]


def test_malformed_posts_get_4xx_and_leave_data_untouched(live_server):
    name = unique("untouched")
    root = live_server.root
    x, y = tiny_data()
    tiny_model().fit(x, y, epochs=2, verbose=0, callbacks=[RemoteMonitor(root=root, run=name)])
    run = find_run(root, name)
    before = httpx.get(f"{root}/api/v1/runs/{run['id']}/events").json()
    bad = [
        ("/publish/epoch/end/", {"content": b"data=%7Bbroken"}),
        ("/publish/epoch/end/", {"content": b'{"epoch": "zero"}'}),
        (f"/api/v1/runs/{run['id']}/events", {"json": {"events": [{"seq": 9, "kind": "x y"}]}}),
        (f"/api/v1/runs/{run['id']}/events", {"json": {"events": "nope"}}),
        (f"/api/v1/runs/{run['id']}/events", {"content": b"\x00\x01"}),
        ("/api/v1/runs", {"json": {"name": "", "project": "p"}}),
    ]
    for path, body in bad:
        response = httpx.post(root + path, **body)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert response.json()["detail"], path
    after = httpx.get(f"{root}/api/v1/runs/{run['id']}/events").json()
    assert after == before
