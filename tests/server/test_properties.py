"""Property tests of what the server reads: stock RemoteMonitor bodies and event batches.

Whatever arrives, the answer is the data or a clear error naming what is wrong,
never an exception a handler did not expect (which would be a 500).
"""

import json
import math
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from callboard.server.api.schemas import (
    MAX_EVENTS_PER_BATCH,
    MAX_KEY_LENGTH,
    MAX_KEYS_PER_EVENT,
    MAX_NESTING,
    EventBatch,
    EventIn,
    keep_valid_metrics,
)
from callboard.server.keras_compat import MAX_EPOCH, BadPost, parse_epoch_post
from callboard.server.store.storable import NON_FINITE_NAMES

# Metric names: 1 to 200 characters, none of them a control character.
name_characters = st.characters(blacklist_categories=("Cs",), min_codepoint=0x20)
metric_names = st.text(name_characters, min_size=1, max_size=200).filter(lambda n: n != "epoch")
any_floats = st.floats(allow_nan=True, allow_infinity=True)
epochs = st.integers(min_value=0, max_value=MAX_EPOCH)
form_fields = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | any_floats | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def same_values(got, sent):
    """Metrics equal key by key, NaN equal to NaN."""
    assert got.keys() == sent.keys()
    for key, value in sent.items():
        assert math.isnan(got[key]) if math.isnan(value) else got[key] == value, key


def stock_form_body(field, send):
    """What Keras' RemoteMonitor posts in form mode: `requests.post(url, {field: dumps(send)})`."""
    return urlencode({field: json.dumps(send)}).encode()


def stock_json_body(send):
    """What it posts with `send_as_json=True`: requests' `json=`, which refuses NaN."""
    return json.dumps(send, allow_nan=False).encode("utf-8")


def parses_or_says_why(body):
    """`parse_epoch_post(body)`, less the names `keep_valid_metrics` drops, is an epoch
    the event schema accepts; or a `BadPost`."""
    try:
        epoch, metrics = parse_epoch_post(body)
    except BadPost as exc:
        assert str(exc)
        return None
    kept, dropped = keep_valid_metrics(metrics)
    assert len(kept) + len(dropped) == len(metrics)
    EventIn(seq=1, kind="epoch_end", epoch=epoch, metrics=kept)
    return epoch, kept


@given(field=form_fields, epoch=epochs, logs=st.dictionaries(metric_names, any_floats))
@example(field="data", epoch=0, logs={"loss": math.nan, "acc": math.inf, "x": -math.inf})
def test_stock_form_posts_round_trip(field, epoch, logs):
    got_epoch, metrics = parse_epoch_post(stock_form_body(field, {"epoch": epoch, **logs}))
    assert got_epoch == epoch
    same_values(metrics, logs)
    EventIn(seq=1, kind="epoch_end", epoch=epoch, metrics=metrics)


@given(
    epoch=epochs,
    logs=st.dictionaries(metric_names, st.floats(allow_nan=False, allow_infinity=False)),
)
def test_stock_json_posts_round_trip(epoch, logs):
    got_epoch, metrics = parse_epoch_post(stock_json_body({"epoch": epoch, **logs}))
    assert (got_epoch, metrics) == (epoch, logs)


@given(st.binary(max_size=300))
@example(b"[" * 100_000)
@example(b"data=" + b"%5B" * 100_000)
@example(b'{"epoch": 0, "loss": 1' + b"0" * 400 + b"}")
@example(b'{"epoch": 0, "loss": ' + b"1" * 5000 + b"}")
@example(b'{"epoch": 9999999999999}')
@example(b'{"epoch": 0, "a\\nb": 1.0}')
@example(b'{"epoch": 0, "loss\\n": 1.0}')
@example(b"\xff\xfe")
def test_junk_bytes_get_a_clear_error(body):
    parses_or_says_why(body)


@given(payload=json_values, as_form=st.booleans(), field=form_fields)
def test_any_json_gets_an_epoch_or_a_clear_error(payload, as_form, field):
    text = json.dumps(payload)
    parses_or_says_why(urlencode({field: text}).encode() if as_form else text.encode())


@given(st.dictionaries(st.text(max_size=30), json_values, max_size=5), epochs)
def test_any_logs_get_an_epoch_or_a_clear_error(logs, epoch):
    parses_or_says_why(json.dumps({"epoch": epoch, **logs}).encode())


# Event batches as the client (or anyone) posts them.
kinds = st.from_regex(r"[a-z][a-z0-9_.:-]{0,63}", fullmatch=True)
metric_values = any_floats | st.integers(-(2**53), 2**53) | st.sampled_from(list(NON_FINITE_NAMES))
shallow_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=MAX_KEY_LENGTH), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def events(draw, seq=None):
    event = {"seq": draw(st.integers(1, 2**62)) if seq is None else seq, "kind": draw(kinds)}
    if draw(st.booleans()):
        event["epoch"] = draw(st.integers(0, 10_000))
    if draw(st.booleans()):
        event["step"] = draw(st.integers(0, 2**40))
    event["metrics"] = draw(st.dictionaries(metric_names, metric_values, max_size=8))
    event["data"] = draw(st.dictionaries(st.text(max_size=20), shallow_json, max_size=3))
    return event


def depth(value):
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@given(st.lists(events(), max_size=20))
def test_valid_batches_are_accepted_and_keep_their_values(batch):
    assume(all(depth(event["data"]) <= MAX_NESTING for event in batch))
    parsed = EventBatch.model_validate({"events": batch})
    as_json = parsed.model_dump(mode="json")
    for sent, kept in zip(batch, as_json["events"], strict=True):
        for key, value in sent["metrics"].items():
            number = NON_FINITE_NAMES.get(value, value) if isinstance(value, str) else value
            if math.isnan(number):
                assert kept["metrics"][key] == "NaN"
            elif math.isinf(number):
                assert kept["metrics"][key] == ("Infinity" if number > 0 else "-Infinity")
            else:
                assert kept["metrics"][key] == float(number)
    assert json.loads(json.dumps(as_json, allow_nan=False)) == as_json


def rejected(batch):
    """The errors of an invalid batch, as `(loc, msg)` pairs."""
    with pytest.raises(ValidationError) as caught:
        EventBatch.model_validate(batch)
    return [(error["loc"], error["msg"]) for error in caught.value.errors()]


@given(
    events(seq=1),
    metric_names,
    st.text().filter(lambda text: text not in NON_FINITE_NAMES)
    | st.booleans()
    | st.none()
    | st.lists(st.floats(), min_size=1, max_size=3)
    | st.dictionaries(st.text(max_size=3), st.floats(), max_size=2)
    | st.integers(min_value=2**1024),
)
def test_non_numeric_metric_values_are_refused_by_name(event, name, value):
    event["metrics"] = {name: value}
    errors = rejected({"events": [event]})
    assert errors and all(loc[:4] == ("events", 0, "metrics", name) for loc, _ in errors)
    assert any("number" in message for _, message in errors)


@given(events(seq=1), st.text(name_characters, min_size=201, max_size=400))
def test_over_long_metric_names_are_refused(event, name):
    event["metrics"] = {name: 1.0}
    errors = rejected({"events": [event]})
    assert any(loc[:3] == ("events", 0, "metrics") and "200" in msg for loc, msg in errors)


@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(events(seq=1), st.integers(MAX_KEYS_PER_EVENT + 1, MAX_KEYS_PER_EVENT + 50))
def test_too_many_metric_keys_are_refused(event, count):
    event["metrics"] = {f"m{i}": float(i) for i in range(count)}
    errors = rejected({"events": [event]})
    assert any(
        loc == ("events", 0, "metrics") and str(MAX_KEYS_PER_EVENT) in msg for loc, msg in errors
    )


@settings(max_examples=5, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(MAX_EVENTS_PER_BATCH + 1, MAX_EVENTS_PER_BATCH + 20))
def test_too_many_events_are_refused(count):
    batch = [{"seq": i + 1, "kind": "epoch_end", "epoch": i} for i in range(count)]
    errors = rejected({"events": batch})
    assert any(loc == ("events",) and str(MAX_EVENTS_PER_BATCH) in msg for loc, msg in errors)


@given(
    events(seq=1),
    st.integers(MAX_NESTING + 1, 60),
    st.sampled_from(["list", "dict"]),
)
def test_too_deep_data_is_refused(event, levels, shape):
    value = 1
    for _ in range(levels):
        value = [value] if shape == "list" else {"k": value}
    event["data"] = {"deep": value}
    errors = rejected({"events": [event]})
    assert any(loc == ("events", 0, "data") and "nested deeper" in msg for loc, msg in errors)


@given(events(seq=1), st.text(min_size=MAX_KEY_LENGTH + 1, max_size=MAX_KEY_LENGTH + 50))
def test_over_long_data_keys_are_refused(event, key):
    event["data"] = {"outer": {key: 1}}
    errors = rejected({"events": [event]})
    assert any(loc == ("events", 0, "data") and "longer than" in msg for loc, msg in errors)


# The same limits through the HTTP API (SQLite and PostgreSQL).
@pytest.fixture
def small_api(settings):
    """A TestClient on an app that takes request bodies of up to 2000 bytes."""
    from fastapi.testclient import TestClient

    from callboard.server.main import create_app

    settings.max_body_bytes = 2000
    with TestClient(create_app(settings)) as client:
        yield client


def test_oversized_bodies_get_413_declared_or_streamed(small_api):
    run_id = small_api.post("/api/v1/runs", json={"name": "big"}).json()["id"]
    events = [{"seq": i + 1, "kind": "epoch_end", "epoch": i} for i in range(100)]
    body = json.dumps({"events": events}).encode()
    assert len(body) > 2000
    declared = small_api.post(
        f"/api/v1/runs/{run_id}/events",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert declared.status_code == 413
    assert declared.json() == {"detail": "request body over 2000 bytes"}
    streamed = small_api.post(
        "/publish/epoch/end/",
        content=(body[i : i + 500] for i in range(0, len(body), 500)),
        headers={"Content-Type": "application/json"},
    )
    assert streamed.status_code == 413 and "2000 bytes" in streamed.json()["detail"]
    assert small_api.get(f"/api/v1/runs/{run_id}").json()["epochs_done"] == 0


def test_deep_nesting_gets_422_naming_the_field(api):
    deep = 1
    for _ in range(MAX_NESTING + 2):
        deep = [deep]
    created = api.post("/api/v1/runs", json={"name": "deep", "config": {"net": deep}})
    assert created.status_code == 422
    (error,) = created.json()["detail"]
    assert error["loc"] == ["body", "config"] and "nested deeper than 8" in error["msg"]
    run_id = api.post("/api/v1/runs", json={"name": "deep"}).json()["id"]
    event = {"seq": 1, "kind": "checkpoint_saved", "data": {"path": deep}}
    answer = api.post(f"/api/v1/runs/{run_id}/events", json={"events": [event]})
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "events", 0, "data"] and "nested deeper" in error["msg"]
    # Deeper than any JSON parser recurses: still a 422 that says so, on both endpoints.
    brackets = b"[" * 100_000
    raw = api.post(
        f"/api/v1/runs/{run_id}/events",
        content=b'{"events": ' + brackets,
        headers={"Content-Type": "application/json"},
    )
    assert raw.status_code == 422 and "recursion limit" in raw.json()["detail"][0]["msg"]
    stock = api.post("/publish/epoch/end/?run=deep", content=brackets)
    assert stock.status_code == 422 and stock.json()["detail"] == "invalid JSON: nested too deeply"


def test_out_of_range_numbers_get_422_not_500(api):
    run_id = api.post("/api/v1/runs", json={"name": "huge"}).json()["id"]
    huge = b"1" + b"0" * 400
    answer = api.post(
        f"/api/v1/runs/{run_id}/events",
        content=b'{"events": [{"seq": 1, "kind": "epoch_end", "metrics": {"loss": '
        + huge
        + b"}}]}",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "events", 0, "metrics", "loss"]
    for body in (b'{"epoch": 0, "loss": ' + huge + b"}", b'{"epoch": 4294967296}'):
        stock = api.post("/publish/epoch/end/?run=huge", content=body)
        assert stock.status_code == 422, body
    control = api.post(
        "/publish/epoch/end/?run=huge", content=b'{"epoch": 0, "bad\\u0007name": 1.0, "ok": 2}'
    )
    assert control.status_code == 200 and control.json()["dropped"] == ["bad\x07name"]


# Any text at every text field of a run and of its events (SQLite and PostgreSQL).
any_text = st.text(st.characters() | st.characters(categories=["Cs"]) | st.just("\x00"))
anything_json = st.recursive(
    st.none() | st.booleans() | st.integers() | any_floats | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)


def post_text(api, url, payload):
    """POST `payload` as JSON text in which lone surrogates travel as `\\udXXX` escapes."""
    body = json.dumps(payload).encode()  # ASCII: NaN, surrogates and all escaped or bare
    return api.post(url, content=body, headers={"Content-Type": "application/json"})


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    run=st.fixed_dictionaries(
        {},
        optional={
            "name": any_text,
            "project": any_text,
            "host": any_text,
            "tags": st.lists(any_text, max_size=3),
            "versions": st.dictionaries(any_text, any_text, max_size=3),
            "config": st.dictionaries(any_text, anything_json, max_size=4),
        },
    ),
    metric_keys=st.lists(any_text, max_size=4),
    data=st.dictionaries(any_text, anything_json, max_size=4),
    error=any_text,
    reason=any_text,
)
@example(
    run={"name": "a\ud800", "host": "\x00", "config": {"\udfff": "\x00\ud800"}},
    metric_keys=["loss\ud800", "n\x00"],
    data={"\x00": "\ud800"},
    error="boom\x00\ud800",
    reason="\x00",
)
def test_any_text_in_a_run_and_its_events_never_gets_a_5xx(
    api, run, metric_keys, data, error, reason
):
    created = post_text(api, "/api/v1/runs", run)
    assert created.status_code < 500, created.text
    if created.status_code >= 400:  # e.g. a name with a control character: a clear 422
        assert created.status_code == 422, created.text
        created = post_text(api, "/api/v1/runs", {})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    events = [
        {"seq": 1, "kind": "epoch_end", "epoch": 0, "metrics": dict.fromkeys(metric_keys, 0.5)},
        {"seq": 2, "kind": "note", "data": data},
        {"seq": 3, "kind": "train_end", "data": {"status": "failed", "error": error}},
    ]
    for event in events:  # one at a time: a refused one does not hide the others' answers
        answer = post_text(api, f"/api/v1/runs/{run_id}/events", {"events": [event]})
        assert answer.status_code < 500, answer.text
    stop = post_text(api, f"/api/v1/runs/{run_id}/stop", {"reason": reason})
    assert stop.status_code < 500, stop.text
    for url in (
        f"/api/v1/runs/{run_id}",
        f"/api/v1/runs/{run_id}/events",
        f"/api/v1/runs/{run_id}/metrics",
        f"/runs/{run_id}",
        f"/compare?ids={run_id}",
        "/api/v1/runs",
    ):
        assert api.get(url).status_code == 200, url
