"""Where an epoch post's time goes: the app driven in-process, its stages timed by hooks.

`split(database_url)` builds the app as `callboard serve` does, runs its
lifespan on a uvloop event loop and calls it as uvicorn would (an ASGI
`http` scope, the body in one message), one epoch post after the other. For
the time of the benchmark only, wrappers time the stages of a request:

- parse: `validate_json` (validating the `EventBatch` from the body);
- auth: the caller from the token cache, its scope, the rate limit;
- store: `store_events` (the SELECT, the INSERTs, the UPDATE);
- commit: the transaction around it (`BEGIN IMMEDIATE`, `COMMIT`), on the
  event loop (SQLite) or the writer thread;
- hops: the writer's turn minus the transaction: waiting for the loop's next
  turn, or the queue to the writer thread and the answer back;
- answer: encoding and sending the answer;
- route, rest: the lane's code between those stages (value limit, turns,
  publishing to the live hub);
- middleware: the app's whole time minus the lane's: reading the headers and
  the body, and the layers ahead of the lane (`ingest_lane`).

Wrappers are found by name; a stage whose function moved reports nothing.
"""

import asyncio
import functools
import inspect
import statistics
import time
from collections import defaultdict

import orjson

from .common import epoch_event

STAGES = ("parse", "auth", "store", "commit", "hops", "answer", "route, rest", "middleware")


class Stopwatch:
    """Wraps functions to time each call; `undo()` puts the originals back."""

    def __init__(self):
        self.samples = defaultdict(list)
        self._undo = []

    def wrap(self, owner, name, stage):
        original = getattr(owner, name, None)
        if original is None:
            return
        record = self.samples[stage].append
        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def timed(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    record(time.perf_counter() - started)
        else:

            @functools.wraps(original)
            def timed(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    record(time.perf_counter() - started)

        self._undo.append((owner, name, owner.__dict__.get(name, original)))
        setattr(owner, name, timed)

    def reset(self):
        for values in self.samples.values():
            values.clear()

    def undo(self):
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def _scope(method, path, body):
    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app, method, path, body):
    """Call the ASGI `app` once as uvicorn would; return (status, answer body)."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    answer = {"status": None, "body": b""}

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] += message.get("body", b"")

    await app(_scope(method, path, body), receive, send)
    return answer["status"], answer["body"]


async def _drive(app, requests, watch):
    async with app.router.lifespan_context(app):
        status, body = await call(app, "POST", "/api/v1/runs", b'{"name": "split"}')
        run_id = orjson.loads(body)["id"]
        path = f"/api/v1/runs/{run_id}/events"
        for seq in range(1, requests + 1):
            batch = orjson.dumps({"events": [epoch_event(seq, seq - 1)]})
            started = time.perf_counter()
            status, body = await call(app, "POST", path, batch)
            watch.samples["app"].append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"epoch post answered {status}: {body[:200]!r}")


def split(database_url, requests=2000):
    """Median µs per stage of `requests` sequential epoch posts, and of the whole app call."""
    import uvloop

    from callboard.server.api import ingest_lane
    from callboard.server.api.routes import events
    from callboard.server.main import create_app
    from callboard.server.settings import Settings
    from callboard.server.store.group_commit import GroupCommit

    watch = Stopwatch()
    stages = {"_stored": "handler", "_ingest_caller": "auth", "validate_json": "parse"}
    for name, stage in {**stages, "_answer": "answer"}.items():
        watch.wrap(ingest_lane, name, stage)
    watch.wrap(events, "store_events", "store")
    watch.wrap(GroupCommit, "run", "writer turn")
    watch.wrap(GroupCommit, "_commit", "transaction")  # on the writer thread
    watch.wrap(GroupCommit, "_commit_pending", "transaction")  # inline, on the event loop
    try:
        app = create_app(Settings(database_url=database_url))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_drive(app, requests // 10, Stopwatch()))  # warm up, untimed
            watch.reset()
            runner.run(_drive(app, requests, watch))
    finally:
        watch.undo()
    return _stages(watch.samples)


def _stages(samples):
    """Median µs of each of `STAGES`, derived from the timed calls, and `total`."""
    median = {name: statistics.median(values) * 1e6 for name, values in samples.items()}
    get = median.get
    stages = {
        "parse": get("parse"),
        "auth": get("auth"),
        "store": get("store"),
        "commit": _minus(get("transaction"), get("store")),
        "hops": _minus(get("writer turn"), get("transaction")),
        "answer": get("answer"),
        "route, rest": _minus(get("handler"), get("parse"), get("auth"), get("writer turn")),
        "middleware": _minus(get("app"), get("handler"), get("answer")),
    }
    stages["total"] = get("app")
    stages["mean"] = statistics.fmean(samples["app"]) * 1e6
    return stages


def _minus(whole, *parts):
    if whole is None or any(part is None for part in parts):
        return None
    return max(0.0, whole - sum(parts))
