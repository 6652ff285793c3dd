"""Server memory: resident set size idle, under the 8-client ingest, and with live subscribers.

RSS is read from /proc (VmRSS) for the server process; for MLflow, whose
`mlflow server` runs a uvicorn supervisor and worker processes, it is the sum
over its process tree. MLflow has no live stream, so the subscriber row has no
peer figure.
"""

import asyncio
import tempfile
import threading
import time

import httpx

from .common import CallboardApi, epoch_event, pss_mib, rss_mib
from .ingest import CLIENTS, callboard_peer, concurrent_epochs, mlflow_peer
from .mlflow_peer import mlflow_server, mlflow_version
from .report import Report

SUBSCRIBERS = 100


class PeakSampler:
    """Samples the summed RSS of `pids()` every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pids, interval=0.05):
        self.pids = pids
        self.interval = interval
        self.peak = 0.0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._halt.is_set():
            self.peak = max(self.peak, rss_mib(*self.pids()))
            self._halt.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._halt.set()
        self._thread.join()


def _under_ingest(peer, pids, seconds):
    with PeakSampler(pids) as sampler:
        rate = concurrent_epochs(peer, seconds)
    return sampler.peak, rate


def _with_subscribers(root, pid, subscribers, settle_seconds):
    """Open `subscribers` live streams on one run, post events they all receive; return RSS."""
    api = CallboardApi(root)
    run_id = api.create_run("watched")
    received = []

    async def subscriber(client, ready, done):
        async with client.stream("GET", f"{root}/api/v1/runs/{run_id}/stream") as response:
            ready.release()
            seen = 0
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    seen += 1
                    if seen == 10:
                        received.append(1)
                if done.is_set():
                    return

    async def main():
        limits = httpx.Limits(max_connections=subscribers + 10)
        timeout = httpx.Timeout(30, read=None)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            ready, done = asyncio.Semaphore(0), asyncio.Event()
            tasks = [
                asyncio.create_task(subscriber(client, ready, done)) for _ in range(subscribers)
            ]
            for _ in range(subscribers):
                await asyncio.wait_for(ready.acquire(), 60)
            connected = rss_mib(pid)
            for epoch in range(10):
                await asyncio.to_thread(
                    api.post_events, run_id, [epoch_event(api.next_seq(run_id), epoch)]
                )
            deadline = time.monotonic() + 60
            while len(received) < subscribers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(settle_seconds)
            streaming = rss_mib(pid)
            done.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return connected, streaming

    try:
        connected, streaming = asyncio.run(main())
    finally:
        api.close()
    if len(received) < subscribers:
        raise RuntimeError(f"only {len(received)} of {subscribers} subscribers got every event")
    return connected, streaming


def run(quick=False):
    from tests.server_process import ServerProcess

    seconds = 2 if quick else 10
    subscribers = 20 if quick else SUBSCRIBERS
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        server = ServerProcess(f"sqlite:///{tmp}/callboard.db").start()
        try:
            pid = server.process.pid
            time.sleep(1)
            ours_idle = rss_mib(pid)
            ours_peak, ours_rate = _under_ingest(
                callboard_peer(server.root), lambda: [pid], seconds
            )
            connected, streaming = _with_subscribers(
                server.root, pid, subscribers, 0.5 if quick else 2
            )
        finally:
            server.stop()
        with mlflow_server(f"{tmp}/mlflow", quick) as mlflow:
            time.sleep(1)
            mlflow_idle = rss_mib(*mlflow.pids())
            mlflow_idle_pss = pss_mib(*mlflow.pids())
            mlflow_peak, mlflow_rate = _under_ingest(mlflow_peer(mlflow.root), mlflow.pids, seconds)
            mlflow_processes = len(mlflow.pids())
    rows = [
        {"state": "idle, after start", "Callboard MiB": ours_idle, "MLflow MiB": mlflow_idle},
        {
            "state": f"peak during {CLIENTS}-client epoch ingest",
            "Callboard MiB": ours_peak,
            "MLflow MiB": mlflow_peak,
        },
        {
            "state": f"{subscribers} live SSE subscribers connected",
            "Callboard MiB": connected,
            "MLflow MiB": "no live stream",
        },
        {
            "state": f"{subscribers} subscribers, each after receiving 10 events",
            "Callboard MiB": streaming,
            "MLflow MiB": "no live stream",
        },
    ]
    return Report(
        title="Memory: server resident set size (RSS), Callboard vs MLflow",
        rows=rows,
        notes=[
            f"Callboard: one `callboard serve` process on SQLite. MLflow {mlflow_version()}: "
            f"`mlflow server` (SQLite), {mlflow_processes} processes summed (supervisor, "
            f"its default workers and job runners); their RSS sum counts shared pages once per "
            f"process: their PSS sum (shared pages split) was {mlflow_idle_pss:,.0f} MiB idle.",
            f"During the ingest rows: Callboard {ours_rate:,.0f} req/s, MLflow "
            f"{mlflow_rate:,.1f} req/s ({seconds} s each); peak sampled every 50 ms.",
        ],
    )
