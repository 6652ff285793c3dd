"""GET /api/v1/aggregate: group statistics of one metric over many runs (SQLite, PostgreSQL).

Answers are checked against a pure-Python computation of the same definition:
buckets from `bucket_grid`, each run's mean of its finite points per bucket,
then mean, population std (`statistics.pstdev`), min, max and count per group.
"""

import itertools
import math
import statistics

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from callboard.server.main import create_app
from callboard.server.settings import Settings
from callboard.server.store import migrate
from callboard.server.store.aggregate import NARROW_WIDTH, bucket_grid
from callboard.server.store.db import Database
from callboard.server.store.models import ROLLUP_WIDTHS, MetricRollup
from callboard.server.store.rollups import SUMMABLE_LIMIT
from callboard.server.store.storable import encode_number

from .helpers import create_run

PATH = "/api/v1/aggregate"
_keys = itertools.count()


def post_points(api, run_id, key, points, batch=5000):
    """`points` as `metrics` events, `batch` per request: `(step, epoch, value)` each
    (epoch may be None)."""
    events = [
        {
            "seq": seq,
            "kind": "metrics",
            "step": step,
            **({} if epoch is None else {"epoch": epoch}),
            "metrics": {key: encode_number(value)},
        }
        for seq, (step, epoch, value) in enumerate(points, start=1)
    ]
    for first in range(0, len(events), batch):
        answer = api.post(
            f"/api/v1/runs/{run_id}/events", json={"events": events[first : first + batch]}
        )
        assert answer.status_code == 200, answer.text


def aggregate(api, ids, key, **params):
    answer = api.get(PATH, params={"ids": ",".join(map(str, ids)), "key": key, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()


def summable(value):
    return value is not None and -SUMMABLE_LIMIT <= value <= SUMMABLE_LIMIT


def expected_groups(points_by_run, group_of, axis="step", max_points=1000):
    """`[(value, run ids, {x: (mean, std, min, max, count)})]` in value order (None last),
    computed point by point."""
    at = 0 if axis == "step" else 1
    xs = [p[at] for points in points_by_run.values() for p in points if p[at] is not None]
    if not xs:
        return []
    grid = bucket_grid(min(xs), max(xs), max_points, ROLLUP_WIDTHS if axis == "step" else ())
    run_means = {}
    for run_id, points in points_by_run.items():
        if not any(p[at] is not None for p in points):
            continue
        buckets = {}
        for point in points:
            if point[at] is not None and summable(point[2]):
                start = grid.start((point[at] - grid.origin) // grid.width)
                buckets.setdefault(start, []).append(point[2])
        run_means[run_id] = {x: math.fsum(v) / len(v) for x, v in buckets.items()}
    groups = {}
    for run_id in sorted(run_means):
        groups.setdefault(group_of[run_id], []).append(run_id)
    found = []
    for value in sorted(groups, key=lambda v: (v is None, v if v is not None else 0)):
        run_ids = groups[value]
        stats = {}
        for x in sorted({x for run_id in run_ids for x in run_means[run_id]}):
            values = [run_means[r][x] for r in run_ids if x in run_means[r]]
            stats[x] = (
                statistics.fmean(values),
                statistics.pstdev(values),
                min(values),
                max(values),
                len(values),
            )
        found.append((value, run_ids, stats))
    return found


def assert_matches(answer, expected):
    assert [(g["value"], g["run_ids"]) for g in answer["groups"]] == [
        (value, run_ids) for value, run_ids, _ in expected
    ]
    for group, (_value, _run_ids, stats) in zip(answer["groups"], expected, strict=True):
        assert group["x"] == list(stats)
        columns = ("mean", "std", "min", "max", "count")
        for x, got in zip(group["x"], zip(*(group[c] for c in columns), strict=True), strict=True):
            scale = max(1.0, *(abs(v) for v in stats[x][:4]))
            for name, have, want in zip(columns, got, stats[x], strict=True):
                assert math.isclose(have, want, rel_tol=1e-9, abs_tol=1e-9 * scale), (x, name)


# -- against a pure-Python computation, on a real SQLite database ---------------------------


@pytest.fixture(scope="module")
def sqlite_api(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('aggregate') / 'callboard.db'}"
    migrate.upgrade(url)
    settings = Settings(database_url=url, skip_migrations=True, allowed_hosts="testserver")
    with TestClient(create_app(settings)) as client:
        yield client


values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([math.nan, math.inf, -math.inf, 2e300, 0.0]),
)
points = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=400),
        st.none() | st.integers(min_value=0, max_value=30),
        values,
    ),
    max_size=60,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=st.lists(st.tuples(points, st.sampled_from([0.1, 0.01, None])), min_size=1, max_size=4),
    axis=st.sampled_from(["step", "epoch"]),
    max_points=st.integers(min_value=2, max_value=60),
)
def test_answers_match_a_point_by_point_computation(sqlite_api, runs, axis, max_points):
    key = f"metric-{next(_keys)}"
    points_by_run, group_of = {}, {}
    for series, lr in runs:
        config = {} if lr is None else {"optimizer": {"lr": lr}}
        run_id = create_run(sqlite_api, "prop", config=config)
        post_points(sqlite_api, run_id, key, series, batch=7)  # rollups merge across posts
        points_by_run[run_id], group_of[run_id] = series, lr
    ids = sorted(points_by_run)
    params = {"group_by": "config.optimizer.lr", "x": axis, "max_points": max_points}
    answer = aggregate(sqlite_api, ids, key, **params)
    assert_matches(answer, expected_groups(points_by_run, group_of, axis, max_points))
    at = 0 if axis == "step" else 1
    without = [r for r in ids if not any(p[at] is not None for p in points_by_run[r])]
    assert answer["missing_run_ids"] == without
    assert all(len(group["x"]) <= max_points for group in answer["groups"])


@given(
    low=st.integers(min_value=0, max_value=2**40),
    span=st.integers(min_value=0, max_value=2**40),
    max_buckets=st.integers(min_value=2, max_value=10_000),
)
def test_the_grid_covers_the_range_in_at_most_max_buckets(low, span, max_buckets):
    high = low + span
    grid = bucket_grid(low, high, max_buckets)
    assert grid.origin <= low and (high - grid.origin) // grid.width < max_buckets
    assert grid.start(0) == low
    if span < max_buckets:  # a short range: one bucket per x
        assert (grid.origin, grid.width) == (low, 1)
    if grid.rollup_width is None:
        assert grid.width <= NARROW_WIDTH
    else:  # edges on the rollups' edges: a bucket is whole rollups
        assert grid.width % grid.rollup_width == 0 and grid.origin % grid.rollup_width == 0


# -- hand cases, SQLite and PostgreSQL -------------------------------------------------------


def test_nan_and_infinities_are_left_out_and_runs_without_the_metric_listed(api):
    a = create_run(api, "a", config={"optimizer": {"lr": 0.01}})
    b = create_run(api, "b", config={"optimizer": {"lr": 0.01}})
    c = create_run(api, "c", config={"optimizer": {"lr": 0.1}})
    d = create_run(api, "d", config={"optimizer": {"lr": 0.1}})
    bare = create_run(api, "no metric")
    post_points(api, a, "val_loss", [(0, 0, 1.0), (1, 0, math.nan), (2, 0, 3.0)])
    post_points(api, b, "val_loss", [(0, 0, 2.0), (1, 0, 5.0), (2, 0, math.inf)])
    post_points(api, c, "val_loss", [(0, 0, 4.0), (1, 0, -math.inf)])
    post_points(api, d, "val_loss", [(2, 0, math.nan)])
    post_points(api, bare, "loss", [(0, 0, 1.0)])
    answer = aggregate(api, [bare, d, c, b, a, 999], "val_loss", group_by="config.optimizer.lr")
    assert answer["key"] == "val_loss" and answer["x_axis"] == "step"
    assert answer["group_by"] == "config.optimizer.lr"
    assert answer["missing_run_ids"] == [bare]
    low, high = answer["groups"]
    assert (low["label"], low["value"], low["run_ids"]) == ("0.01", 0.01, [a, b])
    assert low["x"] == [0, 1, 2] and low["mean"] == [1.5, 5.0, 3.0]
    assert low["std"] == [0.5, 0.0, 0.0] and low["count"] == [2, 1, 1]
    assert (low["min"], low["max"]) == ([1.0, 5.0, 3.0], [2.0, 5.0, 3.0])
    # d has only a NaN: in its group, with no value anywhere.
    assert (high["label"], high["run_ids"], high["x"], high["mean"]) == ("0.1", [c, d], [0], [4.0])


def test_groups_by_config_tags_project_and_none(api):
    runs = {
        create_run(api, "a", "vision", tags=["gpu", "base"], config={"opt": "adam", "n": 2}): 1.0,
        create_run(api, "b", "vision", tags=["base", "gpu"], config={"opt": "sgd", "n": 10}): 2.0,
        create_run(api, "c", "nlp", config={"opt": "adam", "n": 2.0}): 4.0,
        create_run(api, "d", "nlp", tags=["cpu"], config={"n": [1, 2]}): 8.0,
    }
    a, b, c, d = runs
    for run_id, value in runs.items():
        post_points(api, run_id, "loss", [(5, 1, value)])
    ids = list(runs)

    def groups(group_by):
        answer = aggregate(api, ids, "loss", group_by=group_by)
        assert answer["group_by"] == group_by
        return [(g["label"], g["value"], g["run_ids"], g["mean"]) for g in answer["groups"]]

    assert groups("config.opt") == [
        ("adam", "adam", [a, c], [2.5]),
        ("sgd", "sgd", [b], [2.0]),
        ("(none)", None, [d], [8.0]),
    ]
    # Numbers numerically (2 and 2.0 are one value), then anything else by its JSON.
    assert groups("config.n") == [
        ("2", 2, [a, c], [2.5]),
        ("10", 10, [b], [2.0]),
        ("[1, 2]", [1, 2], [d], [8.0]),
    ]
    assert groups("tags") == [
        ("base, gpu", ["base", "gpu"], [a, b], [1.5]),
        ("cpu", ["cpu"], [d], [8.0]),
        ("(no tags)", [], [c], [4.0]),
    ]
    assert groups("project") == [("nlp", "nlp", [c, d], [6.0]), ("vision", "vision", [a, b], [1.5])]
    assert groups("none") == [("all runs", None, ids, [3.75])]
    assert aggregate(api, ids, "loss")["group_by"] == "none"


def test_epoch_alignment_skips_points_without_an_epoch(api):
    a, b = create_run(api, "a"), create_run(api, "b")
    post_points(api, a, "acc", [(10, 0, 0.1), (20, 0, 0.3), (30, 1, 0.5), (40, None, 9.0)])
    post_points(api, b, "acc", [(100, 1, 0.7), (200, 2, 0.9)])
    (group,) = aggregate(api, [a, b], "acc", x="epoch")["groups"]
    assert group["x"] == [0, 1, 2]
    assert group["mean"] == pytest.approx([0.2, 0.6, 0.9])
    assert group["count"] == [1, 2, 1]
    only_steps = create_run(api, "steps only")
    post_points(api, only_steps, "acc", [(1, None, 1.0)])
    answer = aggregate(api, [a, only_steps], "acc", x="epoch")
    assert answer["missing_run_ids"] == [only_steps] and answer["groups"][0]["run_ids"] == [a]


def test_a_key_no_run_has_answers_empty_groups(api):
    run_id = create_run(api)
    post_points(api, run_id, "loss", [(0, 0, 1.0)])
    answer = aggregate(api, [run_id], "nope", group_by="tags")
    assert answer["groups"] == [] and answer["missing_run_ids"] == [run_id]


def test_long_series_read_from_rollups_equal_the_points(api, settings):
    """Buckets wider than NARROW_WIDTH come from rollup sums; a series stored without
    rollups is read from its points: both give the point-by-point answer."""
    series = {
        create_run(api, "a"): [(step, None, math.sin(step / 7) * 100) for step in range(3, 5000)],
        create_run(api, "b"): [
            (step, None, math.inf if step % 97 == 0 else step / 3) for step in range(0, 7000, 2)
        ],
    }
    ids = list(series)
    group_of = dict.fromkeys(ids)
    for run_id, points in series.items():
        post_points(api, run_id, "loss", points)
    expected = expected_groups(series, group_of, max_points=100)
    assert bucket_grid(0, 6998, 100).rollup_width == 16
    assert_matches(aggregate(api, ids, "loss", max_points=100), expected)
    database = Database(settings.database_url)
    try:
        with database.writer.begin() as session:
            session.execute(delete(MetricRollup).where(MetricRollup.run_id == ids[1]))
    finally:
        database.dispose()
    assert_matches(aggregate(api, ids, "loss", max_points=100), expected)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_a_project_token_sees_only_its_projects_runs(api):
    mine, theirs = create_run(api, "mine", "team-a"), create_run(api, "theirs", "team-b")
    bare = create_run(api, "bare", "team-b")
    for run_id in (mine, theirs):
        post_points(api, run_id, "loss", [(0, 0, 1.0 if run_id == mine else 100.0)])
    admin = api.post("/api/v1/tokens", json={"name": "root", "role": "admin"}).json()["token"]
    spec = {"name": "a-reader", "role": "read", "project": "team-a"}
    reader = api.post("/api/v1/tokens", json=spec, headers=bearer(admin)).json()["token"]
    ingest = {"name": "ingest", "role": "ingest"}
    ingester = api.post("/api/v1/tokens", json=ingest, headers=bearer(admin)).json()["token"]
    ids = ",".join(map(str, (mine, theirs, bare)))
    params = {"ids": ids, "key": "loss", "group_by": "project"}
    answer = api.get(PATH, params=params, headers=bearer(reader)).json()
    # Like /extremes: the other project's runs are left out, not even listed as missing.
    assert [(g["label"], g["run_ids"], g["mean"]) for g in answer["groups"]] == [
        ("team-a", [mine], [1.0])
    ]
    assert answer["missing_run_ids"] == []
    everything = api.get(PATH, params=params, headers=bearer(admin)).json()
    assert [g["run_ids"] for g in everything["groups"]] == [[mine], [theirs]]
    assert everything["missing_run_ids"] == [bare]
    assert api.get(PATH, params=params).status_code == 401
    assert api.get(PATH, params=params, headers=bearer(ingester)).status_code == 403


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"group_by": "bogus"}, "'config.<key>'"),
        ({"group_by": "config."}, "'tags', 'project' or 'none'"),
        ({"group_by": "Tags"}, "got 'Tags'"),
        ({"x": "time"}, "'step' or 'epoch'"),
        ({"max_points": 1}, "greater than or equal to 2"),
        ({"max_points": 10_001}, "less than or equal to 10000"),
        ({"max_points": "many"}, "valid integer"),
        ({"key": ""}, "at least 1 character"),
        ({"key": "x" * 201}, "at most 200 characters"),
        ({"key": "bad\x00key"}, "pattern"),
        ({"ids": "1,,2"}, "pattern"),
        ({"ids": ""}, "pattern"),
    ],
)
def test_bad_parameters_are_422_saying_why(api, params, names):
    answer = api.get(PATH, params={"ids": "1", "key": "loss", **params})
    assert answer.status_code == 422, answer.text
    assert names in str(answer.json()["detail"])


@pytest.mark.parametrize(
    "params",
    [
        {"group_by": "config.a.b.c.d.e.f.g.h.i"},
        {"group_by": "config.huge"},
        {"group_by": "config.\u00e9t\u00e9\U0001f600"},
        {"group_by": "config.%00"},
        {"key": "\u00e9t\u00e9/\U0001f600"},
        {"ids": f"{2**31},999999999999999999"},
        {"max_points": 10_000, "x": "epoch"},
        {"max_points": 2},
    ],
)
def test_odd_inputs_answer_not_500(api, params):
    run_id = create_run(api, config={"huge": 10**400, "a": {"b": None}})
    post_points(api, run_id, "loss", [(0, 0, 1.0), (2**62, 2**31 - 1, 2.0)])
    answer = api.get(PATH, params={"ids": str(run_id), "key": "loss", **params})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("query", ["key=%ED%A0%80", "key=loss&group_by=config.%ED%A0%80%FF"])
def test_undecodable_text_in_the_query_is_not_500(api, query):
    run_id = create_run(api)
    answer = api.get(f"{PATH}?ids={run_id}&{query}")
    assert answer.status_code in (200, 422), answer.text


def test_values_beyond_the_summable_limit_are_left_out_like_infinities(api):
    """A point of 1e301 is finite, but summing such points could overflow (PostgreSQL
    refuses that with an error): means leave them out."""
    run_id = create_run(api)
    post_points(api, run_id, "loss", [(0, 0, 1e301), (0, 0, 1e301), (0, 0, 2.0), (1, 0, -1e301)])
    (group,) = aggregate(api, [run_id], "loss")["groups"]
    assert (group["x"], group["mean"]) == ([0], [2.0])


def test_migration_0008_rebuilds_the_rollups_ingest_keeps(api, settings):
    run_id = create_run(api)
    points = [(step, None, v) for step, v in enumerate([1.5, math.inf, math.nan, -2.0, 1e301] * 9)]
    post_points(api, run_id, "loss", points)
    database = Database(settings.database_url)

    def rollups():
        with database.reader() as session:
            rows = session.query(MetricRollup).order_by(MetricRollup.width, MetricRollup.bucket)
            return [(r.width, r.bucket, r.finite_sum, r.finite_points, r.points) for r in rows]

    try:
        kept = rollups()
        # Steps 0-15: 4 × 1.5, 3 × -2.0, 3 infinities, 3 beyond the limit, 3 NaN (not counted).
        assert kept[0] == (16, 0, 0.0, 7, 13)
        migrate.downgrade(settings.database_url, "0007")
        migrate.upgrade(settings.database_url)
        assert rollups() == kept
    finally:
        database.dispose()
