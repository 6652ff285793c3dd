"""The dashboard's hot queries use their indexes on PostgreSQL.

The statements are captured as the app issues them (through its routes and the
functions the stream and the sweeper call), then EXPLAINed with the same
parameters on a database big enough that a sequential scan would show.
"""

import contextlib
import time

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from callboard.server.api.routes.stream import BATCH, _read_run_changes, _read_runs_changes
from callboard.server.control import control_query
from callboard.server.lifecycle import mark_silent_runs
from callboard.server.main import create_app
from callboard.server.settings import Settings
from callboard.server.store import migrate
from callboard.server.store.run_writes import ChangedRuns
from callboard.server.store.series import read_series

from .fresh_postgres import fresh_postgres_database

PROJECTS, RUNS = 20, 2000
SERIES_RUNS, KEYS, STEPS = (1, 2, 3, 4, 5), ("loss", "acc", "val_loss", "val_acc"), 1000
EVENT_RUNS, EVENTS_PER_RUN, LONG_RUN_EVENTS = range(1, 101), 1000, 20_000
BIG_TABLES = {"runs", "events", "metric_points", "metric_rollups"}
# The series' index, the partial index of its NaN points, and the rollups' key.
SERIES_INDEXES = {"ix_points_run_key_step", "ix_points_nan", "metric_rollups_pkey"}


def load(url):
    """20 projects, 2,000 runs, 20,000 metric points (5 runs x 4 keys), 119,000 events.

    Run 1 logged every batch: 20,000 events; runs 2 to 100 have 1,000 each.
    """
    now = time.time()
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO projects (name, created_at) "
            "SELECT 'project-' || g, 0 FROM generate_series(1, %s) g",
            (PROJECTS,),
        )
        with cursor.copy(
            "COPY runs (uid, project_id, name, status, source, config, tags, versions, params, "
            "summary, epochs_done, last_seq, created_at, updated_at) FROM STDIN"
        ) as copy:
            summary = '{"loss": [0, 1.0], "acc": [0, 0.5], "val_loss": [0, 1], "val_acc": [0, 1]}'
            for i in range(RUNS):
                status = "running" if i >= RUNS - 10 else "finished"
                created = now - 3600 * 24 + i * 30
                copy.write_row(
                    (
                        f"uid-{i}",
                        1 + i % PROJECTS,
                        f"run-{i}",
                        status,
                        "client",
                        "{}",
                        "[]",
                        "{}",
                        "{}",
                        summary,
                        0,
                        0,
                        created,
                        created + 10,
                    )
                )
        with cursor.copy(
            "COPY metric_points (run_id, key, step, epoch, value, time) FROM STDIN"
        ) as copy:
            for run_id in SERIES_RUNS:
                for key in KEYS:
                    for step in range(STEPS):
                        value = None if step % 250 == 0 else 1.0 / (step + 1)
                        copy.write_row((run_id, key, step, step // 10, value, now))
        with cursor.copy(
            "COPY events (run_id, seq, kind, epoch, step, time, received_at, metrics, data) "
            "FROM STDIN"
        ) as copy:
            for run_id in EVENT_RUNS:
                for seq in range(1, (LONG_RUN_EVENTS if run_id == 1 else EVENTS_PER_RUN) + 1):
                    copy.write_row((run_id, seq, "epoch_end", seq, None, now, now, "{}", "{}"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


@pytest.fixture(scope="module")
def app():
    with fresh_postgres_database("callboard_plans") as url:
        migrate.upgrade(url)
        load(url)
        settings = Settings(database_url=url, skip_migrations=True, allowed_hosts="testserver")
        app = create_app(settings)
        with TestClient(app) as client:
            app.state.client = client
            yield app


@contextlib.contextmanager
def captured(app):
    """Collect the `(statement, parameters)` the app sends to PostgreSQL."""
    statements = []

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    engine = app.state.database.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plan_nodes(app, statement, parameters):
    """Every node of the statement's plan, as EXPLAIN (FORMAT JSON) gives it."""
    with app.state.database.engine.raw_connection() as raw:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        root = cursor.fetchone()[0][0]["Plan"]
    nodes, stack = [], [root]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", ()))
    return nodes


def the_plan(app, statements, *tables):
    """The plans of the captured statements reading any of `tables` first (FROM table)."""
    matching = [
        (statement, parameters)
        for statement, parameters in statements
        if any(f"FROM {table}" in " ".join(statement.split()) for table in tables)
    ]
    assert matching, f"no statement read {tables}: {[s[:80] for s, _ in statements]}"
    return [plan_nodes(app, statement, parameters) for statement, parameters in matching]


def indexes(nodes):
    return {node["Index Name"] for node in nodes if "Index Name" in node}


def assert_no_seq_scan_on_big_tables(nodes):
    scanned = {node.get("Relation Name") for node in nodes if node["Node Type"] == "Seq Scan"}
    assert not scanned & BIG_TABLES, f"sequential scan on {scanned & BIG_TABLES}"


def assert_uses(plans, index):
    for nodes in plans:
        assert index in indexes(nodes), f"{index} not in {indexes(nodes)}"
        assert_no_seq_scan_on_big_tables(nodes)


def assert_series_indexes(plans):
    """Every statement finds the series through one of its indexes, none scans a table."""
    for nodes in plans:
        assert indexes(nodes) & SERIES_INDEXES, f"no series index in {indexes(nodes)}"
        assert_no_seq_scan_on_big_tables(nodes)


@pytest.mark.parametrize("max_points", [None, 200], ids=["all", "downsampled"])
def test_series_queries_use_the_series_indexes(app, max_points):
    with captured(app) as statements, app.state.database.reader() as session:
        points, total = read_series(session, 3, "val_loss", max_points=max_points)
    assert total == STEPS and points
    assert_series_indexes(the_plan(app, statements, "metric_points", "metric_rollups"))


def test_series_route_uses_the_series_indexes(app):
    with captured(app) as statements:
        response = app.state.client.get("/api/v1/runs/2/metrics/acc", params={"max_points": 100})
    assert response.json()["total"] == STEPS
    assert_series_indexes(the_plan(app, statements, "metric_points", "metric_rollups"))


def test_runs_list_newest_first_reads_ix_runs_created_in_order(app):
    with captured(app) as statements:
        runs = app.state.client.get("/api/v1/runs", params={"limit": 50}).json()
    assert runs["total"] == RUNS and runs["runs"][0]["name"] == f"run-{RUNS - 1}"
    plans = the_plan(app, statements, "runs")
    page = [nodes for nodes in plans if nodes[0]["Node Type"] == "Limit"]
    assert len(page) == 1
    assert_uses(page, "ix_runs_created")
    # The index order is the list order: no sort between the index and the LIMIT.
    assert not [node for node in page[0] if "Sort" in node["Node Type"]]
    for nodes in plans:  # the total too
        assert_no_seq_scan_on_big_tables(nodes)


def test_runs_list_of_one_project_uses_ix_runs_project_created(app):
    with captured(app) as statements:
        runs = app.state.client.get("/api/v1/runs", params={"project": "project-7"}).json()
    assert runs["total"] == RUNS // PROJECTS
    assert {run["project"] for run in runs["runs"]} == {"project-7"}
    assert_uses(the_plan(app, statements, "runs"), "ix_runs_project_created")


def test_stream_reads_a_long_run_from_the_start_in_index_order(app):
    # A new browser on a run with 20,000 events: the first batch straight off the index.
    with captured(app) as statements:
        _run, events = _read_run_changes(app.state.database, 1, 0)
    assert [event["seq"] for event in events] == list(range(1, BATCH + 1))
    [nodes] = the_plan(app, statements, "events")
    assert_uses([nodes], "ix_events_run_id")
    assert not [node for node in nodes if "Sort" in node["Node Type"]]
    assert_uses(the_plan(app, statements, "runs"), "runs_pkey")


def test_stream_reads_events_after_a_cursor_by_ix_events_run_id(app):
    # A caught-up browser, woken by a new event: only what is after its cursor.
    run_id = 7
    last_id = LONG_RUN_EVENTS + (run_id - 1) * EVENTS_PER_RUN
    with captured(app) as statements:
        _run, events = _read_run_changes(app.state.database, run_id, last_id - 4)
    assert [event["seq"] for event in events] == list(range(997, 1001))
    assert_uses(the_plan(app, statements, "events"), "ix_events_run_id")
    assert_uses(the_plan(app, statements, "runs"), "runs_pkey")


def test_control_lookup_uses_the_primary_key(app):
    # The poll goes straight to the driver (no SQLAlchemy events): explain its statement.
    control = app.state.client.get("/api/v1/runs/1234/control").json()
    assert control["run_id"] == 1234
    statement = control_query(app.state.database.engine.dialect)
    assert_uses([plan_nodes(app, statement.sql, (1234,))], "runs_pkey")


def test_runs_stream_reads_recent_changes_by_ix_runs_updated(app):
    since = time.time() - 3600 * 24 + (RUNS - 20) * 30
    with captured(app) as statements:
        changed = _read_runs_changes(app.state.database, since, None)
    assert 0 < len(changed) <= 20
    assert_uses(the_plan(app, statements, "runs"), "ix_runs_updated")


def test_sweeper_finds_silent_runs_by_ix_runs_status_updated(app):
    database = app.state.database
    with captured(app) as statements, database.write_engine.connect() as connection:
        mark_silent_runs(connection, ChangedRuns(), lost_after_seconds=60)
        connection.rollback()
    assert_uses(the_plan(app, statements, "runs"), "ix_runs_status_updated")


@pytest.mark.parametrize(
    ("sort", "index"),
    [
        ("newest", "ix_runs_created"),
        ("oldest", "ix_runs_created"),
        ("updated", "ix_runs_updated"),
        ("name", "ix_runs_name"),
    ],
)
def test_each_sort_of_the_runs_list_reads_a_page_off_its_index(app, sort, index):
    with captured(app) as statements:
        runs = app.state.client.get("/api/v1/runs", params={"sort": sort, "limit": 100}).json()
    assert runs["total"] == RUNS and len(runs["runs"]) == 100
    page = [
        nodes for nodes in the_plan(app, statements, "runs") if nodes[0]["Node Type"] == "Limit"
    ]
    assert_uses(page, index)
    # At most an incremental sort of equal keys (ix_runs_updated and ix_runs_name end
    # before the id), never a sort of every run.
    assert not [node for node in page[0] if node["Node Type"] == "Sort"]


def test_archived_runs_are_found_by_ix_runs_archived(app):
    with captured(app) as statements:
        runs = app.state.client.get("/api/v1/runs", params={"archived": "true"}).json()
    assert runs["total"] == 0
    assert_uses(the_plan(app, statements, "runs"), "ix_runs_archived")
