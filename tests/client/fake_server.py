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
from callboard.server.api.command_answers import Command


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
        note=None,
        archived=False,
        config=spec.get("config") or {},
        versions=spec.get("versions") or {},
        params={},
        metrics=[],
        last_epoch=None,
        last_step=None,
        error=None,
        control=control_answer(run_id, False),
        note_html=None,
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


def command_answer(command):
    """A command as the server answers it (`Command`), from the fake's record of it."""
    return Command(**command).model_dump(mode="json")


def problem(status, detail, headers=None):
    """An error answer, as the server sends them."""
    return httpx.Response(status, headers=headers, json=Problem(detail=detail).model_dump())


class FakeServer:
    """Records runs and events like the real server (each (run, seq) once).

    `fail_next(n, status)` makes the next n requests fail; `down = True` refuses all;
    `hold_kind = "train_end"` makes a post with that kind wait until `release` is set
    (then answer `held_status` if one is given);
    `max_values = n` answers 413 to an events request carrying more than n metric values;
    `delay = s` makes each request take `s` seconds (a slow server, or a loaded machine).
    `listening(server)` serves it over real HTTP on 127.0.0.1.

    Commands: `issue(kind)` sends the run one (as `POST .../commands` does), and
    `stop_requested = True` a `stop` to each run (as `POST .../stop` does).
    `GET .../commands/pending` waits like the server's long-poll (a condition, not
    sleeps); `cut_long_polls = "timeout"` holds any waiting one past the client's
    read timeout, `"reset"` drops its connection (proxies that cut waiting requests),
    answering `wait=0` polls as usual; `ignore_after = True` answers every pending
    command whatever `after` says (a re-delivery); `refuse_commands = 401` refuses
    the pending requests; `hang_commands` (an Event) makes commands requests wait
    until it is set; `failing_outcomes = n` answers the next n outcomes 503;
    `no_commands_api = True` plays a server that predates commands (404).
    `outcomes` lists each outcome posted, as (command id, state, detail, epoch, step).
    """

    def __init__(self):
        self.runs = {}
        self.events = {}
        self.requests = []
        self.down = False
        self.failures = []
        self._stop_requested = False
        self.acknowledged = False
        self.reject_kinds = set()
        self.hold_kind = None
        self.max_values = None
        self.delay = 0.0
        self.release = threading.Event()
        self.held_status = None
        self.commands = {}  # command id -> its record, as the server answers it
        self.outcomes = []
        self.pending_asked = []  # (after, wait) of each pending request
        self.cut_long_polls = None
        self.failing_outcomes = 0
        self.no_commands_api = False
        self.ignore_after = False
        self.refuse_commands = None
        self.hang_commands = None
        self.closed = False
        self.changed = threading.Condition()

    @property
    def stop_requested(self):
        return self._stop_requested

    @stop_requested.setter
    def stop_requested(self, requested):
        self._stop_requested = requested
        if requested:
            for run_id in list(self.runs):
                self._stop_command(run_id)

    def issue(self, kind, value=None, reason=None, run_id=1):
        """Send run `run_id` a command, as `POST .../commands` does; its record."""
        with self.changed:
            command_id = len(self.commands) + 1
            self.commands[command_id] = command = {
                "id": command_id,
                "run_id": run_id,
                "kind": kind,
                "value": value,
                "reason": reason,
                "state": "requested",
                "detail": None,
                "requested_by": "open mode",
                "requested_at": time.time(),
                "delivered_at": None,
                "settled_at": None,
                "epoch": None,
                "step": None,
            }
            self.changed.notify_all()
            return command

    def _stop_command(self, run_id):
        if not any(c["run_id"] == run_id and c["kind"] == "stop" for c in self.commands.values()):
            self.issue("stop", run_id=run_id)

    def close(self):
        """Answer every waiting long-poll now (the fake is going away)."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def ended(self, run_id):
        return any(e["kind"] == "train_end" for e in self.events.get(run_id, {}).values())

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
            if self._stop_requested:
                self._stop_command(run_id)
            return httpx.Response(201, json=run_answer(run_id, body))
        parts = path.split("/")
        run_id = int(parts[4])
        if "commands" in parts:
            return self._commands(request, run_id, parts[parts.index("commands") + 1 :], body)
        if parts[-1] == "events":
            values = sum(len(event.get("metrics") or {}) for event in body["events"])
            if self.max_values is not None and values > self.max_values:
                return problem(413, "too many metric values")
            if any(event["kind"] == self.hold_kind for event in body["events"]):
                self.release.wait(10)
                if self.held_status:
                    return problem(self.held_status, "failing after the hold")
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
        if parts[-1] == "ack":  # settles the run's stop commands, as the server does
            self.acknowledged = True
            with self.changed:
                for command in self.commands.values():
                    pending = command["state"] in ("requested", "delivered")
                    if pending and command["run_id"] == run_id and command["kind"] == "stop":
                        command.update(state="applied", settled_at=time.time())
            return httpx.Response(200, json=control_answer(run_id, True, "acknowledged"))
        if parts[-1] == "heartbeat":
            return httpx.Response(200, json=Heartbeat(status="running").model_dump())
        return problem(404, "not found")

    def _commands(self, request, run_id, rest, body):
        if self.hang_commands is not None:
            self.hang_commands.wait(30)
        if self.no_commands_api:
            return problem(404, "Not Found")
        if run_id not in self.runs:
            return problem(404, "run not found")
        if rest == ["pending"]:
            if self.refuse_commands:
                return problem(self.refuse_commands, "role 'read' cannot do this")
            params = request.url.params
            after, wait = int(params.get("after", 0)), float(params.get("wait", 25))
            self.pending_asked.append((after, wait))
            return self._pending(request, run_id, after, wait)
        if not rest and request.method == "POST":
            return httpx.Response(201, json=command_answer(self.issue(run_id=run_id, **body)))
        if not rest:
            mine = [c for c in self.commands.values() if c["run_id"] == run_id]
            return httpx.Response(200, json={"commands": [command_answer(c) for c in mine]})
        command = self.commands.get(int(rest[0]))
        if command is None or command["run_id"] != run_id:
            return problem(404, "command not found")
        if rest[1:] == ["outcome"]:
            return self._outcome(command, body)
        if rest[1:] == ["cancel"]:
            if command["state"] in ("applied", "refused"):
                return problem(409, f"command {command['id']} is {command['state']} already")
            command.update(state="cancelled", settled_at=time.time())
            return httpx.Response(200, json=command_answer(command))
        return problem(404, "not found")

    def _pending(self, request, run_id, after, wait):
        """Commands not yet applied or refused with an id above `after`, waiting up to
        `wait` seconds for one, like the server's long-poll."""
        hold = self.cut_long_polls and wait > 0
        if hold == "reset":
            raise httpx.RemoteProtocolError("Server disconnected", request=request)
        if hold:  # until the client gives up: its read timeout (none over real HTTP)
            wait = (request.extensions.get("timeout") or {}).get("read") or 3600
        deadline = time.monotonic() + wait
        with self.changed:
            while True:
                found = [
                    command
                    for command in self.commands.values()
                    if command["run_id"] == run_id
                    and command["state"] in ("requested", "delivered")
                    and (command["id"] > after or self.ignore_after)
                ]
                left = deadline - time.monotonic()
                if (found and not hold) or self.closed or self.ended(run_id) or left <= 0:
                    break
                self.changed.wait(left)
        if hold and not self.closed:
            raise httpx.ReadTimeout("timed out", request=request)
        for command in found:
            if command["state"] == "requested":
                command.update(state="delivered", delivered_at=time.time())
        return httpx.Response(200, json={"commands": [command_answer(c) for c in found]})

    def _outcome(self, command, body):
        if self.failing_outcomes:
            self.failing_outcomes -= 1
            return problem(503, "failing on purpose")
        state = body["state"]
        self.outcomes.append(
            (command["id"], state, body.get("detail"), body.get("epoch"), body.get("step"))
        )
        if command["state"] == state:
            return httpx.Response(200, json=command_answer(command))
        if command["state"] not in ("requested", "delivered"):
            return problem(409, f"command {command['id']} is {command['state']} already")
        fields = {key: body.get(key) for key in ("detail", "epoch", "step")}
        command.update(state=state, settled_at=time.time(), **fields)
        if command["kind"] == "stop" and state == "applied":
            self.acknowledged = True
        return httpx.Response(200, json=command_answer(command))


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
            except (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError):
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
        fake.close()  # a long-poll it holds must not keep server_close() waiting
        server.shutdown()
        server.server_close()
