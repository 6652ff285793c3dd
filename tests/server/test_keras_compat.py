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
