"""The app factory: `create_app(Settings(...))` builds a Callboard server."""

import asyncio
import contextlib
import functools
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware

from callboard.server.api.deps import run_not_found
from callboard.server.api.fast_path import direct_route
from callboard.server.api.ingest_lane import IngestLane
from callboard.server.api.routes import (
    aggregate,
    commands,
    control,
    events,
    extremes,
    health,
    metrics,
    prometheus,
    publish,
    rules,
    runs,
    sparklines,
    stream,
    tokens,
)
from callboard.server.api.schemas import validation_error_answer
from callboard.server.auth import TokenStore
from callboard.server.http.middleware import (
    DATABASE_BUSY,
    BodySizeLimit,
    CrossSiteGuard,
    HostAllowList,
    SecurityHeaders,
)
from callboard.server.http.prometheus import RequestMetrics, ServerMetrics
from callboard.server.http.rate_limit import RateLimiter
from callboard.server.lifecycle import SWEEP_BATCH, mark_silent_runs
from callboard.server.live import make_hub
from callboard.server.rules.deliveries import WebhookSender
from callboard.server.rules.engine import RuleEngine
from callboard.server.settings import Settings
from callboard.server.store import migrate
from callboard.server.store.db import Database
from callboard.server.store.group_commit import INLINE_SIZE, GroupCommit
from callboard.server.store.ingest import RunNotFound
from callboard.server.store.run_writes import RunWrites
from callboard.server.web import api_docs, pages

log = logging.getLogger("callboard.server")


async def _sweep_forever(app):
    settings = app.state.settings
    while True:
        await asyncio.sleep(settings.sweep_interval_seconds)
        sweep = functools.partial(mark_silent_runs, lost_after_seconds=settings.lost_after_seconds)
        try:
            while len(await app.state.run_writes.write(sweep)) == SWEEP_BATCH:
                pass  # a full batch: the next one at once, each its own short write
        except OperationalError as exc:
            log.warning("could not check for silent runs: %s", exc)


@contextlib.asynccontextmanager
async def lifespan(app):
    settings = app.state.settings
    if not settings.skip_migrations:
        await run_in_threadpool(migrate.upgrade, settings.database_url)
    app.state.database = Database(settings.database_url)
    app.state.tokens = TokenStore(app.state.database, require_tokens=settings.require_tokens)
    app.state.writer = GroupCommit(app.state.database, inline_size=INLINE_SIZE)
    app.state.writer.start()
    app.state.run_writes = RunWrites(app.state.writer, app.state.hub)
    await run_in_threadpool(app.state.hub.start)
    sweeper = asyncio.create_task(_sweep_forever(app))
    sender = WebhookSender(app.state.writer, app.state.database)
    sender.start()
    rule_engine = RuleEngine(app.state.database, app.state.run_writes, app.state.hub, sender)
    app.state.run_writes.on_change = rule_engine.runs_changed
    rule_engine.start()
    try:
        yield
    finally:
        sweeper.cancel()
        app.state.run_writes.on_change = None
        await rule_engine.stop()
        await sender.stop()
        app.state.writer.stop_inline()
        await run_in_threadpool(app.state.writer.stop)
        await run_in_threadpool(app.state.hub.stop)
        app.state.database.dispose()


async def _run_not_found(request: Request, exc: RunNotFound):
    """A write refused by the store because the run is missing or not the caller's: 404."""
    return JSONResponse({"detail": run_not_found(exc.args[0]).detail}, status_code=404)


async def _database_busy(request: Request, exc: OperationalError):
    log.warning("database unavailable: %s", exc)
    return JSONResponse(
        {"detail": DATABASE_BUSY},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def create_app(settings=None):
    """Build the server for `settings` (default: from `CALLBOARD_*` variables).

    Example:
        ```python
        import uvicorn
        from callboard.server.main import create_app
        from callboard.server.settings import Settings

        uvicorn.run(create_app(Settings(database_url="sqlite:///runs.db")), port=8000)
        ```
    """
    app = FastAPI(
        title="Callboard",
        summary="Live dashboard and remote control for Keras training.",
        lifespan=lifespan,
        # Served by web/api_docs.py: assets from an installed package, readers only.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings or Settings()
    settings = app.state.settings
    app.state.hub = make_hub(settings.database_url)
    app.state.rate_limiter = RateLimiter(settings.ingest_rate_per_second, settings.ingest_burst)
    app.add_exception_handler(OperationalError, _database_busy)
    app.add_exception_handler(RunNotFound, _run_not_found)
    app.add_exception_handler(RequestValidationError, validation_error_answer)
    # The last added runs first: clean event posts (`ingest_lane`), then headers on every
    # answer, Host, cross-site, size.
    # Innermost: answers over 1 KB go gzipped to clients that ask (a chart's series shrinks to a
    # quarter); not server-sent events, nor scripts: plotly.js comes gzipped already, with its
    # own Vary (`web/bundle.py`), and the page's modules are small and cached.
    app.add_middleware(
        GZipMiddleware,
        minimum_size=1024,
        compresslevel=5,  # a 48 KB series: 0.5 ms and 11.4 KB (level 9: 1.7 ms, 11.3 KB)
        exclude_content_types=(*DEFAULT_EXCLUDED_CONTENT_TYPES, "text/javascript"),
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(HostAllowList, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(
        IngestLane, allowed_hosts=settings.allowed_hosts, max_body_bytes=settings.max_body_bytes
    )
    app.state.server_metrics = ServerMetrics(app)  # served by `GET /metrics`
    app.add_middleware(RequestMetrics, metrics=app.state.server_metrics)  # outermost: times all
    # Routers are matched in order: the hottest (event ingest) first.
    routers = (
        events,
        runs,
        metrics,
        control,
        commands,
        stream,
        tokens,
        rules,
        health,
        sparklines,
        extremes,
        aggregate,
    )
    for module in routers:
        app.include_router(module.router, prefix="/api/v1")
    # Epoch posts skip FastAPI's per-request machinery (`fast_path.direct_route`).
    app.router.routes.insert(0, direct_route(events.router, "POST"))
    app.include_router(publish.router)
    app.include_router(prometheus.router)
    app.include_router(api_docs.router)
    app.include_router(pages.router)
    app.mount("/static", pages.static_files(), name="static")
    return app
