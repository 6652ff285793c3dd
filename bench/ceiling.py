"""Ingest against the HTTP stack's ceiling: Callboard vs a bare endpoint on the same uvicorn.

The bare endpoint is a plain ASGI app served like `callboard serve` serves
Callboard (its `uvicorn_options`, no access log): it reads the request body
and answers a fixed JSON object, nothing else. Its rate is the most any route
on this stack can answer; Callboard's epoch posts (one `epoch_end` event of 4
metrics per request, committed before the answer) are shown as a fraction
of it, with 1 client and with 8, on SQLite and on PostgreSQL.

Usage: `python -m bench ceiling`; `python -m bench.ceiling --port N` serves the bare endpoint.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from .ingest import CLIENTS, callboard_peer, concurrent_epochs, sequential_epochs
from .report import Report

TARGET = 0.5  # Callboard's rate as a fraction of the ceiling's
BARE_ANSWER = b'{"id":1,"accepted":1,"duplicates":0,"status":"running"}'
BARE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BARE_ANSWER)).encode()),
]


async def bare_app(scope, receive, send):
    """Reads the whole request body, then answers `BARE_ANSWER`: the stack's least work."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        return await send({"type": "lifespan.shutdown.complete"})
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": BARE_HEADERS})
    await send({"type": "http.response.body", "body": BARE_ANSWER})


def serve_bare(port):
    """Serve `bare_app` on 127.0.0.1:`port` as `callboard serve` serves Callboard."""
    import uvicorn

    from callboard.server.http.serving import uvicorn_options
    from callboard.server.settings import Settings

    uvicorn.run(
        bare_app,
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
        **uvicorn_options(Settings()),
    )


class BareProcess:
    """`bare_app` in a child process on a free port, for a `with` block."""

    def __enter__(self):
        from tests.server_process import free_port

        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "bench.ceiling", "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                httpx.get(self.root, timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("the bare endpoint did not start")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _interleaved(servers, seconds, rounds):
    """Each load's best rate and least server CPU per request, per server, measured in turns.

    `servers` maps names to `(root, pid)`. On a shared machine a neighbour's
    burst would hit one system only if each were measured once; in turns,
    each side's best window is compared. CPU time per request (the server
    process's, all threads) hardly depends on what else runs.
    """
    best = {}
    loads = {"1 client": sequential_epochs, f"{CLIENTS} clients": concurrent_epochs}
    for load, measure in loads.items():
        for _ in range(rounds):
            for name, (root, pid) in servers.items():
                window = seconds / rounds
                cpu = process_cpu_seconds(pid)
                rate = measure(callboard_peer(root), window)
                cpu_us = (process_cpu_seconds(pid) - cpu) / (rate * window) * 1e6
                rate_was, cpu_was = best.get((load, name), (0.0, float("inf")))
                best[load, name] = (max(rate, rate_was), min(cpu_us, cpu_was))
    return best


def process_cpu_seconds(pid):
    """User and system CPU time of process `pid` so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _databases(quick):
    """SQLite, then PostgreSQL when one answers (full runs only): `(name, context of its URL)`."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        yield "SQLite", contextlib.nullcontext(f"sqlite:///{tmp}/callboard.db")
    if quick:
        return
    try:
        import psycopg

        from .postgres import POSTGRES_ADMIN_URL, postgres_database

        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except Exception:  # no PostgreSQL here: SQLite only
        return
    yield "PostgreSQL", postgres_database()


def measure(seconds, rounds, quick=False):
    """`{(database, load): (rate, CPU µs per request) of Callboard, then of the bare endpoint}`."""
    from tests.server_process import ServerProcess

    figures = {}
    with BareProcess() as bare:
        for database, opened in _databases(quick):
            with opened as url:
                server = ServerProcess(url).start(timeout=180)  # migrations on a busy box
                servers = {
                    "Callboard": (server.root, server.process.pid),
                    "bare": (bare.root, bare.process.pid),
                }
                try:
                    best = _interleaved(servers, seconds, rounds)
                finally:
                    server.stop()
            for load in dict.fromkeys(load for load, _ in best):
                figures[database, load] = (*best[load, "Callboard"], *best[load, "bare"])
    return figures


STAGE_NOTES = {
    "parse": "validating the EventBatch from the body",
    "auth": "the caller from the token cache, scope, rate limit",
    "store": "SELECT run, INSERT event, points, rollups, UPDATE run",
    "commit": "the transaction: BEGIN IMMEDIATE / COMMIT (SQLite: on the event loop)",
    "hops": "waiting for the loop's next turn (SQLite) or the writer thread and back",
    "answer": "encoding and sending the answer",
    "route, rest": "the lane's own code between those (value limit, turns, live publish)",
    "middleware": "reading headers and body, the layers ahead of the ingest lane",
}


def _split_rows(figures, splits):
    """One row per stage: median µs per database, then the HTTP side of a request."""
    rows = [
        {"stage": stage, **{f"{db} µs": _us(s[stage]) for db, s in splits.items()}, "what": what}
        for stage, what in STAGE_NOTES.items()
    ]
    rows.append(
        {
            "stage": "**app, in-process**",
            **{f"{db} µs": _us(s["total"]) for db, s in splits.items()},
            "what": "median of the whole app call (not the sum of the medians); mean: "
            + ", ".join(f"{db} {_us(s['mean'])}" for db, s in splits.items()),
        }
    )
    http = {}
    for db, s in splits.items():
        rate, _, ceiling, _ = figures[db, "1 client"]
        http[db] = (1e6 / rate, 1e6 / ceiling, s["total"])
    rows.append(
        {
            "stage": "bare endpoint over HTTP",
            **{f"{db} µs": _us(bare) for db, (_, bare, _) in http.items()},
            "what": "uvicorn, loopback and the client for the least work (1 / its rate)",
        }
    )
    floor = {db: http[db][1] + stages["store"] + stages["commit"] for db, stages in splits.items()}
    rows.append(
        {
            "stage": "**the database's floor**",
            **{f"{db} µs": _us(least) for db, least in floor.items()},
            "what": "bare endpoint + store + commit, as if all else were free: at most "
            + ", ".join(f"{db} {http[db][1] / least:.0%}" for db, least in floor.items())
            + " of the bare endpoint's 1-client rate while every post commits alone",
        }
    )
    rest = ", ".join(f"{db} {_us(ours - bare - app)}" for db, (ours, bare, app) in http.items())
    rows.append(
        {
            "stage": "**Callboard over HTTP**",
            **{f"{db} µs": _us(ours) for db, (ours, _, _) in http.items()},
            "what": f"1 / its 1-client rate; minus the app and the bare endpoint: {rest} µs",
        }
    )
    return rows


def _us(value):
    return "" if value is None else f"{value:,.0f}"


def run(quick=False):
    from .split import split

    seconds, rounds, requests = (1, 1, 100) if quick else (12, 4, 2000)
    figures = measure(seconds, rounds, quick)
    rows, splits = [], {}
    for (database, load), (rate, cpu, ceiling, bare_cpu) in figures.items():
        fraction = rate / ceiling
        rows.append(
            {
                "load (epoch posts)": load,
                "database": database,
                "Callboard": f"{rate:,.0f} req/s",
                "bare endpoint": f"{ceiling:,.0f} req/s",
                "fraction": f"{fraction:.0%}",
                "target": f"≥ {TARGET:.0%}",
                "holds": "yes" if fraction >= TARGET else "no",
                "server CPU µs/request": f"{cpu:,.0f} vs {bare_cpu:,.0f}",
                "CPU fraction": f"{bare_cpu / cpu:.0%}",
            }
        )
    for database, opened in _databases(quick):
        with opened as url:
            splits[database] = split(url, requests)
    return Report(
        title="Ingest vs the HTTP stack's ceiling (a bare endpoint on the same uvicorn)",
        rows=rows,
        notes=[
            "Bare endpoint: an ASGI app that reads the body and answers a fixed JSON object, "
            "served with Callboard's uvicorn options (`serving.uvicorn_options`, httptools, "
            "no access log) in its own process.",
            "Each request is one `epoch_end` event of 4 metrics (what the client sends per "
            "epoch), committed before the answer; clients as in the ingest table "
            "(keep-alive `http.client`, one run each).",
            f"Measured in turns: {rounds} windows of {seconds / rounds:g} s per system and "
            "load, alternating, each system's best window shown (both servers stay up; "
            "the idle one sleeps).",
            "Server CPU µs/request: the server process's CPU time (all threads) over a "
            "window / its requests, the least of the windows (Callboard vs bare); CPU "
            "fraction = bare / Callboard, the rate fraction a CPU-bound server would reach "
            "whatever else the machine runs.",
        ],
        tables=[
            (
                f"Where a 1-client epoch post's time goes: `bench/split.py` drives the app "
                f"in-process as uvicorn would ({requests:,} posts on a uvloop loop, stages "
                "timed by wrappers for this run only); medians in µs. Hops are thread "
                "wake-ups: on a busy machine they wait for a CPU.",
                _split_rows(figures, splits),
            )
        ],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve the bare endpoint.")
    parser.add_argument("--port", type=int, required=True)
    serve_bare(parser.parse_args(argv).port)


if __name__ == "__main__":
    main()
