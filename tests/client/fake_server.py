"""An in-memory stand-in for the Callboard API, served through `httpx.MockTransport`.

Its answers are built through the server's answer models (`server/api/answers.py`),
so a change of the API's shapes breaks these fakes as it would break the client.
"""

import contextlib
import http.server
import json
import threading
import time

import httpx

from callboard.server.api.answers import (
    ControlState,
    Heartbeat,
    IngestResult,
    Problem,
    RunDetail,
)


def run_answer(run_id, spec, status="running"):
    """`POST /api/v1/runs`'s answer for a run made from `spec` (a `RunCreate` body)."""
    now = time.time()
    return RunDetail(
        id=run_id,
        uid=spec.get("uid") or f"fake-{run_id:08d}",
        name=spec.get("name") or f"run-{run_id}",
        project=spec.get("project") or "default",
        status=status,
        ended=False,
        source="client",
        tags=spec.get("tags") or [],
        host=spec.get("host"),
        epochs_done=0,
        epochs=None,
        last={},
        main_metric=None,
        created_at=now,
        updated_at=now,
        ended_at=None,
        stop="none",
        config=spec.get("config") or {},
        versions=spec.get("versions") or {},
        params={},
        metrics=[],
        last_epoch=None,
        last_step=None,
        error=None,
        control=control_answer(run_id, False),
    ).model_dump(mode="json")


def control_answer(run_id, stop_requested, state=None):
    """A run's control state (`GET .../control`, `POST .../control/ack`)."""
    now = time.time()
    state = state or ("requested" if stop_requested else "none")
    return ControlState(
        run_id=run_id,
        status="running",
        stop_requested=stop_requested or state != "none",
        state=state,
        reason=None,
        requested_at=now if state != "none" else None,
        acknowledged_at=now if state in ("acknowledged", "stopped") else None,
        stopped_at=now if state == "stopped" else None,
    ).model_dump(mode="json")


def ingest_answer(accepted, duplicates=0):
    """`POST .../events`'s answer."""
    return IngestResult(accepted=accepted, duplicates=duplicates, status="running").model_dump()


def problem(status, detail, headers=None):
    """An error answer, as the server sends them."""
    return httpx.Response(status, headers=headers, json=Problem(detail=detail).model_dump())


class FakeServer:
    """Records runs and events like the real server (each (run, seq) once).

    `fail_next(n, status)` makes the next n requests fail; `down = True` refuses all;
    `hold_kind = "train_end"` makes a post with that kind wait until `release` is set;
    `max_values = n` answers 413 to an events request carrying more than n metric values;
    `delay = s` makes each request take `s` seconds (a slow server, or a loaded machine).
    `listening(server)` serves it over real HTTP on 127.0.0.1.
    """

    def __init__(self):
        self.runs = {}
        self.events = {}
        self.requests = []
        self.down = False
        self.failures = []
        self.stop_requested = False
        self.acknowledged = False
        self.reject_kinds = set()
        self.hold_kind = None
        self.max_values = None
        self.delay = 0.0
        self.release = threading.Event()

    def fail_next(self, count, status=500, headers=None):
        self.failures.extend([(status, headers or {})] * count)

    def client(self):
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def posted_kinds(self):
        """The kinds of each events request and "ack" for each stop acknowledgement, in order."""
        sent = []
        for request in self.requests:
            if request.url.path.endswith("/events"):
                sent.append([e["kind"] for e in json.loads(request.content)["events"]])
            elif request.url.path.endswith("/ack"):
                sent.append("ack")
        return sent

    def stored(self, run_id=1):
        return [self.events[run_id][seq] for seq in sorted(self.events.get(run_id, {}))]

    def handle(self, request):
        self.requests.append(request)
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.failures:
            status, headers = self.failures.pop(0)
            return problem(status, "failing on purpose", headers)
        path = request.url.path
        body = json.loads(request.content) if request.content else None
        if path == "/api/v1/runs" and request.method == "POST":
            for run_id, spec in self.runs.items():
                if spec["uid"] == body["uid"]:
                    return httpx.Response(200, json=run_answer(run_id, spec))
            run_id = len(self.runs) + 1
            self.runs[run_id] = body
            self.events[run_id] = {}
            return httpx.Response(201, json=run_answer(run_id, body))
        parts = path.split("/")
        run_id = int(parts[4])
        if parts[-1] == "events":
            values = sum(len(event.get("metrics") or {}) for event in body["events"])
            if self.max_values is not None and values > self.max_values:
                return problem(413, "too many metric values")
            if any(event["kind"] == self.hold_kind for event in body["events"]):
                self.release.wait(10)
            if any(event["kind"] in self.reject_kinds for event in body["events"]):
                return problem(422, "rejected kind")
            fresh = [e for e in body["events"] if e["seq"] not in self.events[run_id]]
            for event in fresh:
                self.events[run_id][event["seq"]] = event
            duplicates = len(body["events"]) - len(fresh)
            return httpx.Response(200, json=ingest_answer(len(fresh), duplicates))
        if parts[-1] == "control":
            state = "acknowledged" if self.acknowledged else None
            return httpx.Response(200, json=control_answer(run_id, self.stop_requested, state))
        if parts[-1] == "ack":
            self.acknowledged = True
            return httpx.Response(200, json=control_answer(run_id, True, "acknowledged"))
        if parts[-1] == "heartbeat":
            return httpx.Response(200, json=Heartbeat(status="running").model_dump())
        return problem(404, "not found")


@contextlib.contextmanager
def listening(fake):
    """Serve `fake` over real HTTP on 127.0.0.1; yield its root URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = httpx.Request(
                self.command,
                f"http://{self.headers['Host']}{self.path}",
                headers=list(self.headers.items()),
                content=body,
            )
            try:
                response = fake.handle(request)
            except httpx.ConnectError:
                self.close_connection = True
                return  # no answer at all
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
