"""The server's own health for Prometheus: requests, latency, ingest, live connections, writer.

`ServerMetrics` holds one app's `CollectorRegistry` (never the process-wide
default: a process may hold many apps). `RequestMetrics`, the outermost
middleware, times every request, the ingest lane's included, and labels it by
its route template (`/api/v1/runs/{run_id}/events`), never by its raw path:
one label value per route keeps Prometheus' series bounded.

Example:
    ```python
    app.state.server_metrics = ServerMetrics(app)
    app.add_middleware(RequestMetrics, metrics=app.state.server_metrics)
    ```
"""

import time

import orjson
from fastapi.routing import iter_route_contexts
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.routing import Mount

from callboard.server.api.ingest_lane import EVENTS_PATH

EVENTS_ROUTE = "/api/v1/runs/{run_id}/events"
PUBLISH_ROUTE = "/publish/epoch/end/"
UNMATCHED = "unmatched"  # no route: a 404, whatever the path
# Ingest answers in a millisecond or two: finer buckets than the client's default below 5 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ServerMetrics:
    """One app's registry: request latency, ingested events, live connections, writer queue."""

    def __init__(self, app):
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "callboard_http_request_duration_seconds",
            "HTTP requests by method, route template and status class, and how long they took "
            "(a live stream counts until it ends).",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "callboard_ingest_events",
            "Training events stored (client batches and stock Keras RemoteMonitor epochs).",
            registry=self.registry,
        )
        self.registry.register(LiveCollector(app))
        self._series = {}  # (method, route, status class) -> its histogram child

    def observe(self, method, route, status, seconds):
        key = (method, route, status // 100)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self.requests.labels(method, route, f"{key[2]}xx")
        series.observe(seconds)


class LiveCollector:
    """What the server holds now, read at scrape time: live streams, hub waiters, queued writes."""

    def __init__(self, app):
        self.app = app

    def describe(self):
        return []  # read at scrape time only: the app's state exists once it has started

    def collect(self):
        state = self.app.state
        # Made on a stream's first use, on the event loop: read here, never made.
        slots = getattr(state, "stream_slots", None)
        yield _gauge(
            "callboard_live_streams",
            "Live (server-sent events) streams open now.",
            slots.open if slots is not None else 0,
        )
        yield _gauge(
            "callboard_live_waiters",
            "Waiters on the live hub now: streams, long polls and the rule engine's own.",
            state.hub.subscriber_count(),
        )
        writer = getattr(state, "writer", None)
        yield _gauge(
            "callboard_group_commit_queue",
            "Writes waiting for the group-commit writer.",
            writer.queued() if writer is not None else 0,
        )


def _gauge(name, documentation, value):
    family = GaugeMetricFamily(name, documentation)
    family.add_metric((), value)
    return family


def route_templates(app):
    """`{endpoint: route template}` for every route of `app` (a Mount: `/static/{path}`)."""
    templates = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            templates[route.app] = route.path + "/{path}"
        elif context.endpoint is not None:
            templates.setdefault(context.endpoint, context.path_format)
    return templates


class RequestMetrics:
    """ASGI middleware, outermost: each HTTP request into `metrics` (`ServerMetrics`).

    The ingest lane answers event posts before routing: those are labelled by
    their path's shape. Event posts and stock Keras epochs that were stored
    add to the events counter (an event post's answer says how many).
    """

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics
        self.templates = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500
        answer = bytearray()
        is_event_post = scope["method"] == "POST" and scope["path"].endswith("/events")

        async def observing_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif is_event_post and status == 200:
                answer.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            route = self._route_of(scope)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)
            if status == 200:
                self._count_events(route, answer)

    def _route_of(self, scope):
        endpoint = scope.get("endpoint")
        if endpoint is None:
            lane = scope["method"] == "POST" and EVENTS_PATH.fullmatch(scope["path"])
            return EVENTS_ROUTE if lane else UNMATCHED
        if self.templates is None:
            self.templates = route_templates(scope["app"])
        return self.templates.get(endpoint, UNMATCHED)

    def _count_events(self, route, answer):
        if route == PUBLISH_ROUTE:
            self.metrics.events.inc()
        elif route == EVENTS_ROUTE and answer:
            self.metrics.events.inc(orjson.loads(answer).get("accepted", 0))
