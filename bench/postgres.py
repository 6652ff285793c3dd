"""PostgreSQL beside SQLite: concurrent ingest (one and two replicas) and a long-series chart.

Usage: `python bench/postgres.py [--quick]` (or `run(quick)` from the bench runner).

- Ingest: 8 clients (threads, one run and one keep-alive httpx connection each)
  post batches of epoch events to real `callboard serve` processes for a fixed
  time: one server on SQLite, one replica on PostgreSQL, two replicas sharing
  PostgreSQL (clients split between them, as a load balancer with keep-alive would).
- Series: a run with 1,000,000 points of one metric, loaded through the API, then
  `GET /metrics/loss?max_points=2000` timed over HTTP from a warm connection.

PostgreSQL is reached at `CALLBOARD_BENCH_POSTGRES` (default: the local test server);
each measurement gets a fresh database, dropped afterwards.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

if not __package__:  # run as `python bench/postgres.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import Report, machine_info  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "CALLBOARD_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
CLIENTS = 8
EVENTS_PER_REQUEST = 10
KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
CHART_POINTS = 2000
TARGET_MS = 100.0
SIZES = {
    "full": {"ingest_seconds": 15.0, "series_points": 1_000_000, "repeats": 30},
    "quick": {"ingest_seconds": 3.0, "series_points": 100_000, "repeats": 10},
}


# -- databases and servers --------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database():
    """A fresh, empty PostgreSQL database; its URL."""
    name = f"callboard_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def sqlite_database():
    with tempfile.TemporaryDirectory(prefix="callboard-bench-") as folder:
        yield f"sqlite:///{folder}/callboard.db"


@contextlib.contextmanager
def servers(database_url, count):
    """`count` servers on one database, started one after the other."""
    started = []
    try:
        for _ in range(count):
            started.append(ServerProcess(database_url).start())
        yield started
    finally:
        for server in started:
            server.stop()


def create_run(http, name, project="bench"):
    response = http.post("/api/v1/runs", json={"name": name, "project": project})
    response.raise_for_status()
    return response.json()["id"]


# -- ingest -----------------------------------------------------------------------------------


def _epoch_batch(first_seq):
    now = time.time()
    return [
        {
            "seq": seq,
            "kind": "epoch_end",
            "epoch": seq - 1,
            "time": now,
            "metrics": {key: 1.0 / seq + k for k, key in enumerate(KEYS)},
        }
        for seq in range(first_seq, first_seq + EVENTS_PER_REQUEST)
    ]


def _client(root, index, start, stop_at, results):
    latencies, events = [], 0
    with httpx.Client(base_url=root, timeout=60) as http:
        run_id = create_run(http, f"ingest-{index}")
        path = f"/api/v1/runs/{run_id}/events"
        seq = 1
        start.wait()
        while time.perf_counter() < stop_at[0]:
            started = time.perf_counter()
            response = http.post(path, json={"events": _epoch_batch(seq)})
            response.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            events += response.json()["accepted"]
            seq += EVENTS_PER_REQUEST
    results[index] = (events, latencies)


def measure_ingest(roots, seconds):
    """8 clients posting for `seconds`; client i talks to `roots[i % len(roots)]`."""
    start, stop_at, results = threading.Event(), [0.0], {}
    threads = [
        threading.Thread(target=_client, args=(roots[i % len(roots)], i, start, stop_at, results))
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every client has created its run
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if len(results) != CLIENTS:
        raise RuntimeError("a client failed; see the traceback above")
    events = sum(n for n, _ in results.values())
    latencies = sorted(ms for _, samples in results.values() for ms in samples)
    return {
        "events/s": events / elapsed,
        "requests/s": len(latencies) / elapsed,
        "p50 ms": statistics.median(latencies),
        "p95 ms": latencies[int(0.95 * (len(latencies) - 1))],
    }


def ingest_rows(seconds):
    setups = [
        ("SQLite, 1 server", sqlite_database, 1),
        ("PostgreSQL, 1 replica", postgres_database, 1),
        ("PostgreSQL, 2 replicas", postgres_database, 2),
    ]
    rows = []
    for label, database, count in setups:
        with database() as url, servers(url, count) as running:
            figures = measure_ingest([server.root for server in running], seconds)
        rows.append({"setup": label, **figures})
        print(f"  ingest: {label}: {figures['events/s']:,.0f} events/s", flush=True)
    baseline = rows[0]["events/s"]
    for row in rows:
        row["vs SQLite"] = f"{row['events/s'] / baseline:.2f}x"
    return rows


# -- series -----------------------------------------------------------------------------------


def load_series(root, points, batch=5000):
    """A run with `points` points of `loss`, posted through the API in big batches."""
    with httpx.Client(base_url=root, timeout=300) as http:
        run_id = create_run(http, "long-series")
        for first in range(0, points, batch):
            events = [
                {
                    "seq": step + 1,
                    "kind": "batch_end",
                    "step": step,
                    "time": 0.0,
                    "metrics": {"loss": 1.0 / (step + 1) + (0.5 if step % 9973 == 0 else 0.0)},
                }
                for step in range(first, min(first + batch, points))
            ]
            response = http.post(f"/api/v1/runs/{run_id}/events", json={"events": events})
            response.raise_for_status()
    return run_id


def measure_series(root, run_id, points, repeats):
    path = f"/api/v1/runs/{run_id}/metrics/loss"
    with httpx.Client(base_url=root, timeout=60) as http:
        answer = http.get(path, params={"max_points": CHART_POINTS}).json()  # warm
        assert answer["total"] == points, answer.get("total")
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            response = http.get(path, params={"max_points": CHART_POINTS})
            response.raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    median = statistics.median(samples)
    return {
        "points stored": points,
        "points returned": len(answer["points"]),
        "median ms": median,
        "p95 ms": samples[int(0.95 * (len(samples) - 1))],
        f"< {TARGET_MS:.0f} ms": "yes" if median < TARGET_MS else "NO",
    }


def series_rows(points, repeats):
    rows = []
    for label, database in (("SQLite", sqlite_database), ("PostgreSQL", postgres_database)):
        with database() as url, servers(url, 1) as (server,):
            started = time.perf_counter()
            run_id = load_series(server.root, points)
            loaded = time.perf_counter() - started
            figures = measure_series(server.root, run_id, points, repeats)
        rows.append({"database": label, **figures, "load s": loaded})
        print(f"  series: {label}: {figures['median ms']:.1f} ms median", flush=True)
    return rows


# -- report -----------------------------------------------------------------------------------


class Reports(list):
    """Several `Report`s printed as one (what the bench runner's `run` returns)."""

    def markdown(self):
        return "\n".join(report.markdown() for report in self)


def run(quick=False):
    """Both measurements, as two tables."""
    sizes = SIZES["quick" if quick else "full"]
    ingest = ingest_rows(sizes["ingest_seconds"])
    series = series_rows(sizes["series_points"], sizes["repeats"])
    ingest_report = Report(
        f"PostgreSQL vs SQLite: {CLIENTS} ingesting clients, "
        f"{sizes['series_points']:,}-point chart",
        rows=ingest,
        notes=[
            f"Ingest: {CLIENTS} threads x one run each, {EVENTS_PER_REQUEST} epoch events "
            f"({len(KEYS)} metrics each) per request, {sizes['ingest_seconds']:.0f} s per setup; "
            "with 2 replicas, clients alternate between them.",
            f"All servers, PostgreSQL and the client threads share this machine ({os.cpu_count()}"
            " CPUs): a second replica adds no CPU here, only a second process.",
        ],
    )
    series_report = Report(
        f"Downsampled series query (max_points={CHART_POINTS}) over HTTP, target "
        f"< {TARGET_MS:.0f} ms",
        rows=series,
        notes=["Points were loaded through the API (5,000 events per request)."],
    )
    return Reports([ingest_report, series_report])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 100k-point series")
    args = parser.parse_args(argv)
    print(f"Machine: {machine_info()}\n", flush=True)
    report = run(quick=args.quick)
    print()
    print(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
