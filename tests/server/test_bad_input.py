"""Bad input on SQLite and PostgreSQL: a clear 4xx or the data kept, never a 500 or a lost row.

Text PostgreSQL or UTF-8 cannot hold (NUL, lone surrogates) is stored with
U+FFFD in its place; numbers beyond a column get a 422; a stock RemoteMonitor
epoch keeps its good metrics when one name is bad.
"""

import json
from urllib.parse import urlencode

import pytest
import sqlalchemy

from callboard.server.store.db import normalize_url

from .helpers import create_run, epoch_event, post_events

REPLACED = "\ufffd"


def post_json_text(api, url, text):
    """POST `text` as it is: JSON escapes such as `\\ud800` reach the server unparsed."""
    return api.post(url, content=text.encode(), headers={"Content-Type": "application/json"})


def test_nul_in_host_stop_reason_and_train_end_error_is_stored(api):
    run_id = api.post("/api/v1/runs", json={"name": "nul", "host": "gpu\x001"}).json()["id"]
    stop = api.post(f"/api/v1/runs/{run_id}/stop", json={"reason": "enough\x00"})
    assert stop.status_code == 200, stop.text
    post_events(
        api,
        run_id,
        epoch_event(1, 0, loss=0.5),
        {"seq": 2, "kind": "train_end", "data": {"status": "failed", "error": "boom\x00!"}},
        {"seq": 3, "kind": "note", "data": {"a\x00": ["b\x00"]}},
    )
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert run["host"] == f"gpu{REPLACED}1"
    assert (run["status"], run["error"], run["epochs_done"]) == ("failed", f"boom{REPLACED}!", 1)
    assert run["control"]["reason"] == f"enough{REPLACED}"
    events = api.get(f"/api/v1/runs/{run_id}/events").json()["events"]
    assert events[-1]["data"] == {f"a{REPLACED}": [f"b{REPLACED}"]}


@pytest.mark.parametrize("parameter", ["q", "name", "project"])
def test_nul_in_run_filters_gets_422(api, parameter):
    create_run(api)
    answer = api.get(f"/api/v1/runs?{parameter}=a%00b")
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["query", parameter]


def test_tag_filter_finds_tags_as_stored(api):
    run_id = create_run(api, tags=["été", "a\x00b"])
    create_run(api, tags=["other"])
    for tag in ("été", "a\x00b"):
        runs = api.get("/api/v1/runs", params={"tag": tag}).json()["runs"]
        assert [run["id"] for run in runs] == [run_id], tag


def test_lone_surrogates_in_a_run_are_stored_replaced_and_the_run_reads_back(api):
    spec = (
        '{"name": "sur\\ud800", "project": "p\\udfff", "host": "h\\ud800",'
        ' "tags": ["t\\udc80"], "versions": {"v\\ud800": "1\\ud800"},'
        ' "config": {"k\\ud800": "v\\ud800", "pair": "\\ud83d\\ude00", "n": [{"x": "\\udc00"}]}}'
    )
    created = post_json_text(api, "/api/v1/runs", spec)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert (run["name"], run["project"], run["host"]) == (
        f"sur{REPLACED}",
        f"p{REPLACED}",
        f"h{REPLACED}",
    )
    assert run["tags"] == [f"t{REPLACED}"]
    assert run["versions"] == {f"v{REPLACED}": f"1{REPLACED}"}
    assert run["config"] == {
        f"k{REPLACED}": f"v{REPLACED}",
        "pair": "\U0001f600",
        "n": [{"x": REPLACED}],
    }
    assert api.get(f"/runs/{run_id}").status_code == 200
    assert api.get(f"/compare?ids={run_id}").status_code == 200
    assert api.get("/api/v1/runs").status_code == 200


def test_lone_surrogates_in_events_are_stored_replaced(api):
    run_id = create_run(api)
    batch = (
        '{"events": [{"seq": 1, "kind": "epoch_end", "epoch": 0,'
        ' "metrics": {"loss\\ud800": 0.5, "acc": NaN}},'
        ' {"seq": 2, "kind": "checkpoint_saved", "data": {"path": "/ckpt/\\udcff.keras"}}]}'
    )
    answer = post_json_text(api, f"/api/v1/runs/{run_id}/events", batch)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert run["last"] == {"acc": "NaN", f"loss{REPLACED}": 0.5}
    events = api.get(f"/api/v1/runs/{run_id}/events").json()["events"]
    assert events[1]["data"] == {"path": f"/ckpt/{REPLACED}.keras"}
    assert api.get(f"/runs/{run_id}").status_code == 200


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ('{"name": 1e999}', ["body", "name"]),
        ('{"name": "\\ud800\\n"}', ["body", "name"]),
        ('{"tags": "\\ud800"}', ["body", "tags"]),
        ('{"config": {"deep": [[[[[[[[[["\\ud800"]]]]]]]]]]}}', ["body", "config"]),
    ],
)
def test_a_422_echoing_infinity_or_a_surrogate_is_valid_json(api, body, loc):
    answer = post_json_text(api, "/api/v1/runs", body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == loc


def test_a_422_from_the_events_endpoint_echoing_infinity_is_valid_json(api):
    run_id = create_run(api)
    batch = '{"events": [{"seq": 1, "kind": "x", "epoch": 1e999, "data": {"s": "\\ud800"}}]}'
    answer = post_json_text(api, f"/api/v1/runs/{run_id}/events", batch)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "events", 0, "epoch"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("after_id=9223372036854775808", "after_id"),
        ("after_id=99999999999999999999999", "after_id"),
        ("after_id=-1", "after_id"),
    ],
)
def test_event_paging_beyond_a_row_id_gets_422(api, query, parameter):
    run_id = create_run(api)
    answer = api.get(f"/api/v1/runs/{run_id}/events?{query}")
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["query", parameter]


def test_event_paging_at_the_last_row_id_is_empty(api):
    run_id = create_run(api)
    answer = api.get(f"/api/v1/runs/{run_id}/events?after_id={2**63 - 1}")
    assert answer.status_code == 200 and answer.json()["events"] == []


@pytest.mark.parametrize(
    "after_step", ["1" + "0" * 30, "-1" + "0" * 30, "9223372036854775808", "1e30", "-1e30", "nan"]
)
def test_series_after_an_impossible_step_gets_422(api, after_step):
    run_id = create_run(api)
    post_events(api, run_id, epoch_event(1, 0, loss=0.5))
    answer = api.get(f"/api/v1/runs/{run_id}/metrics/loss?after_step={after_step}")
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["query", "after_step"]


def test_series_after_a_step_in_range(api):
    run_id = create_run(api)
    post_events(api, run_id, epoch_event(1, 0, loss=0.5), epoch_event(2, 1, loss=0.4))
    for after_step, expected in ((-1, [0, 1]), (0, [1]), (2**63 - 1, [])):
        points = api.get(f"/api/v1/runs/{run_id}/metrics/loss?after_step={after_step}").json()
        assert [point["step"] for point in points["points"]] == expected


@pytest.mark.parametrize("ids", ["²", "2**63", "9223372036854775808", "0", "-1", "٣", "1,²,x"])
def test_compare_ignores_ids_that_are_not_row_ids(api, ids):
    run_id = create_run(api, name="kept")
    answer = api.get("/compare", params={"ids": ids})
    assert answer.status_code == 200, answer.text
    both = api.get("/compare", params={"ids": f"{ids},{run_id}"})
    assert both.status_code == 200 and f'data-ids="{run_id}"' in both.text


@pytest.mark.parametrize("last_event_id", ["nan", "inf", "-inf", "1e400", "1e30", "-5", "x"])
def test_stream_with_an_impossible_last_event_id_gets_400(api, last_event_id):
    run_id = create_run(api)
    urls = [f"/api/v1/runs/{run_id}/stream"]
    if last_event_id != "1e30":  # a time far ahead, not an impossible one, for the runs stream
        urls.append("/api/v1/stream")
    for url in urls:
        answer = api.get(url, headers={"Last-Event-ID": last_event_id})
        assert answer.status_code == 400, (url, answer.text)
        assert "Last-Event-ID" in answer.json()["detail"]


@pytest.mark.parametrize("after", ["9223372036854775808", "1e30", "-1"])
def test_run_stream_after_an_impossible_event_id_gets_422(api, after):
    run_id = create_run(api)
    answer = api.get(f"/api/v1/runs/{run_id}/stream?after={after}")
    assert answer.status_code == 422, answer.text


def stock_post(api, logs, query="?run=stock"):
    return api.post(f"/publish/epoch/end/{query}", content=json.dumps(logs).encode())


def warnings_of(api, run_id):
    events = api.get(f"/api/v1/runs/{run_id}/events", params={"kind": "warning"}).json()
    return [event["data"] for event in events["events"]]


@pytest.mark.parametrize("bad_key", ["x" * 201, "line\nbreak", "tab\there", "nul\x00"])
def test_a_bad_metric_name_on_the_stock_endpoint_drops_only_that_key(api, bad_key):
    for epoch in range(2):
        answer = stock_post(api, {"epoch": epoch, "loss": 1.0 - epoch / 10, bad_key: 2.0})
        assert answer.status_code == 200, answer.text
        assert answer.json()["dropped"] == [bad_key]
    run_id = answer.json()["run_id"]
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert (run["epochs_done"], run["last"]) == (2, {"loss": 0.9})
    (warning,) = warnings_of(api, run_id)  # one warning, not one per epoch
    assert warning["dropped"] == [bad_key.replace("\x00", REPLACED)]  # stored as text is
    assert "dropped" in warning["message"]


def test_over_a_thousand_stock_metrics_keep_the_first_thousand(api):
    logs = {"epoch": 0, **{f"m{i:04d}": float(i) for i in range(1005)}}
    answer = stock_post(api, logs)
    assert answer.status_code == 200, answer.text
    assert answer.json()["dropped"] == [f"m{i:04d}" for i in range(1000, 1005)]
    run_id = answer.json()["run_id"]
    assert len(api.get(f"/api/v1/runs/{run_id}/metrics").json()["keys"]) == 1000
    (warning,) = warnings_of(api, run_id)
    assert warning["dropped"] == [f"m{i:04d}" for i in range(1000, 1005)]


@pytest.mark.parametrize("as_form", [False, True])
def test_a_surrogate_in_a_stock_metric_name_is_stored_replaced(api, as_form):
    logs = json.dumps({"epoch": 0, "loss": 0.5, "acc\ud800": 1.0})
    body = urlencode({"data": logs}).encode() if as_form else logs.encode()
    answer = api.post("/publish/epoch/end/?run=surrogate", content=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["dropped"] == []
    run = api.get(f"/api/v1/runs/{answer.json()['run_id']}").json()
    assert run["last"] == {f"acc{REPLACED}": 1.0, "loss": 0.5}


def test_a_run_stored_with_a_lone_surrogate_before_the_fix_reads_back(api, settings):
    run_id = create_run(api)
    engine = sqlalchemy.create_engine(normalize_url(settings.database_url))
    with engine.begin() as connection:  # as json.dumps wrote it when orjson refused the text
        connection.execute(
            sqlalchemy.text("UPDATE runs SET config = :config WHERE id = :id"),
            {"config": '{"k\\ud800": ["\\udfff", 1]}', "id": run_id},
        )
    engine.dispose()
    answer = api.get(f"/api/v1/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["config"] == {f"k{REPLACED}": [REPLACED, 1]}
    assert api.get(f"/runs/{run_id}").status_code == 200
