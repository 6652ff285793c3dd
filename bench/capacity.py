"""Capacity: how many live runs one server holds, each with its command channel and its events.

Each run, as a training with `RemoteMonitor(batch_frequency=...)` and
`RemoteControl` does, holds `GET /runs/{id}/commands/pending?wait=25` open
(push) and posts one events request every 5 s (random phase): an `epoch_end`
and 10 `batch_end` events of 4 metrics. A prober issues `checkpoint` commands
to random runs (5/s) and times each until the run's held long-poll answers it
(the run then reports it applied). Polling, today's `RemoteStop`, asks
`GET /runs/{id}/control` every second instead, and the prober issues `stop`s.
N steps up until both targets fail; each step measures a window after a ramp.

The load generator is this one asyncio process (uvloop, a lean HTTP/1.1 client
over asyncio streams); its CPU share is reported beside the server's.
"""

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter

from .ceiling import _databases, process_cpu_seconds
from .common import EPOCH_KEYS, percentile, rss_mib
from .lean_http import Connection
from .probes import busy_cpu, open_sockets, own_cpu, settled_rss
from .report import Report

PERIOD = 5.0  # seconds between a run's events requests
BATCH_EVENTS = 10
WAIT = 25  # the push channel's long-poll, as the client holds it
POLL_INTERVAL = 1.0  # RemoteStop's
COMMAND_RATE = 5.0  # commands issued per second
INGEST_TARGET_MS = 100.0
DELIVERY_TARGET_MS = 250.0  # pushed; polled: POLL_INTERVAL more
GRACE = 2.0  # seconds after a window for its last commands to arrive
MAX_CONNECTIONS = 20_000  # the server's CALLBOARD_MAX_CONNECTIONS here (default 4,096)
SIZES = {
    "full": {
        "steps": (250, 500, 1000, 2000, 3000),
        "replica steps": (1000, 2000, 3000),
        "ramp": 5.5,
        "window": 10.0,
        "held": 2000,
    },
    "quick": {"steps": (20,), "replica steps": (), "ramp": 1.0, "window": 2.0, "held": 20},
}


def events_body(seq, epoch):
    """An epoch's `batch_end` events and its `epoch_end`, 4 metrics each, from `seq` on."""
    now = time.time()
    metrics = {key: 1.0 / (epoch + 1) for key in EPOCH_KEYS}
    batches = [
        {"seq": seq + i, "kind": "batch_end", "step": epoch * BATCH_EVENTS + i, "time": now}
        | {"metrics": metrics}
        for i in range(BATCH_EVENTS)
    ]
    last = {"seq": seq + BATCH_EVENTS, "kind": "epoch_end", "epoch": epoch, "time": now}
    return {"events": [*batches, last | {"metrics": metrics}]}


class Load:
    """The runs of one server setup (one or more replicas), stepped through N by `step`.

    Run `i` talks to replica `i % len(roots)`; its commands are issued through the next
    replica, so with two they cross between replicas.
    """

    def __init__(self, roots, push):
        self.roots, self.push = roots, push
        self.runs = []  # run ids, created as steps need them
        self.seq, self.after, self.stopped = {}, {}, set()
        self.issued = {}  # run id -> when its command was issued (perf_counter)

    async def create_runs(self, count, clients=16):
        async def create(indices):
            connection = Connection(self.roots[0])
            for i in indices:
                status, answer = await connection.request(
                    "POST", "/api/v1/runs", {"name": f"capacity-{i}", "project": "capacity"}
                )
                if status != 201:
                    raise RuntimeError(f"POST /runs: HTTP {status}: {answer}")
                self.runs.append(answer["id"])
            connection.close()

        todo = range(len(self.runs), count)
        await asyncio.gather(*(create(todo[k::clients]) for k in range(clients)))

    def root(self, index, offset=0):
        return self.roots[(index + offset) % len(self.roots)]

    async def step(self, n, ramp, window, pids):
        """One step's figures: N runs for `ramp` + `window` s, measured over the window."""
        await self.create_runs(n)
        self.measuring, self.ingest, self.delivery = False, [], []
        self.errors = Counter()
        ids = self.runs[:n]
        channel = self.hold if self.push else self.poll
        tasks = [asyncio.ensure_future(channel(i, run)) for i, run in enumerate(ids)]
        tasks += [asyncio.ensure_future(self.post_events(i, run)) for i, run in enumerate(ids)]
        await asyncio.sleep(ramp)
        prober = asyncio.ensure_future(self.issue_commands(ids))
        cpu, mine, busy = [process_cpu_seconds(p) for p in pids], own_cpu(), busy_cpu()
        started = time.monotonic()
        self.measuring = True
        await asyncio.sleep(window)
        self.measuring = False
        seconds = time.monotonic() - started
        server_cpu = sum(process_cpu_seconds(p) for p in pids) - sum(cpu)
        load_cpu = own_cpu() - mine
        others = busy_cpu() - busy - server_cpu - load_cpu
        rss = rss_mib(*pids)
        prober.cancel()
        deadline = time.monotonic() + GRACE + (0 if self.push else POLL_INTERVAL)
        while self.issued and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        lost, self.issued = len(self.issued), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, prober, return_exceptions=True)
        return {
            "ingest": self.ingest,
            "delivery": self.delivery,
            "undelivered": lost,
            "server CPU": server_cpu / seconds,
            "own CPU": load_cpu / seconds,
            "others CPU": max(0.0, others) / seconds,
            "RSS": rss,
            "errors": self.errors,
            "seconds": seconds,
        }

    async def call(self, connection, method, path, body=None):
        """The answer's JSON, or None after counting an error (then a pause, as a client's)."""
        try:
            status, answer = await connection.request(method, path, body)
        except Exception as exc:  # a connection refused or reset, an answer cut short
            self.errors[type(exc).__name__] += 1
            connection.close()
            await asyncio.sleep(1)
            return None
        if status >= 400:
            self.errors[f"HTTP {status}"] += 1
            await asyncio.sleep(1)
            return None
        return answer

    async def post_events(self, index, run):
        connection = Connection(self.root(index))
        with contextlib.closing(connection):
            await asyncio.sleep(random.uniform(0, PERIOD))
            due = time.monotonic()
            while True:
                seq = self.seq.get(run, 1)
                body = events_body(seq, seq // (BATCH_EVENTS + 1))
                started = time.perf_counter()
                if await self.call(connection, "POST", f"/api/v1/runs/{run}/events", body):
                    self.seq[run] = seq + BATCH_EVENTS + 1
                    if self.measuring:
                        self.ingest.append(time.perf_counter() - started)
                due += PERIOD
                while due < time.monotonic():  # a slow answer: the missed epochs go in the next
                    due += PERIOD
                await asyncio.sleep(due - time.monotonic())

    async def hold(self, index, run):
        """The push channel: a long-poll held at a time; each command answered is applied."""
        connection = Connection(self.root(index))
        wait = random.uniform(5, WAIT)  # spread the long-polls' renewals
        with contextlib.closing(connection):
            while True:
                path = f"/api/v1/runs/{run}/commands/pending?after={self.after.get(run, 0)}"
                answer = await self.call(connection, "GET", f"{path}&wait={wait:.1f}")
                wait = WAIT
                for command in (answer or {}).get("commands", ()):
                    self.delivered(run)
                    self.after[run] = command["id"]
                    outcome = f"/api/v1/runs/{run}/commands/{command['id']}/outcome"
                    await self.call(connection, "POST", outcome, {"state": "applied"})

    async def poll(self, index, run):
        """Today's polling: `GET /control` every `POLL_INTERVAL` s until a stop shows."""
        connection = Connection(self.root(index))
        with contextlib.closing(connection):
            await asyncio.sleep(random.uniform(0, POLL_INTERVAL))
            due = time.monotonic()
            while True:
                answer = await self.call(connection, "GET", f"/api/v1/runs/{run}/control")
                if answer and answer["stop_requested"]:
                    self.delivered(run)
                due += POLL_INTERVAL
                await asyncio.sleep(max(0.0, due - time.monotonic()))

    def delivered(self, run):
        issued = self.issued.pop(run, None)
        if issued is not None:
            self.delivery.append(time.perf_counter() - issued)

    async def issue_commands(self, ids):
        """`COMMAND_RATE` commands a second to random runs with none outstanding."""
        kind = "checkpoint" if self.push else "stop"
        connections = {root: Connection(root) for root in self.roots}
        try:
            while True:
                index = random.randrange(len(ids))
                run = ids[index]
                if run not in self.issued and run not in self.stopped:
                    if not self.push:
                        self.stopped.add(run)  # a stop is for good: each run gets one
                    self.issued[run] = issued = time.perf_counter()
                    connection = connections[self.root(index, 1)]
                    path = f"/api/v1/runs/{run}/commands"
                    await self.call(connection, "POST", path, {"kind": kind})
                    await asyncio.sleep(max(0.0, issued + 1 / COMMAND_RATE - time.perf_counter()))
                else:
                    await asyncio.sleep(0)
        finally:
            for connection in connections.values():
                connection.close()


async def held_channel_kib(load, held, pid):
    """Server memory per idle held long-poll: RSS with `held` of them minus with none, / held."""
    await load.create_runs(held)
    before = settled_rss(pid)
    connections = [Connection(load.roots[0]) for _ in range(held)]

    async def hold(connection, run):
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await connection.request("GET", f"/api/v1/runs/{run}/commands/pending?wait=30")

    tasks = [
        asyncio.ensure_future(hold(c, r))
        for c, r in zip(connections, load.runs[:held], strict=True)
    ]
    deadline = time.monotonic() + 20
    while open_sockets(pid) < held and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    after = await asyncio.to_thread(settled_rss, pid)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for connection in connections:
        connection.close()
    return (after - before) * 1024 / held


def _drained(server):
    """A thread reading the server's stderr (a full pipe would stall it); its last lines."""
    lines = []

    def read():
        for line in server.process.stderr:
            lines.append(line.decode(errors="replace").rstrip())
            del lines[:-20]

    threading.Thread(target=read, daemon=True).start()
    return lines


@contextlib.contextmanager
def _servers(url, count):
    """`count` servers (replicas) on database `url`, accepting `MAX_CONNECTIONS` connections."""
    from tests.server_process import ServerProcess

    env = {"CALLBOARD_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    started = []
    try:
        for _ in range(count):
            started.append(ServerProcess(url, env=env).start(timeout=180))
            started[-1].stderr_tail = _drained(started[-1])
        yield started
    finally:
        for server in started:
            server.stop()


def _ms(value, digits):
    return "none" if value != value else f"{value:,.{digits}f}"  # NaN: no sample


def _row(database, replicas, mode, n, figures):
    ingest = [s * 1000 for s in figures["ingest"]]
    delivery = [s * 1000 for s in figures["delivery"]]
    ingest_p95, delivery_p95 = percentile(ingest, 95), percentile(delivery, 95)
    delivery_target = DELIVERY_TARGET_MS + (0 if mode == "push" else POLL_INTERVAL * 1000)
    holds = ingest_p95 < INGEST_TARGET_MS and delivery_p95 < delivery_target
    errors = ", ".join(f"{count} {what}" for what, count in figures["errors"].most_common())
    return {
        "database": database + ("" if replicas == 1 else f" ×{replicas}"),
        "channel": mode,
        "runs": n,
        "events req/s": f"{len(ingest) / figures['seconds']:,.0f}",
        "ingest p50 / p95 ms": f"{_ms(percentile(ingest, 50), 1)} / {_ms(ingest_p95, 1)}",
        "delivery p50 / p95 ms": f"{_ms(percentile(delivery, 50), 0)} / {_ms(delivery_p95, 0)}"
        + (f" ({figures['undelivered']} late)" if figures["undelivered"] else ""),
        "server CPU": f"{figures['server CPU']:.0%}",
        "server RSS MiB": f"{figures['RSS']:,.0f}",
        "load generator CPU": f"{figures['own CPU']:.0%}",
        "other processes' CPU": f"{figures['others CPU']:.0%}",
        "errors": errors or "none",
        "holds": "yes" if holds else "no",
    }, (ingest_p95 < INGEST_TARGET_MS, delivery_p95 < delivery_target)


def _setups(sizes, quick):
    """`(database, context of its URL, replicas)`: SQLite, PostgreSQL, PostgreSQL ×2 (full runs)."""
    for database, opened in _databases(quick):
        yield database, opened, 1
        if database == "PostgreSQL" and sizes["replica steps"]:
            from .postgres import postgres_database

            yield database, postgres_database(), 2


async def _measure(sizes, quick):
    """The rows, the server's KiB per held channel, and the largest N that held per setup."""
    rows, held_kib, largest = [], None, {}
    for database, opened, replicas in _setups(sizes, quick):
        modes = ("push", "polling") if database == "SQLite" else ("push",)
        steps = sizes["steps"] if replicas == 1 else sizes["replica steps"]
        # A fresh server (and database) per channel; quick runs share one, to start fewer.
        groups = [modes] if quick else [(mode,) for mode in modes]
        with opened as url:
            for group in groups:
                group_url = url if group[0] == "push" else url.removesuffix(".db") + "-polling.db"
                with _servers(group_url, replicas) as servers:
                    pids = [s.process.pid for s in servers]
                    for mode in group:
                        load = Load([s.root for s in servers], push=mode == "push")
                        if held_kib is None:
                            held_kib = await held_channel_kib(load, sizes["held"], pids[0])
                        for n in steps:
                            figures = await load.step(n, sizes["ramp"], sizes["window"], pids)
                            row, passed = _row(database, replicas, mode, n, figures)
                            rows.append(row)
                            print(row, flush=True)
                            if all(passed):
                                largest[row["database"], mode] = n
                            if not any(passed) or (mode == "polling" and not passed[0]):
                                break
                    for server in servers:
                        news = [line for line in server.stderr_tail if not line.startswith("INFO")]
                        if news[1:]:  # past its "database: ..." line
                            print("server stderr:", *news[-5:], sep="\n  ", flush=True)
    return rows, held_kib, largest


def run(quick=False):
    import uvloop

    sizes = SIZES["quick" if quick else "full"]
    rows, held_kib, largest = uvloop.run(_measure(sizes, quick))
    held = ", ".join(f"{db} {mode}: {n:,}" for (db, mode), n in largest.items()) or "none"
    return Report(
        title="Capacity: live runs one server holds (command channel + events every 5 s)",
        rows=rows,
        notes=[
            f"Each run: one events request every {PERIOD:g} s (random phase): "
            f"{BATCH_EVENTS} `batch_end` events and an `epoch_end`, 4 metrics each, as "
            "`RemoteMonitor(batch_frequency=...)` sends; and its command channel: push holds "
            f"`GET /commands/pending?wait={WAIT}` (the `RemoteControl` client), polling asks "
            f"`GET /control` every {POLL_INTERVAL:g} s (today's `RemoteStop`).",
            f"Delivery: {COMMAND_RATE:g} commands/s to random runs (push: `checkpoint`, "
            "answered by the held long-poll, then reported applied; polling: `stop`, seen by "
            "the next poll), timed from the issuing POST to the answer reaching the run; "
            "'late': not delivered within the window + 2 s.",
            f"Holds: ingest p95 < {INGEST_TARGET_MS:g} ms and delivery p95 < "
            f"{DELIVERY_TARGET_MS:g} ms (polling: {POLL_INTERVAL * 1000 + DELIVERY_TARGET_MS:g} "
            f"ms, as a poll lands within its interval). Largest N that held: {held}.",
            f"Steps: N up until both targets fail (polling: until ingest fails); each step "
            f"ramps {sizes['ramp']:g} s, then measures {sizes['window']:g} s. Runs talk to "
            "the server over their own connections (an events request reconnects, as uvicorn "
            "and httpx drop a keep-alive connection after 5 s idle); with two replicas, run i "
            "uses replica i % 2 and its commands are issued through the other.",
            "Server CPU: its process's CPU time over the window (100% = one core, of 2); "
            "load generator CPU: this benchmark's own process (one asyncio loop on uvloop, a "
            "lean HTTP/1.1 client), same scale, on the same machine; other processes' CPU: "
            "the machine's busy time (/proc/stat) minus both, what else ran meanwhile.",
            f"Memory per held channel: the server's RSS with {sizes['held']:,} idle held "
            "long-polls minus with none, / their count: "
            f"{held_kib:,.1f} KiB (kernel socket buffers not included).",
            f"The server runs with CALLBOARD_MAX_CONNECTIONS={MAX_CONNECTIONS:,}, so the steps "
            "past its default (4,096 open connections, then 503: about 2,000 such runs, each "
            "holding its channel and its events connection) show where the CPU saturates.",
        ],
    )
