"""The ingest lane: a clean, small batch of events served ahead of the middleware stack.

Event posts are the most frequent request, and for an epoch post the
middleware stack, routing and Starlette's request and response objects cost
about as much as storing it. The lane serves such a post straight from the
ASGI scope when it is clean: a Host served in any mode, no sign of a browser
on another site, a declared JSON body small enough to parse on the event loop,
a valid batch, a caller admitted to ingest. It stores it with the route's own
`store_batch` and answers with the same headers.

The lane never answers an error itself: a request it does not take, or fails
to store, goes on to the app with the body it read, whose middleware and route
decide and answer as they always do. A failed write stored nothing, and the
store skips seqs already stored, so going on is safe.
"""

import re

import orjson
from fastapi import HTTPException
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.requests import Request

from callboard.server.api.deps import admit, get_principal, parse_row_id
from callboard.server.api.fast_path import ON_THE_LOOP_BYTES, is_json, validate_json
from callboard.server.api.routes.events import store_batch
from callboard.server.api.schemas import EventBatch
from callboard.server.http.middleware import (
    SECURITY_HEADERS,
    cross_site_reason,
    header_values,
    host_name,
    parse_allowed_hosts,
    served_whatever_the_mode,
)
from callboard.server.store.ingest import RunNotFound

EVENTS_PATH = re.compile(r"/api/v1/runs/([0-9]{1,10})/events")
READ_HEADERS = frozenset(
    {b"host", b"content-type", b"content-length", b"origin", b"referer", b"sec-fetch-site"}
)
NOT_TAKEN = (HTTPException, ValidationError, RunNotFound, OperationalError)


class IngestLane:
    """ASGI middleware, outermost: serves clean `POST /api/v1/runs/{id}/events` itself.

    Example:
        `app.add_middleware(IngestLane, allowed_hosts=None, max_body_bytes=2**20)`
    """

    def __init__(self, app, allowed_hosts, max_body_bytes):
        self.app = app
        self.allowed = parse_allowed_hosts(allowed_hosts)
        self.max_bytes = min(max_body_bytes, ON_THE_LOOP_BYTES)

    async def __call__(self, scope, receive, send):
        run_id = self._run_id(scope)
        if run_id is None or not self._clean(header_values(scope, READ_HEADERS)):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more and len(body) <= self.max_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body += message.get("body", b"")
            more = message.get("more_body", False)
        taken = not more and len(body) <= self.max_bytes
        answer = await _stored(scope, run_id, body) if taken else None
        if answer is None:
            return await self.app(scope, _replaying(body, more, receive), send)
        await _answer(send, answer)

    @staticmethod
    def _run_id(scope):
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        match = EVENTS_PATH.fullmatch(scope["path"])
        return match and parse_row_id(match[1])

    def _clean(self, headers):
        declared = headers.get("content-length", "")
        return (
            declared.isdigit()
            and int(declared) <= self.max_bytes
            and is_json(headers.get("content-type"))
            and served_whatever_the_mode(host_name(headers.get("host", "")), self.allowed)
            and cross_site_reason(headers) is None
        )


async def _stored(scope, run_id, body):
    """The route's answer to storing `body`, or None where the app must answer."""
    request = Request(scope)
    try:
        events = validate_json(EventBatch, body).events
        principal = await _ingest_caller(request)
        return await store_batch(request.app.state, principal, run_id, events)
    except NOT_TAKEN:
        return None


async def _ingest_caller(request):
    """The caller if admitted to ingest; kept on the scope's state, so the app, if the
    request goes on, does not look them up again."""
    return admit(request, await get_principal(request), ("ingest",))


async def _answer(send, answer):
    """Send `answer` as JSON with status 200 and the headers every answer carries."""
    payload = orjson.dumps(answer)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _replaying(body, more, receive):
    """`receive` for the app: the body read so far first, then the rest of the stream."""
    replayed = False

    async def replay():
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": more}

    return replay
