"""Typed dependencies shared by the routes: settings, sessions, the caller, the run."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from callboard.server.api.schemas import MAX_BIGINT, MAX_ROW_ID
from callboard.server.auth import OPEN, NotCached, Principal, TokenStore
from callboard.server.live.hub import LiveHub
from callboard.server.settings import Settings
from callboard.server.store.db import Database
from callboard.server.store.ingest import lock_run
from callboard.server.store.models import Run

SESSION_COOKIE = "callboard_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# A run's or token's id in a path: beyond MAX_ROW_ID no row exists, and the database
# would refuse the number (a 500 on PostgreSQL).
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
# An event id to read after (0: from the first), in a query: a 64-bit integer.
AfterRowId = Annotated[int, Query(ge=0, le=MAX_BIGINT, description="row id to start after")]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_database(request: Request) -> Database:
    return request.app.state.database


async def get_hub(request: Request) -> LiveHub:
    return request.app.state.hub


async def get_tokens(request: Request) -> TokenStore:
    return request.app.state.tokens


def get_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    with database.reader() as session:
        yield session


def get_write_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    """A session whose transaction holds the write lock (SQLite) from its start."""
    with database.writer() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
HubDep = Annotated[LiveHub, Depends(get_hub)]
SessionDep = Annotated[Session, Depends(get_session)]
WriteSessionDep = Annotated[Session, Depends(get_write_session)]


def _unauthorized(detail):
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def get_principal(
    request: Request, tokens: Annotated[TokenStore, Depends(get_tokens)]
) -> Principal:
    """The caller: a bearer token, a dashboard session, or anyone in open mode (no token yet)."""
    if tokens.open_mode():
        return OPEN
    locked_out = tokens.locked_out_detail()
    if locked_out:
        raise _unauthorized(locked_out)
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _unauthorized("Authorization must be 'Bearer <token>'")
        principal = tokens.for_token(secret.strip())
        if principal is None:
            raise _unauthorized("unknown or revoked token")
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        principal = tokens.for_session(cookie)
        if principal is not None:
            return principal
    raise _unauthorized("authentication required: send 'Authorization: Bearer <token>'")


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def current_principal(
    request: Request, tokens: Annotated[TokenStore, Depends(get_tokens)]
) -> Principal:
    """`get_principal` on the event loop when the token cache answers; else on a worker thread."""
    try:
        with tokens.cached_only():
            return get_principal(request, tokens)
    except NotCached:
        return await run_in_threadpool(get_principal, request, tokens)


async def still_admitted(request: Request, scope) -> bool:
    """True while the credential that opened `request` still grants `scope`.

    For answers that last (live streams): a revoked token, an expired or closed
    session, or a first token ending open mode make it False. Answers from the
    token cache on the event loop, else looks up on a worker thread.
    """
    try:
        principal = await current_principal(request, request.app.state.tokens)
    except (HTTPException, OperationalError):
        return False
    return principal.can(scope)


def require(*scopes):
    """A dependency admitting callers holding any of `scopes`, with CSRF checks for cookies.

    Example:
        `@router.post("/stop", dependencies=[Depends(require("control"))])`
    """

    async def check(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        if not any(principal.can(scope) for scope in scopes):
            raise HTTPException(
                status_code=403,
                detail=f"a {principal.role!r} token cannot do this (needs {' or '.join(scopes)})",
            )
        cookie_write = principal.csrf_token is not None and request.method not in SAFE_METHODS
        if cookie_write and request.headers.get("x-csrf-token") != principal.csrf_token:
            raise HTTPException(status_code=403, detail="missing or wrong X-CSRF-Token")
        if "ingest" in scopes and principal.token_id is not None:
            wait = request.app.state.rate_limiter.acquire(principal.token_id)
            if wait:
                raise HTTPException(
                    status_code=429,
                    detail="too many requests for this token",
                    headers={"Retry-After": str(max(1, round(wait + 0.5)))},
                )
        return principal

    return check


Reader = Annotated[Principal, Depends(require("read"))]
Ingester = Annotated[Principal, Depends(require("ingest"))]
Controller = Annotated[Principal, Depends(require("control"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def check_project(principal, project_name):
    """A project-scoped token may not act on other projects."""
    if not principal.sees_project(project_name):
        raise HTTPException(
            status_code=403, detail=f"this token is limited to project {principal.project!r}"
        )


def get_run(run_id: RowId, session: SessionDep, principal: PrincipalDep) -> Run:
    run = session.get(Run, run_id)
    if run is None or not principal.sees_project(run.project.name):
        raise HTTPException(status_code=404, detail=f"run {run_id} not found")
    return run


RunDep = Annotated[Run, Depends(get_run)]


def lock_visible_run(session, run_id, principal):
    """Lock run `run_id` for update, or 404 when it is missing or outside the caller's project."""
    run = lock_run(session, run_id)
    if run is None or not principal.sees_project(run.project.name):
        raise HTTPException(status_code=404, detail=f"run {run_id} not found")
    return run
