"""`GET /metrics`: Prometheus and OpenMetrics text, parsed by `prometheus_client`'s own parsers."""

import math
import threading
import time

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from callboard.server.settings import Settings
from tests.server.helpers import create_run, epoch_event, post_events, serving

SCRAPE_TOKEN = "prometheus-scrape-secret"
# What Prometheus 3 sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
EVENTS_ROUTE = "/api/v1/runs/{run_id}/events"


@pytest.fixture
def settings(database_url):
    return Settings(
        database_url=database_url,
        skip_migrations=True,
        sweep_interval_seconds=0.2,
        metrics_token=SCRAPE_TOKEN,
    )


def scrape(api, **headers):
    answer = api.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(answer.text)}


def run_values(families):
    """`{(project, run, run_id, metric): value}` of the `callboard_run_metric` gauges."""
    return {
        tuple(sample.labels[k] for k in ("project", "run", "run_id", "metric")): sample.value
        for sample in families["callboard_run_metric"].samples
    }


def samples(families, name, **labels):
    """Values of the samples called `name` whose labels include `labels`."""
    return [
        sample.value
        for family in families.values()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_live_runs_latest_values_are_gauges_by_project_and_run(api):
    vision = create_run(api, "resnet", project="vision")
    post_events(api, vision, epoch_event(1, 0, loss=0.9), epoch_event(2, 1, loss=0.5))
    post_events(api, vision, epoch_event(3, 2, **{"batch/loss": "NaN", "val_loss": "Infinity"}))
    text = create_run(api, "bert", project="text")
    post_events(api, text, epoch_event(1, 0, loss=2.0))
    ended = create_run(api, "old", project="text")
    post_events(api, ended, epoch_event(1, 0, loss=7.0), {"seq": 2, "kind": "train_end"})

    families = scrape(api)
    values = run_values(families)
    assert values[("vision", "resnet", str(vision), "loss")] == 0.5  # the latest, not the first
    assert math.isnan(values[("vision", "resnet", str(vision), "batch/loss")])
    assert values[("vision", "resnet", str(vision), "val_loss")] == math.inf
    assert values[("text", "bert", str(text), "loss")] == 2.0
    assert not [key for key in values if key[2] == str(ended)]  # an ended run has no gauges
    assert "NaN" in families["callboard_run_metric"].documentation
    runs = {s.labels["status"]: s.value for s in families["callboard_runs"].samples}
    assert runs["running"] == 2 and runs["finished"] == 1 and runs["paused"] == 0


def test_one_query_reads_the_values_and_never_the_runs_config(api):
    run_id = create_run(api, "r", config={"huge": "x" * 1000})
    post_events(api, run_id, epoch_event(1, 0, loss=1.0))
    statements = []
    engine = api.app.state.database.engine

    def record(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert run_values(scrape(api))[("default", "r", str(run_id), "loss")] == 1.0
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len([s for s in statements if "summary" in s]) == 1, statements
    assert not [s for s in statements if "config" in s], statements


def test_openmetrics_when_the_scraper_asks_for_it(api):
    run_id = create_run(api, "resnet", project="vision")
    post_events(api, run_id, epoch_event(1, 0, loss=0.25))
    answer = api.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    families = {family.name: family for family in openmetrics_families(answer.text)}
    assert run_values(families)[("vision", "resnet", str(run_id), "loss")] == 0.25
    assert families["callboard_ingest_events"].type == "counter"
    assert families["callboard_http_request_duration_seconds"].type == "histogram"


def test_requests_are_labelled_by_route_template_and_status_class(api):
    run_id = create_run(api, "r")
    assert api.get(f"/api/v1/runs/{run_id}").status_code == 200
    assert api.get("/api/v1/runs/999999").status_code == 404
    assert api.get("/no/such/page").status_code == 404
    families = scrape(api)
    count = "callboard_http_request_duration_seconds_count"
    template = "/api/v1/runs/{run_id}"
    assert samples(families, count, method="GET", route=template, status="2xx") == [1]
    assert samples(families, count, method="GET", route=template, status="4xx") == [1]
    assert samples(families, count, route="unmatched", status="4xx") == [1]
    histogram = families["callboard_http_request_duration_seconds"]
    routes = {sample.labels["route"] for sample in histogram.samples}
    assert not [route for route in routes if "999999" in route or "/no/such" in route]


def test_event_posts_count_their_stored_events_on_either_lane(api):
    """The ingest lane (clean JSON) and the app (here a form body) share one route label."""
    run_id = create_run(api, "r")
    post_events(api, run_id, epoch_event(1, 0, loss=1.0), epoch_event(2, 1, loss=0.9))
    post_events(api, run_id, epoch_event(2, 1, loss=0.9), epoch_event(3, 2, loss=0.8))
    refused = api.post(f"/api/v1/runs/{run_id}/events", data={"events": "x"})
    assert refused.status_code == 422
    stock = api.post("/publish/epoch/end/?run=stock", content=b'{"epoch": 0, "loss": 1.0}')
    assert stock.status_code == 200
    families = scrape(api)
    assert samples(families, "callboard_ingest_events_total") == [4]  # 3 new, 1 duplicate skipped
    count = "callboard_http_request_duration_seconds_count"
    assert samples(families, count, method="POST", route=EVENTS_ROUTE, status="2xx") == [2]
    assert samples(families, count, method="POST", route=EVENTS_ROUTE, status="4xx") == [1]


def test_tokens_guard_metrics_like_the_api(api):
    assert api.get("/metrics").status_code == 200  # open mode, as the API
    root = api.post("/api/v1/tokens", json={"name": "root", "role": "admin"}).json()["token"]
    tokens = {
        role: api.post(
            "/api/v1/tokens", json={"name": role, "role": role}, headers=bearer(root)
        ).json()["token"]
        for role in ("read", "ingest")
    }
    assert api.get("/metrics").status_code == 401
    assert api.get("/metrics", headers=bearer("cb_wrong")).status_code == 401
    assert api.get("/metrics", headers=bearer(SCRAPE_TOKEN[:-1])).status_code == 401
    assert api.get("/metrics", headers=bearer(tokens["ingest"])).status_code == 403
    assert api.get("/metrics", headers=bearer(tokens["read"])).status_code == 200
    assert api.get("/metrics", headers=bearer(SCRAPE_TOKEN)).status_code == 200


def test_a_project_scoped_token_sees_only_its_projects_runs(api):
    mine = create_run(api, "a", project="team-a")
    other = create_run(api, "b", project="team-b")
    for run_id in (mine, other):
        post_events(api, run_id, epoch_event(1, 0, loss=1.0))
    root = api.post("/api/v1/tokens", json={"name": "root", "role": "admin"}).json()["token"]
    scoped = api.post(
        "/api/v1/tokens",
        json={"name": "a-reader", "role": "read", "project": "team-a"},
        headers=bearer(root),
    ).json()["token"]
    seen = scrape(api, **bearer(scoped))
    assert {key[0] for key in run_values(seen)} == {"team-a"}
    assert samples(seen, "callboard_runs", status="running") == [1]
    everything = scrape(api, **bearer(SCRAPE_TOKEN))
    assert {key[0] for key in run_values(everything)} == {"team-a", "team-b"}
    assert samples(everything, "callboard_runs", status="running") == [2]


def wait_for(root, name, expected, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(root).text)}
        value = samples(families, name)
        if value == [expected]:
            return
        assert time.monotonic() < deadline, f"{name} is {value}, never {expected}"
        time.sleep(0.05)


def test_held_live_streams_are_counted_while_they_last(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with serving(Settings(database_url=url, stream_keepalive_seconds=0.2)) as (_app, root):
        metrics = f"{root}/metrics"
        wait_for(metrics, "callboard_live_streams", 0)
        opened, done = threading.Event(), threading.Event()

        def hold_a_stream():
            with httpx.stream("GET", f"{root}/api/v1/stream", timeout=10) as answer:
                opened.set()
                for _ in answer.iter_lines():
                    if done.is_set():
                        return

        holder = threading.Thread(target=hold_a_stream)
        holder.start()
        try:
            assert opened.wait(10)
            wait_for(metrics, "callboard_live_streams", 1)
            waiters = samples(
                {f.name: f for f in text_string_to_metric_families(httpx.get(metrics).text)},
                "callboard_live_waiters",
            )
            assert waiters[0] >= 2  # the stream's, and the rule engine's own
        finally:
            done.set()
            holder.join(10)
        wait_for(metrics, "callboard_live_streams", 0)
        queue = samples(
            {f.name: f for f in text_string_to_metric_families(httpx.get(metrics).text)},
            "callboard_group_commit_queue",
        )
        assert queue == [0]
