"""The benchmarks' quick mode runs end to end, so the runner can't rot. No timing is asserted."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent
TITLES = {
    "client": "## Client overhead",
    "ingest": "## Ingest: Callboard vs MLflow tracking server",
    "ceiling": "## Ingest vs the HTTP stack's ceiling",
    "latency": "## Latency: remote stop and live stream",
    "queries": "## Queries: long series and a busy runs list",
    "memory": "## Memory: server resident set size",
    "dashboard": "## Dashboard: a 20-metric run's page in Chromium",
    "postgres": "## PostgreSQL vs SQLite",
    "capacity": "## Capacity: live runs one server holds",
    "rules": "## Rules: ingest with 20 active rules",
    "aggregate": "## Aggregate: one metric of 20 runs",
    "many_runs": "## Many runs: the runs page of",
}


@pytest.mark.timeout(600)
def test_quick_benchmarks_run_and_print_their_tables(tmp_path):
    env = {**os.environ, "CALLBOARD_SPOOL_DIR": str(tmp_path / "spool")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-write", *TITLES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=570,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(TITLES) == sorted(BENCHMARKS), "every benchmark runs in quick mode"
    for title in TITLES.values():
        assert title in done.stdout, done.stdout[-3000:]
    assert "| holds |" in done.stdout
