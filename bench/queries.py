"""Queries: a long series downsampled for a chart, and the runs list of a busy server.

Both systems get the same data. Loading it through either REST API would take
hours for MLflow, so each system receives a template through its own API (one
run, a first batch of points) and the rest is written straight into its SQLite
file, row for row what its ingest path writes:
- Callboard: `metric_points` and `metric_rollups` rows and the run's `summary`; the `events` rows
  that an API upload would also have stored are left out (no query here reads them);
- MLflow: `metrics` rows and the `latest_metrics` row, as log-batch writes them;
  cloned runs copy the template's `runs`, `tags`, `metrics` and `latest_metrics` rows.
Each query is timed over HTTP from a warm keep-alive connection.
"""

import math
import sqlite3
import statistics
import tempfile
import time
import uuid

from .common import CallboardApi, percentile
from .mlflow_peer import MlflowApi, mlflow_server, mlflow_version
from .report import Report

TARGET_MS = 100.0
CHART_POINTS = 2000


def _series(points):
    """(step, value) of a noisy decreasing loss curve."""
    for step in range(points):
        yield step, 1.0 / math.sqrt(step + 1) + 0.01 * math.sin(step * 0.37)


def _timed(call, repeats, warm=True):
    if warm:
        call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


# -- Callboard ------------------------------------------------------------------------------


def load_callboard_series(root, database, points):
    """A run with `points` points of `loss` (and their rollups); returns its id."""
    from callboard.server.store.rollups import ROLLUP_COLUMNS, rollup_rows

    api = CallboardApi(root)
    run_id = api.create_run("long-series")
    api.log_steps(run_id, 0, 10, keys=("loss",))  # through the API: summary, events
    api.close()
    now = time.time()
    rows = [
        (run_id, "loss", step, None, value, now + step * 1e-3) for step, value in _series(points)
    ]
    with sqlite3.connect(database) as db:
        db.execute("DELETE FROM metric_points WHERE run_id = ?", (run_id,))
        db.execute("DELETE FROM metric_rollups WHERE run_id = ?", (run_id,))
        db.executemany(
            "INSERT INTO metric_points (run_id, key, step, epoch, value, time) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            f"INSERT INTO metric_rollups ({', '.join(ROLLUP_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(ROLLUP_COLUMNS))})",
            rollup_rows(run_id, rows),
        )
        step, value = rows[-1][2], rows[-1][4]
        db.execute(
            "UPDATE runs SET summary = ?, last_step = ? WHERE id = ?",
            (f'{{"loss": [{step}, {value!r}]}}', step, run_id),
        )
    return run_id


def load_callboard_runs(root, database, runs):
    """`runs` finished runs in project `many`, cloned from one created through the API.

    Finished: running clones, silent since they were "created", would all be marked
    lost by the server's sweep in one go while the benchmark measures.
    """
    api = CallboardApi(root)
    template = api.create_run("template", project="many")
    api.log_epoch(template, 0)
    api.close()
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM runs WHERE id = ?", (template,)).fetchone())
        del row["id"]
        columns = list(row)
        now = time.time()

        def clones():
            for index in range(runs - 1):
                when = now - (runs - index)
                clone = {
                    **row,
                    "uid": uuid.uuid4().hex,
                    "name": f"run-{index:05d}",
                    "created_at": when,
                    "updated_at": when,
                    "status": "finished",
                    "ended_at": when,
                }
                yield tuple(clone[c] for c in columns)

        db.executemany(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            clones(),
        )


# -- MLflow ---------------------------------------------------------------------------------


def load_mlflow_series(api, database, experiment, points):
    run_id = api.create_run(experiment, "long-series")
    api.log_batch(run_id, [{"key": "loss", "value": 1.0, "timestamp": 0, "step": 0}])
    now = int(time.time() * 1000)
    with sqlite3.connect(database) as db:
        db.execute("DELETE FROM metrics WHERE run_uuid = ?", (run_id,))
        db.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
            "VALUES ('loss', ?, ?, ?, ?, 0)",
            ((value, now + step, run_id, step) for step, value in _series(points)),
        )
        step, value = points - 1, list(_series(points))[-1][1]
        db.execute(
            "UPDATE latest_metrics SET value = ?, timestamp = ?, step = ? "
            "WHERE run_uuid = ? AND key = 'loss'",
            (value, now + step, step, run_id),
        )
    return run_id


def load_mlflow_runs(api, database, runs):
    experiment = api.create_experiment(f"many-{time.time_ns()}")
    template = api.create_run(experiment, "template")
    api.log_epoch(template, 0)
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row

        def rows(table):
            return [
                dict(r)
                for r in db.execute(f"SELECT * FROM {table} WHERE run_uuid = ?", (template,))
            ]

        run_row, children = (
            rows("runs")[0],
            {t: rows(t) for t in ("tags", "metrics", "latest_metrics")},
        )
        start = int(time.time() * 1000)
        clones = {"runs": [], **{t: [] for t in children}}
        for index in range(runs - 1):
            run_uuid, name = uuid.uuid4().hex, f"run-{index:05d}"
            when = start - (runs - index) * 1000
            clones["runs"].append(
                {
                    **run_row,
                    "run_uuid": run_uuid,
                    "name": name,
                    "start_time": when,
                    "artifact_uri": run_row["artifact_uri"].replace(template, run_uuid),
                }
            )
            for table, template_rows in children.items():
                for child in template_rows:
                    copy = {**child, "run_uuid": run_uuid}
                    if table == "tags" and copy["key"] == "mlflow.runName":
                        copy["value"] = name
                    clones[table].append(copy)
        for table, table_rows in clones.items():
            columns = list(table_rows[0])
            db.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                [tuple(r[c] for c in columns) for r in table_rows],
            )
    return experiment


# -- the benchmark --------------------------------------------------------------------------


def _stats(samples):
    return statistics.median(samples), percentile(samples, 95)


def run(quick=False):
    from tests.server_process import ServerProcess

    points, runs = (20_000, 500) if quick else (1_000_000, 10_000)
    repeats, full_repeats = (3, 1) if quick else (20, 1)
    figures = {}
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        ours_db = f"{tmp}/callboard.db"
        server = ServerProcess(f"sqlite:///{ours_db}").start()
        try:
            series_run = load_callboard_series(server.root, ours_db, points)
            load_callboard_runs(server.root, ours_db, runs)
            api = CallboardApi(server.root)
            chart = f"/api/v1/runs/{series_run}/metrics/loss?max_points={CHART_POINTS}"
            answer = api.http.get(chart)
            assert answer["total"] == points and len(answer["points"]) <= CHART_POINTS, answer
            figures["ours chart"] = _stats(_timed(lambda: api.http.get(chart), repeats))
            figures["ours full"] = _stats(
                _timed(
                    lambda: api.http.get(f"/api/v1/runs/{series_run}/metrics/loss"),
                    full_repeats,
                    warm=False,
                )
            )
            listing = "/api/v1/runs?limit=100"
            assert api.http.get(listing)["total"] >= runs
            figures["ours list"] = _stats(_timed(lambda: api.http.get(listing), repeats))
            api.close()
        finally:
            server.stop()

        with mlflow_server(f"{tmp}/mlflow", quick) as mlflow:
            api = MlflowApi(mlflow.root)
            experiment = api.create_experiment(f"series-{time.time_ns()}")
            series_run = load_mlflow_series(api, str(mlflow.database), experiment, points)
            many = load_mlflow_runs(api, str(mlflow.database), runs)
            sampled = api.get_history_sampled(series_run, "loss", CHART_POINTS)
            assert 0 < len(sampled) <= CHART_POINTS + 10, len(sampled)
            figures["mlflow chart"] = _stats(
                _timed(lambda: api.get_history_sampled(series_run, "loss", CHART_POINTS), repeats)
            )
            history = []
            figures["mlflow full"] = _stats(
                _timed(
                    lambda: history.append(len(api.get_history(series_run, "loss"))),
                    full_repeats,
                    warm=False,
                )
            )
            assert history[-1] == points, history
            assert len(api.search_runs([many])) == 100
            figures["mlflow list"] = _stats(_timed(lambda: api.search_runs([many]), repeats))
            api.close()

    def row(measure, ours, theirs, target):
        (ours_p50, ours_p95), (their_p50, _) = figures[ours], figures[theirs]
        return {
            "query": measure,
            "Callboard p50 ms": ours_p50,
            "Callboard p95 ms": ours_p95,
            "MLflow p50 ms": their_p50,
            "ratio (p50)": f"{their_p50 / ours_p50:,.1f}×",
            "target": f"≤ {target:.0f} ms" if target else "",
            "holds": ("yes" if ours_p95 <= target else "no") if target else "",
        }

    rows = [
        row(
            f"{points:,}-point series → {CHART_POINTS:,} points for a chart",
            "ours chart",
            "mlflow chart",
            TARGET_MS,
        ),
        row(f"runs list, newest 100 of {runs:,}", "ours list", "mlflow list", TARGET_MS),
        row(f"{points:,}-point series, every point", "ours full", "mlflow full", None),
    ]
    return Report(
        title="Queries: long series and a busy runs list, Callboard vs MLflow (both on SQLite)",
        rows=rows,
        notes=[
            f"MLflow {mlflow_version()}: the chart query is its downsampled "
            "`get-history-bulk-interval` (what its UI charts call), the full series is "
            "`get-history` page after page, the list is `runs/search` with max_results=100. "
            f"Callboard: `GET /runs/{{id}}/metrics/loss?max_points={CHART_POINTS}` (min and max "
            "per bucket, so spikes survive), the same without max_points for every point, "
            "and `GET /runs?limit=100`.",
            f"Timings: median and p95 of {repeats} calls after one warm-up call (the full "
            f"series: {full_repeats} call, no warm-up), over a keep-alive connection. "
            "Data: see the module docstring (a template through each API, the bulk written "
            "row for row into each SQLite file).",
        ],
    )
