"""Ingest throughput: Callboard vs the MLflow tracking server, both on SQLite, over HTTP.

Three loads, each run against both servers in turn:
- one client posting one epoch (4 metrics) per request, sequentially;
- 8 clients (threads, one run each) doing the same at once;
- one client posting in bulk, each system's largest batch (Callboard: 5,000
  events of 4 metrics; MLflow: log-batch's limit of 1,000 metrics).
"""

import tempfile
import threading
import time

from .common import CallboardApi
from .mlflow_peer import MlflowApi, mlflow_server, mlflow_version
from .report import Report

TARGETS = {"sequential": 100, "clients": 30, "bulk": 50}
CLIENTS = 8
CALLBOARD_BULK_STEPS = 5000  # events per request: the server's MAX_EVENTS_PER_BATCH
MLFLOW_BULK_STEPS = 250  # 250 steps x 4 keys = log-batch's 1,000-metric limit


class Peer:
    """One system under test: how to make a client, a run, and post to it."""

    def __init__(self, name, root, make_api, experiment=None):
        self.name = name
        self.root = root
        self.make_api = make_api
        self.experiment = experiment

    def new_client(self, run_name):
        api = self.make_api(self.root)
        if isinstance(api, MlflowApi):
            return api, api.create_run(self.experiment, run_name)
        return api, api.create_run(run_name)


def callboard_peer(root):
    return Peer("Callboard", root, CallboardApi)


def mlflow_peer(root):
    api = MlflowApi(root)
    experiment = api.create_experiment(f"bench-{time.time_ns()}")
    api.close()
    return Peer("MLflow", root, MlflowApi, experiment)


def _loop(work, seconds, max_calls):
    """Call `work(i)` until `seconds` pass or `max_calls` calls; return (calls, elapsed)."""
    started = time.perf_counter()
    deadline = started + seconds
    calls = 0
    while calls < max_calls and time.perf_counter() < deadline:
        work(calls)
        calls += 1
    return calls, time.perf_counter() - started


def sequential_epochs(peer, seconds, max_calls=100_000):
    """Epoch posts per second from one client."""
    api, run_id = peer.new_client("sequential")
    try:
        api.log_epoch(run_id, 0)  # warm the connection
        calls, elapsed = _loop(lambda i: api.log_epoch(run_id, i + 1), seconds, max_calls)
    finally:
        api.close()
    return calls / elapsed


def concurrent_epochs(peer, seconds, clients=CLIENTS):
    """Epoch posts per second, all clients together; each client posts to its own run."""
    setups = [peer.new_client(f"client-{i}") for i in range(clients)]
    counts = [0] * clients
    errors = []
    barrier = threading.Barrier(clients + 1)
    window = {}

    def client(index):
        api, run_id = setups[index]
        try:
            api.log_epoch(run_id, 0)
            barrier.wait()
            deadline = window["start"] + seconds
            epoch = 1
            while time.perf_counter() < deadline:
                api.log_epoch(run_id, epoch)
                epoch += 1
            counts[index] = epoch - 1
        except Exception as exc:  # reported below: a failed client must not hang the run
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    window["start"] = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - window["start"]
    for api, _ in setups:
        api.close()
    if errors:
        raise RuntimeError(f"{peer.name}: {len(errors)} client(s) failed: {errors[0]!r}")
    return sum(counts) / elapsed


def bulk_points(peer, steps_per_request, seconds, max_calls):
    """Metric points per second from one client posting its largest batches."""
    api, run_id = peer.new_client("bulk")
    keys = 4
    try:
        api.log_steps(run_id, 0, steps_per_request)  # warm
        calls, elapsed = _loop(
            lambda i: api.log_steps(run_id, (i + 1) * steps_per_request, steps_per_request),
            seconds,
            max_calls,
        )
    finally:
        api.close()
    return calls * steps_per_request * keys / elapsed


def _row(measure, ours, theirs, target, unit):
    ratio = ours / theirs if theirs else float("inf")
    return {
        "measure": measure,
        "Callboard": f"{ours:,.0f} {unit}",
        "MLflow": f"{theirs:,.1f} {unit}" if theirs < 100 else f"{theirs:,.0f} {unit}",
        "ratio": f"{ratio:,.1f}×",
        "target": f"≥ {target}×",
        "holds": "yes" if ratio >= target else "no",
    }


def _measure(peer, seconds, bulk_steps, bulk_calls):
    return {
        "sequential": sequential_epochs(peer, seconds),
        "clients": concurrent_epochs(peer, seconds),
        "bulk": bulk_points(peer, bulk_steps, seconds, bulk_calls),
    }


def run(quick=False):
    from tests.server_process import ServerProcess

    seconds = 2 if quick else 10
    mlflow_seconds = 2 if quick else 20
    bulk_calls = 3 if quick else 40
    figures = {}
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        # One system at a time: on a small machine the idle one's processes would
        # take CPU from the measured one.
        server = ServerProcess(f"sqlite:///{tmp}/callboard.db").start()
        try:
            figures["Callboard"] = _measure(
                callboard_peer(server.root), seconds, CALLBOARD_BULK_STEPS, bulk_calls
            )
        finally:
            server.stop()
        with mlflow_server(f"{tmp}/mlflow", quick) as mlflow:
            figures["MLflow"] = _measure(
                mlflow_peer(mlflow.root), mlflow_seconds, MLFLOW_BULK_STEPS, bulk_calls * 5
            )
    a, b = figures["Callboard"], figures["MLflow"]
    rows = [
        _row(
            "1 client, epoch posts (4 metrics)",
            a["sequential"],
            b["sequential"],
            TARGETS["sequential"],
            "req/s",
        ),
        _row(
            f"{CLIENTS} clients, epoch posts (4 metrics)",
            a["clients"],
            b["clients"],
            TARGETS["clients"],
            "req/s",
        ),
        _row("bulk, 1 client, largest batches", a["bulk"], b["bulk"], TARGETS["bulk"], "points/s"),
    ]
    return Report(
        title="Ingest: Callboard vs MLflow tracking server (both on SQLite)",
        rows=rows,
        notes=[
            f"MLflow {mlflow_version()} `mlflow server` with its defaults (4 workers), "
            "SQLite backend; Callboard `callboard serve` (1 process), SQLite default.",
            "Each request of the first two rows carries one epoch of 4 metrics and is "
            "committed before the answer (Callboard: one `epoch_end` event; MLflow: one "
            "log-batch, as its Keras autologging sends).",
            f"Bulk: Callboard {CALLBOARD_BULK_STEPS:,} events x 4 metrics per request; "
            f"MLflow {MLFLOW_BULK_STEPS} steps x 4 metrics (its 1,000-metric limit).",
            "Each system runs alone while it is measured. "
            f"Loads are generated by threads in one Python process on the same machine "
            "(keep-alive `http.client` connections, bodies encoded by orjson); "
            f"{seconds} s per load for Callboard, "
            f"{mlflow_seconds} s for MLflow.",
        ],
    )
