"""Dashboard sign-in: trade a token for a session cookie, and sign out again.

A browser signs in once with a read, control or admin token; the server keeps
only the SHA-256 of the session secret it puts in the `callboard_session`
cookie (HttpOnly, SameSite=Strict, Secure over https). Writes made with that
cookie need the session's CSRF token (`X-CSRF-Token`, or the `csrf` field of
the sign-out form).

Login CSRF (a site signing your browser in as someone else): a POST /login
from another site is refused (403) like every cross-site write, by
`middleware.CrossSiteGuard`. The login page sets
`<meta name="referrer" content="same-origin">` (over the server-wide
`no-referrer`) so that its own form sends a real `Origin`.

Failed sign-ins are limited per client address (`http.rate_limit.RateLimiter`):
a burst of `LOGIN_BURST`, then one more every `LOGIN_REFILL_SECONDS`.
"""

import time
from typing import Annotated
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import delete
from starlette.concurrency import run_in_threadpool

from callboard.server.api.deps import (
    SESSION_COOKIE,
    DatabaseDep,
    SettingsDep,
    get_principal,
    get_tokens,
)
from callboard.server.auth import Principal, TokenStore, digest, open_session
from callboard.server.http.rate_limit import RateLimiter, retry_after
from callboard.server.store.models import DashboardSession
from callboard.server.web.templating import templates

router = APIRouter(include_in_schema=False)
TokensDep = Annotated[TokenStore, Depends(get_tokens)]

LOGIN_BURST = 10
LOGIN_REFILL_SECONDS = 6.0
MAX_FORM_BYTES = 4096
MAX_NEXT_LENGTH = 2000
WRONG_TOKEN = "That token is not valid: it is unknown or has been revoked."
INGEST_ONLY = (
    "That is an ingest token: it can send training data but not view the dashboard. "
    "Sign in with a read, control or admin token."
)


def safe_next(value):
    """`value` if it is a path on this site, else `"/"`: sign-in never redirects elsewhere.

    Example:
        >>> safe_next("/runs/3?x=1"), safe_next("//evil.example/"), safe_next("https://e.x/")
        ('/runs/3?x=1', '/', '/')
    """
    if not value or len(value) > MAX_NEXT_LENGTH or not value.startswith("/"):
        return "/"
    if value.startswith("//") or "\\" in value or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path.startswith(("/login", "/logout")):
        return "/"
    return value


def app_path(request):
    """The path and query asked for, relative to the app's root path."""
    path = request.url.path
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    query = request.url.query
    return f"{path}?{query}" if query else path


def sign_in_url(request):
    """Where a browser without a session goes: `/login?next=<the page it wanted>`."""
    root = request.scope.get("root_path", "")
    return f"{root}/login?next={quote(safe_next(app_path(request)), safe='')}"


async def page_reader(request: Request) -> Principal:
    """The caller of a dashboard page (`deps.get_principal`): anyone before the first
    token, then a reader.

    A browser without a valid session is sent to sign in (303), not shown a 401.
    """
    try:
        principal = await get_principal(request)
    except HTTPException as exc:
        if exc.status_code != 401 or "authorization" in request.headers:
            raise
        raise HTTPException(
            status_code=303, detail="sign in first", headers={"Location": sign_in_url(request)}
        ) from None
    if not principal.can("read"):
        raise HTTPException(
            status_code=403, detail=f"a {principal.role!r} token cannot view the dashboard"
        )
    return principal


PageReader = Annotated[Principal, Depends(page_reader)]


def throttle_of(app):
    """The app's budget of failed sign-ins per client address, made on first use."""
    throttle = getattr(app.state, "login_throttle", None)
    if throttle is None:
        throttle = RateLimiter(rate=1 / LOGIN_REFILL_SECONDS, burst=LOGIN_BURST)
        app.state.login_throttle = throttle
    return throttle


def client_address(request):
    return request.client.host if request.client else "unknown"


async def form_fields(request):
    """The urlencoded form of a small POST, as `{name: last value}`."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(status_code=413, detail=f"form over {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise HTTPException(status_code=400, detail="form is not UTF-8") from None
    return {name: values[-1] for name, values in fields.items()}


def login_form(request, next_path, message="", status_code=200, principal=None):
    return templates.TemplateResponse(
        request,
        "login.html",
        {
            "root": request.scope.get("root_path", ""),
            "csrf_token": "",
            "signed_in": principal.name if principal and principal.csrf_token else "",
            "next": next_path,
            "message": message,
        },
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )


def _signed_in(request, tokens):
    cookie = request.cookies.get(SESSION_COOKIE)
    return tokens.for_session(cookie) if cookie else None


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, tokens: TokensDep, next: str = "/"):
    """The sign-in form. Before any token exists the dashboard is open: go straight on."""
    next_path = safe_next(next)
    root = request.scope.get("root_path", "")
    if tokens.open_mode():
        return RedirectResponse(root + next_path, status_code=303)
    return login_form(request, next_path, principal=_signed_in(request, tokens))


def _open_session(database, principal, lifetime):
    with database.writer() as session:
        session.execute(delete(DashboardSession).where(DashboardSession.expires_at < time.time()))
        secret, _csrf = open_session(session, principal.token_id, lifetime)
        session.commit()
    return secret


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, tokens: TokensDep, database: DatabaseDep, settings: SettingsDep):
    """Check the token from the form; on success set the session cookie and go to `next`."""
    fields = await form_fields(request)
    next_path = safe_next(fields.get("next", "/"))
    throttle = throttle_of(request.app)
    address = client_address(request)
    wait = throttle.wait(address)
    if wait:
        response = login_form(request, next_path, "Too many failed sign-ins: wait a minute.", 429)
        response.headers["Retry-After"] = retry_after(wait)
        return response
    secret = fields.get("token", "").strip()
    principal = None
    if 0 < len(secret) <= 200:
        principal = await tokens.without_blocking(tokens.for_token, secret)
    if principal is None:
        throttle.spend(address)
        return login_form(request, next_path, WRONG_TOKEN, 401)
    if not principal.can("read"):
        return login_form(request, next_path, INGEST_ONLY, 403)
    lifetime = settings.session_days * 86_400
    cookie = await run_in_threadpool(_open_session, database, principal, lifetime)
    root = request.scope.get("root_path", "")
    response = RedirectResponse(root + next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(lifetime),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
async def logout(request: Request, tokens: TokensDep, database: DatabaseDep):
    """End this browser's session (the sign-out form sends the session's CSRF token)."""
    fields = await form_fields(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    principal = await tokens.without_blocking(tokens.for_session, cookie) if cookie else None
    if principal is not None:
        sent = request.headers.get("x-csrf-token") or fields.get("csrf", "")
        if not principal.csrf_matches(sent):
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
        await run_in_threadpool(_close_session, database, cookie)
        tokens.invalidate()
    root = request.scope.get("root_path", "")
    response = RedirectResponse(f"{root}/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _close_session(database, cookie):
    with database.writer() as session:
        session.execute(delete(DashboardSession).where(DashboardSession.id == digest(cookie)))
        session.commit()
