"""The ingest lane stores clean event posts itself and passes everything else on, body intact."""

import asyncio

import orjson
import pytest

from callboard.server.api.ingest_lane import IngestLane
from callboard.server.http.middleware import SECURITY_HEADERS
from callboard.server.main import create_app
from callboard.server.settings import Settings

LANE_LIMIT = 64 * 1024


class PassedOn:
    """The rest of the app, as the lane sees it: records each body it is given."""

    def __init__(self):
        self.bodies = []

    async def __call__(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(asgi, app, method, path, chunks=(b"",), headers=()):
    """Call ASGI `asgi` as uvicorn would, the body in `chunks`; (status, headers, body)."""
    body = b"".join(chunks)
    sent = {
        b"host": b"127.0.0.1:8000",
        b"content-type": b"application/json",
        b"content-length": str(len(body)).encode(),
        **dict(headers),
    }
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": list(sent.items()),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "app": app,
        "state": {},
    }
    last = len(chunks) - 1
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < last}
        for index, chunk in enumerate(chunks)
    ]
    answer = {"status": None, "headers": [], "body": b""}

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # connected, nothing more to send

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], message["headers"]
        else:
            answer["body"] += message.get("body", b"")

    await asyncio.wait_for(asgi(scope, receive, send), 30)
    return answer["status"], answer["headers"], answer["body"]


def epoch_post(seq, metrics=None):
    event = {"seq": seq, "kind": "epoch_end", "epoch": seq - 1, "metrics": metrics or {"loss": 0.5}}
    return orjson.dumps({"events": [event]})


@pytest.fixture
def served(tmp_path):
    """Run `scenario(app, lane, passed_on, run_id)` with the app's lifespan on a new loop."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'callboard.db'}")
    settings.max_values_per_request = 10
    app = create_app(settings)
    passed_on = PassedOn()
    lane = IngestLane(passed_on, allowed_hosts=None, max_body_bytes=settings.max_body_bytes)

    def serve(scenario):
        async def main():
            async with app.router.lifespan_context(app):
                _, _, created = await call(app, app, "POST", "/api/v1/runs", [b'{"name": "lane"}'])
                return await scenario(app, lane, passed_on, orjson.loads(created)["id"])

        return asyncio.run(main())

    return serve


def test_a_clean_post_is_stored_and_answered_by_the_lane_alone(served):
    async def scenario(app, lane, passed_on, run_id):
        path = f"/api/v1/runs/{run_id}/events"
        whole = await call(lane, app, "POST", path, [epoch_post(1)])
        body = epoch_post(2)
        in_parts = await call(lane, app, "POST", path, [body[:7], body[7:20], body[20:]])
        _, _, events = await call(app, app, "GET", path)
        return passed_on.bodies, whole, in_parts, orjson.loads(events)["events"]

    passed_on, whole, in_parts, events = served(scenario)
    assert passed_on == []
    for status, headers, body in (whole, in_parts):
        assert status == 200
        assert orjson.loads(body) == {"accepted": 1, "duplicates": 0, "status": "running"}
        assert set(SECURITY_HEADERS) <= set(headers)
    assert [(event["seq"], event["metrics"]) for event in events] == [
        (1, {"loss": 0.5}),
        (2, {"loss": 0.5}),
    ]


NOT_CLEAN = {
    "another site's page": {"headers": [(b"origin", b"http://evil.example")]},
    "a Host not served in every mode": {"headers": [(b"host", b"evil.example")]},
    "not JSON": {"headers": [(b"content-type", b"text/plain")]},
    "an invalid batch": {"body": b'{"events": [{"seq": 0}]}'},
    "not JSON at all": {"body": b"{"},
    "a missing run": {"path": "/api/v1/runs/999999/events"},
    "an id no run can have": {"path": "/api/v1/runs/9999999999/events"},
    "more values than the server takes": {"body": epoch_post(1, {f"m{i}": 1.0 for i in range(11)})},
    "a body over the lane's limit": {"body": b" " * LANE_LIMIT + epoch_post(1)},
}


@pytest.mark.parametrize("case", NOT_CLEAN, ids=list(NOT_CLEAN))
def test_what_the_lane_does_not_take_goes_on_to_the_app_with_its_body(served, case):
    spec = NOT_CLEAN[case]
    body = spec.get("body", epoch_post(1))

    async def scenario(app, lane, passed_on, run_id):
        path = spec.get("path", f"/api/v1/runs/{run_id}/events")
        chunks = [body[:1000], body[1000:]] if len(body) > 1000 else [body]
        status, _, _ = await call(lane, app, "POST", path, chunks, spec.get("headers", ()))
        return status, passed_on.bodies

    status, passed_on = served(scenario)
    assert status == 299
    assert passed_on == [body]
