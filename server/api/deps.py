"""Typed dependencies shared by the routes: settings, sessions, the caller, the run."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from pydantic import Field, TypeAdapter, ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from callboard.server.api.schemas import MAX_BIGINT, MAX_ROW_ID
from callboard.server.auth import OPEN, Principal, TokenStore
from callboard.server.http.rate_limit import retry_after
from callboard.server.live.hub import LiveHub
from callboard.server.settings import Settings
from callboard.server.store.db import Database
from callboard.server.store.models import Run
from callboard.server.store.run_writes import RunWrites

SESSION_COOKIE = "callboard_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# A run's or token's id: beyond MAX_ROW_ID no row exists, and the database would refuse
# the number (a 500 on PostgreSQL). `RowId` in a path; `ROW_ID` checks one anywhere else.
RowIdNumber = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]
RowId = Annotated[RowIdNumber, Path()]
ROW_ID = TypeAdapter(RowIdNumber)


def parse_row_id(text):
    """`text` as a run's or token's id, or None if it is not one.

    Example:
        >>> parse_row_id("12"), parse_row_id("0"), parse_row_id(str(2**31)), parse_row_id("x")
        (12, None, None, None)
    """
    try:
        return ROW_ID.validate_python(text)
    except ValidationError:
        return None


# An event id to read after (0: from the first), in a query: a 64-bit integer.
AfterRowId = Annotated[int, Query(ge=0, le=MAX_BIGINT, description="row id to start after")]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_database(request: Request) -> Database:
    return request.app.state.database


async def get_hub(request: Request) -> LiveHub:
    return request.app.state.hub


async def get_run_writes(request: Request) -> RunWrites:
    return request.app.state.run_writes


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
RunWritesDep = Annotated[RunWrites, Depends(get_run_writes)]
SessionDep = Annotated[Session, Depends(get_session)]
WriteSessionDep = Annotated[Session, Depends(get_write_session)]


def _unauthorized(detail):
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _principal_of(request, tokens):
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


async def resolve_caller(request: Request) -> Principal:
    """Who sent `request`, looked up now (401 if nobody admitted): from the token cache on
    the event loop, from the database on a worker thread only on a cache miss.

    Routes want `get_principal`, which looks up once per request; a live stream
    calls this to learn whether its caller is still admitted.
    """
    tokens = request.app.state.tokens
    return await tokens.without_blocking(_principal_of, request, tokens)


async def get_principal(request: Request) -> Principal:
    """The caller, resolved once per request and kept on `request.state`.

    Every dependency, `fast_path.authorize` and the dashboard pages share it.

    Example:
        `def route(principal: PrincipalDep): ...`
    """
    principal = getattr(request.state, "principal", None)
    if principal is None:
        principal = request.state.principal = await resolve_caller(request)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def still_admitted(request: Request, scope) -> bool:
    """True while the credential that opened `request` still grants `scope`.

    For answers that last (live streams): a revoked token, an expired or closed
    session, or a first token ending open mode make it False.
    """
    try:
        principal = await resolve_caller(request)
    except (HTTPException, OperationalError):
        return False
    return principal.can(scope)


def admit(request, principal, scopes):
    """`principal` if it holds any of `scopes`, else 403; 403 for a cookie write without the
    session's CSRF token; 429 when an ingest token is over its request budget."""
    if not any(principal.can(scope) for scope in scopes):
        raise HTTPException(
            status_code=403,
            detail=f"role {principal.role!r} cannot do this (needs {' or '.join(scopes)})",
        )
    cookie_write = principal.csrf_token is not None and request.method not in SAFE_METHODS
    if cookie_write and not principal.csrf_matches(request.headers.get("x-csrf-token")):
        raise HTTPException(status_code=403, detail="missing or wrong X-CSRF-Token")
    if "ingest" in scopes and principal.token_id is not None:
        wait = request.app.state.rate_limiter.acquire(principal.token_id)
        if wait:
            raise HTTPException(
                status_code=429,
                detail="too many requests for this token",
                headers={"Retry-After": retry_after(wait)},
            )
    return principal


def require(*scopes):
    """A dependency admitting callers holding any of `scopes` (`admit`).

    Example:
        `@router.post("/stop", dependencies=[Depends(require("control"))])`
    """

    async def check(request: Request, principal: PrincipalDep) -> Principal:
        return admit(request, principal, scopes)

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


def run_not_found(run_id):
    """The answer for a run that is missing or outside the caller's projects, alike: a
    project-scoped caller cannot learn that another project's run exists."""
    return HTTPException(status_code=404, detail=f"run {run_id} not found")


def check_run_visible(principal, run_id, project):
    """The one rule for "may this caller see this run": it exists (`project`, its project's
    name, is not None) and lies in the caller's projects; else `run_not_found`."""
    if project is None or not principal.sees_project(project):
        raise run_not_found(run_id)


def visible_run(session, run_id, principal) -> Run:
    """Run `run_id` as `principal` may see it (`check_run_visible`), else 404.

    Example:
        `run = visible_run(session, run_id, principal)`
    """
    run = session.get(Run, run_id)
    check_run_visible(principal, run_id, run.project.name if run is not None else None)
    return run


def get_visible_run(run_id: RowId, session: SessionDep, principal: PrincipalDep) -> Run:
    return visible_run(session, run_id, principal)


VisibleRun = Annotated[Run, Depends(get_visible_run)]
