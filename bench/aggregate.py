"""Aggregate: one metric of 20 runs × 100,000 steps, grouped, as a comparison page asks for it.

Usage: `python bench/aggregate.py [--quick]` (or `run(quick)` from the bench runner).

20 runs (4 learning rates, 5 runs each) post 100,000 steps of `loss` and
`val_loss` through the events API (5,000 events per request), on SQLite and on
PostgreSQL (`CALLBOARD_BENCH_POSTGRES`, a fresh database). Then, from a warm
keep-alive connection, after one warm-up call each:

- ours: `GET /api/v1/aggregate?ids=<20>&key=val_loss&group_by=config.optimizer.lr`
  (1,000 buckets at most: the 4 groups' mean, std, min, max and count per bucket);
- peer: what a page does without it, the 20 series one after the other through
  `GET /runs/{id}/metrics/val_loss?max_points=1000` (then it would still have to
  align and average them in the browser).

Target (issue 15): the aggregate ≤ 150 ms.
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/aggregate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import JsonConnection, percentile  # noqa: E402
from bench.postgres import postgres_database, sqlite_database  # noqa: E402
from bench.report import Report, machine_info  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

TARGET_MS = 150.0
LEARNING_RATES = (0.1, 0.01, 0.001, 0.0001)
KEYS = ("loss", "val_loss")
EVENTS_PER_REQUEST = 5000
MAX_POINTS = 1000
SIZES = {"full": (20, 100_000, 20), "quick": (20, 5_000, 5)}  # runs, steps, timed calls


def _values(run, step):
    """Falling noisy losses; each learning rate its own level, each run its own noise."""
    level = 1 + 0.1 * (run % len(LEARNING_RATES))
    trend = level / math.sqrt(1 + step / 500)
    return {key: trend + 0.02 * math.sin(step * 0.37 + run + i) for i, key in enumerate(KEYS)}


def ingest(root, runs, steps):
    """Create `runs` runs and post `steps` steps of every key to each; return (ids, seconds)."""
    http = JsonConnection(root, timeout=600)
    started = time.perf_counter()
    ids = []
    for run in range(runs):
        spec = {
            "name": f"aggregate-{run}",
            "project": "bench",
            "config": {"optimizer": {"lr": LEARNING_RATES[run % len(LEARNING_RATES)]}},
        }
        run_id = http.post("/api/v1/runs", spec)["id"]
        ids.append(run_id)
        for first in range(0, steps, EVENTS_PER_REQUEST):
            events = [
                {
                    "seq": step + 1,
                    "kind": "metrics",
                    "step": step,
                    "epoch": step // 1000,
                    "metrics": _values(run, step),
                }
                for step in range(first, min(steps, first + EVENTS_PER_REQUEST))
            ]
            http.post(f"/api/v1/runs/{run_id}/events", {"events": events})
    http.close()
    return ids, time.perf_counter() - started


def _timed(call, repeats):
    call()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), percentile(samples, 95)


def measure(database, runs, steps, repeats):
    """`{"ours": (p50, p95), "peer": (p50, p95), ...}` on a fresh database from `database()`."""
    with database() as url:
        server = ServerProcess(url).start()
        try:
            ids, ingest_s = ingest(server.root, runs, steps)
            http = JsonConnection(server.root)
            query = (
                f"/api/v1/aggregate?ids={','.join(map(str, ids))}&key=val_loss"
                f"&group_by=config.optimizer.lr&max_points={MAX_POINTS}"
            )
            groups = http.get(query)["groups"]
            assert [group["value"] for group in groups] == sorted(LEARNING_RATES), groups
            buckets = len(groups[0]["x"])
            assert (
                0 < buckets <= MAX_POINTS and sum(map(len, (g["run_ids"] for g in groups))) == runs
            )

            def one_by_one():
                for run_id in ids:
                    http.get(f"/api/v1/runs/{run_id}/metrics/val_loss?max_points={MAX_POINTS}")

            ours = _timed(lambda: http.get(query), repeats)
            peer = _timed(one_by_one, repeats)
            http.close()
        finally:
            server.stop()
    return {"ours": ours, "peer": peer, "ingest s": ingest_s, "buckets": buckets}


def run(quick=False):
    """Measure on SQLite and PostgreSQL; return a `Report`."""
    runs, steps, repeats = SIZES["quick" if quick else "full"]
    rows = []
    for label, database in (("SQLite", sqlite_database), ("PostgreSQL", postgres_database)):
        figures = measure(database, runs, steps, repeats)
        (ours_p50, ours_p95), (peer_p50, peer_p95) = figures["ours"], figures["peer"]
        rows.append(
            {
                "database": label,
                "aggregate p50 ms": ours_p50,
                "aggregate p95 ms": ours_p95,
                f"{runs} series one by one p50 ms": peer_p50,
                f"{runs} series one by one p95 ms": peer_p95,
                "ratio (p50)": f"{peer_p50 / ours_p50:,.1f}×",
                "target": f"≤ {TARGET_MS:.0f} ms",
                "holds (p95)": "yes" if ours_p95 <= TARGET_MS else "no",
                "ingest s": figures["ingest s"],
            }
        )
        print(f"  {label}: aggregate {ours_p50:.1f} ms p50", flush=True)
    return Report(
        title=f"Aggregate: one metric of {runs} runs × {steps:,} steps, grouped (issue 15)",
        rows=rows,
        notes=[
            f"`GET /api/v1/aggregate?ids=<{runs} runs>&key=val_loss&group_by=config.optimizer.lr"
            f"&max_points={MAX_POINTS}`: 4 groups of 5 runs, {figures['buckets']} buckets each "
            "(mean, population std, min, max, count); each run's bucket means come from the "
            "rollups' finite sums (migration 0008), a few rollups per bucket.",
            f"Peer (no previous figure exists): the same {runs} series fetched one by one through "
            f"`GET /runs/{{id}}/metrics/val_loss?max_points={MAX_POINTS}`, what a page would do "
            "without the endpoint (and it would still have to align and average them itself).",
            f"Data: {runs} runs × {steps:,} steps of {' and '.join(KEYS)} ("
            f"{runs * steps * len(KEYS):,} points), posted through the events API, "
            f"{EVENTS_PER_REQUEST:,} events per request. Timings: median and p95 of {repeats} "
            "calls after one warm-up, over a keep-alive connection; one `callboard serve` "
            "process on the same machine.",
        ],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{SIZES['quick'][1]:,} steps")
    args = parser.parse_args(argv)
    print(f"Machine: {machine_info()}\n", flush=True)
    print(run(quick=args.quick).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
