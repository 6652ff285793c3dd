import json
import math
from urllib.parse import urlencode

import pytest

from callboard.server.keras_compat import BadPost, parse_epoch_post


def form(payload, field="data"):
    return urlencode({field: payload}).encode()


@pytest.mark.parametrize(
    "body",
    [
        form('{"epoch": 3, "loss": NaN, "acc": Infinity, "x": -Infinity}'),
        form('{"epoch": 3, "loss": NaN, "acc": Infinity, "x": -Infinity}', field="metrics"),
        b'{"epoch": 3, "loss": NaN, "acc": Infinity, "x": -Infinity}',
        b'  {"epoch": 3, "loss": "NaN", "acc": "Infinity", "x": "-Infinity"}',
    ],
)
def test_stock_bodies_parse_with_non_finite_values(body):
    epoch, metrics = parse_epoch_post(body)
    assert epoch == 3
    assert math.isnan(metrics["loss"]) and metrics["acc"] == math.inf
    assert metrics["x"] == -math.inf


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"data=%7Bnope", "invalid JSON"),
        (b"a=1&b=2", "one form field"),
        (b"[1, 2]", "JSON object"),
        (b'{"loss": 1.0}', "'epoch'"),
        (b'{"epoch": "1", "loss": 1.0}', "'epoch'"),
        (b'{"epoch": 1, "loss": "high"}', "metric 'loss'"),
        (b'{"epoch": 1, "loss": [1, 2]}', "metric 'loss'"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_bad_bodies_say_what_is_wrong(body, message):
    with pytest.raises(BadPost, match=message):
        parse_epoch_post(body)


def post_epoch(api, epoch, query="", as_json=False, headers=None, **logs):
    payload = json.dumps({"epoch": epoch, **logs})
    if as_json:
        content, content_type = payload.encode(), "application/json"
    else:
        content, content_type = form(payload), "application/x-www-form-urlencoded"
    response = api.post(
        f"/publish/epoch/end/{query}",
        content=content,
        headers={"Content-Type": content_type, **(headers or {})},
    )
    assert response.status_code == 200, response.text
    return response.json()["run_id"]


def test_named_posts_build_one_run_and_restart_opens_another(api):
    first = [
        post_epoch(api, epoch, "?run=mnist&project=lab", loss=1.0 / (epoch + 1))
        for epoch in range(3)
    ]
    assert len(set(first)) == 1
    run = api.get(f"/api/v1/runs/{first[0]}").json()
    assert (run["name"], run["project"], run["epochs_done"]) == ("mnist", "lab", 3)
    assert run["source"] == "keras"
    again = post_epoch(api, 0, "?run=mnist&project=lab", loss=2.0)
    assert again != first[0]
    listed = api.get("/api/v1/runs", params={"name": "mnist"}).json()["runs"]
    assert [r["id"] for r in listed] == [again, first[0]]


def test_unnamed_posts_go_to_an_automatic_run(api):
    a = {post_epoch(api, epoch, loss=1.0) for epoch in range(2)}
    b = post_epoch(api, 0, loss=1.0)
    assert len(a) == 1 and b not in a
    assert api.get(f"/api/v1/runs/{b}").json()["name"].startswith("run-")


def test_mislabelled_form_body_is_sniffed(api):
    run_id = post_epoch(
        api, 0, "?run=mislabelled", headers={"Content-Type": "application/json"}, loss=0.25
    )
    points = api.get(f"/api/v1/runs/{run_id}/metrics/loss").json()["points"]
    assert points[0]["value"] == 0.25


def test_json_body_with_nan_is_stored(api):
    run_id = post_epoch(api, 0, "?run=j", as_json=True, loss=float("nan"), acc=0.5)
    assert api.get(f"/api/v1/runs/{run_id}").json()["last"] == {"acc": 0.5, "loss": "NaN"}


def test_malformed_post_is_422_and_stores_nothing(api):
    run_id = post_epoch(api, 0, "?run=keep", loss=0.5)
    before = api.get(f"/api/v1/runs/{run_id}").json()
    for body in (b"data=%7Bbroken", b'{"epoch": 1, "loss": "x"}', b""):
        response = api.post("/publish/epoch/end/?run=keep", content=body)
        assert response.status_code == 422
        assert response.json()["detail"]
    after = api.get(f"/api/v1/runs/{run_id}").json()
    assert after["epochs_done"] == before["epochs_done"] == 1
    assert api.get("/api/v1/runs").json()["total"] == 1


@pytest.mark.parametrize("query", ["?run=stock", ""], ids=["named", "automatic"])
def test_silent_stock_run_ends_finished_not_lost(api, settings, query):
    import time

    settings.lost_after_seconds = 0.2
    run_id = post_epoch(api, 0, query, loss=0.5)
    deadline = time.monotonic() + 5
    while api.get(f"/api/v1/runs/{run_id}").json()["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == "finished"
    kinds = [e["kind"] for e in api.get(f"/api/v1/runs/{run_id}/events").json()["events"]]
    assert "lost" not in kinds


@pytest.mark.parametrize(
    ("acknowledged", "status", "state"),
    [(True, "stopped", "stopped"), (False, "finished", "requested")],
    ids=["stop-acknowledged", "stop-never-seen"],
)
def test_silent_stock_run_stopped_remotely_ends_stopped(api, settings, acknowledged, status, state):
    import time

    run_id = post_epoch(api, 0, "?run=stock", loss=0.5)
    assert api.post(f"/api/v1/runs/{run_id}/stop", json={}).status_code == 200
    if acknowledged:  # as RemoteStop(run="stock") beside the stock callback does
        assert api.post(f"/api/v1/runs/{run_id}/control/ack").status_code == 200
    # Silent from now on: on a slow machine, a 0.2 s limit set before the stop ended
    # the run before the stop reached it (409).
    settings.lost_after_seconds = 0.2
    deadline = time.monotonic() + 5
    while api.get(f"/api/v1/runs/{run_id}").json()["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == status
    assert api.get(f"/api/v1/runs/{run_id}/control").json()["state"] == state


def test_restarted_training_stays_in_its_new_run_past_the_old_runs_last_epoch(api):
    old = {post_epoch(api, epoch, "?run=restart", loss=1.0) for epoch in range(3)}
    new = {post_epoch(api, epoch, "?run=restart", loss=2.0) for epoch in range(6)}
    assert len(old) == len(new) == 1 and old != new
    (new_id,) = new
    points = api.get(f"/api/v1/runs/{new_id}/metrics/loss").json()["points"]
    assert [(p["epoch"], p["value"]) for p in points] == [(e, 2.0) for e in range(6)]


def loss_by_run(api, name):
    """`{run id: [(epoch, loss), ...]}` of every run called `name`, in stored order."""
    runs = api.get("/api/v1/runs", params={"name": name}).json()["runs"]
    return {
        run["id"]: [
            (p["epoch"], p["value"])
            for p in api.get(f"/api/v1/runs/{run['id']}/metrics/loss").json()["points"]
        ]
        for run in runs
    }


def warnings_of(api, run_id):
    events = api.get(f"/api/v1/runs/{run_id}/events", params={"kind": "warning"}).json()["events"]
    return [event["data"] for event in events]


def interleave(first, second):
    """Post two trainings' epochs turn about: `first` and `second` are `(post, epochs)`."""
    (post_a, epochs_a), (post_b, epochs_b) = first, second
    for index in range(max(len(epochs_a), len(epochs_b))):
        for post, epochs in ((post_a, epochs_a), (post_b, epochs_b)):
            if index < len(epochs):
                post(epochs[index])


def training(api, value, headers=None):
    """A stock training posting `loss = value + epoch` under `?run=shared`."""
    return lambda epoch: post_epoch(
        api, epoch, "?run=shared", headers=headers, loss=float(value + epoch)
    )


@pytest.mark.parametrize("differs", ["user_agent", "address"])
def test_concurrent_trainings_from_two_clients_get_a_run_each(api, differs):
    from fastapi.testclient import TestClient

    if differs == "user_agent":
        first = training(api, 100, headers={"User-Agent": "python-requests/2.31.0"})
        second = training(api, 200, headers={"User-Agent": "python-requests/2.34.0"})
    else:
        elsewhere = TestClient(api.app, client=("10.1.2.3", 50000))
        first, second = training(api, 100), training(elsewhere, 200)
    interleave((first, list(range(10))), (second, list(range(10))))
    runs = loss_by_run(api, "shared")
    assert sorted(runs.values()) == [
        [(e, 100.0 + e) for e in range(10)],
        [(e, 200.0 + e) for e in range(10)],
    ]
    for run_id in runs:
        (warning,) = warnings_of(api, run_id)
        assert "another training posts as ?run=shared" in warning["message"]
        assert warning["other_run"] in runs and warning["other_run"] != run_id


def test_second_training_from_the_same_machine_is_kept_apart_by_its_epochs(api):
    first, second = training(api, 100), training(api, 200)
    for epoch in range(3):
        first(epoch)
    interleave((second, list(range(7))), (first, list(range(3, 10))))
    runs = loss_by_run(api, "shared")
    assert sorted(runs.values()) == [
        [(e, 100.0 + e) for e in range(10)],
        [(e, 200.0 + e) for e in range(7)],
    ]
    for run_id in runs:
        (warning,) = warnings_of(api, run_id)
        assert "a restart, or a second training" in warning["message"]


def test_trainings_in_lockstep_from_one_machine_are_warned_about(api):
    # Same address, same User-Agent, same epochs: nothing tells them apart (README).
    interleave((training(api, 100), list(range(5))), (training(api, 200), list(range(5))))
    runs = loss_by_run(api, "shared")
    assert len(runs) == 2
    for points in runs.values():
        assert [epoch for epoch, _ in points] == list(range(5))
    for run_id in runs:
        (warning,) = warnings_of(api, run_id)
        assert "?run=shared" in warning["message"]
    limit = [w["message"] for run_id in runs for w in warnings_of(api, run_id)]
    assert any("cannot be told apart" in message for message in limit)


def test_stock_run_records_its_client(api):
    run_id = post_epoch(api, 0, "?run=who", headers={"User-Agent": "python-requests/2.34.0"})
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert run["host"] == "testclient"
    assert run["versions"] == {"user_agent": "python-requests/2.34.0"}


def test_stock_client_keeps_only_printable_text_that_fits_a_run():
    from types import SimpleNamespace

    from callboard.server.stock_runs import StockClient

    request = SimpleNamespace(client=None, headers={"user-agent": "evil\x7f\x85agent" + "x" * 200})
    client = StockClient.of(request)
    assert client.address is None
    assert client.user_agent == "evilagent" + "x" * 91
