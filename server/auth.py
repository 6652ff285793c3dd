"""Who is asking: API tokens with roles, dashboard sessions, and the open mode before any token.

Roles grant scopes: `ingest` (create runs, post events), `read` (API and
dashboard), `control` (read and stop), `admin` (everything, and tokens).
A token may be scoped to one project. Only SHA-256 digests are stored.

Open mode (anonymous callers act as admin) lasts only while no token has ever
been created, and never on a server told `require_tokens` (a non-loopback
bind). Revoking every token locks the server; it does not reopen it.
"""

import contextlib
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from callboard.server.store.models import ApiToken, DashboardSession

ROLES = ("ingest", "read", "control", "admin")
SCOPES = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "control": frozenset({"read", "control"}),
    "admin": frozenset({"read", "control", "ingest", "admin"}),
}
TOKEN_PREFIX = "cb_"


@dataclass(frozen=True)
class Principal:
    """The caller. `csrf_token` is set when a dashboard session cookie authenticated it."""

    name: str
    role: str
    project: str | None = None
    token_id: int | None = None
    csrf_token: str | None = None

    def can(self, scope):
        return scope in SCOPES[self.role]

    def sees_project(self, project):
        return self.project is None or self.project == project

    def csrf_matches(self, sent):
        """True when `sent` is this session's CSRF token, compared in constant time.

        Always False for a bearer token's principal (it has no CSRF token).
        """
        if not sent or not self.csrf_token:
            return False
        return secrets.compare_digest(sent.encode(), self.csrf_token.encode())


OPEN = Principal(name="anonymous (no token exists yet)", role="admin")
RECOVERY_HINT = (
    "create one on the server's database with `callboard token create NAME --role admin` "
    "(add `--db URL` for the database the server uses)"
)


def digest(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session, name, role, project=None):
    """Store a new token; return `(row, secret)`. The secret is never stored or shown again."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        role=role,
        project=project,
        token_hash=digest(secret),
        prefix=secret[:10],
        created_at=time.time(),
    )
    session.add(row)
    session.flush()
    return row, secret


def principal_of(token):
    return Principal(name=token.name, role=token.role, project=token.project, token_id=token.id)


class NotCached(LookupError):
    """Raised by a `TokenStore` look-up under `cached_only()` that would need the database."""


class TokenStore:
    """Resolves secrets to principals, caching answers for `ttl` seconds.

    The cache keeps auth off the database on almost every request; a revoked
    token stops working within `ttl` on every replica.
    """

    def __init__(self, database, ttl=2.0, require_tokens=False):
        self.database = database
        self.ttl = ttl
        self.require_tokens = require_tokens
        self._cache = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    @contextlib.contextmanager
    def cached_only(self):
        """Look-ups in this block answer from the cache or raise `NotCached`, never query.

        Lets the event loop resolve a caller without blocking on the database.
        """
        self._local.cached_only = True
        try:
            yield
        finally:
            self._local.cached_only = False

    async def without_blocking(self, lookup, *args):
        """`lookup(*args)` answered from the cache on the event loop; only a cache miss
        goes to the database, on a worker thread.

        Example:
            `principal = await tokens.without_blocking(tokens.for_token, secret)`
        """
        try:
            with self.cached_only():
                return lookup(*args)
        except NotCached:
            return await run_in_threadpool(lookup, *args)

    def invalidate(self):
        with self._lock:
            self._cache.clear()

    def _cached(self, key, load):
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        if getattr(self._local, "cached_only", False):
            raise NotCached(key)
        value = load()
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self.ttl, value)
        return value

    def _counts(self):
        """`(tokens ever created, tokens not revoked)`."""

        def load():
            with self.database.reader() as session:
                created, revoked = session.execute(
                    select(func.count(ApiToken.id), func.count(ApiToken.revoked_at))
                ).one()
                return created, created - revoked

        return self._cached("counts", load)

    def any_tokens(self):
        """True while a live (not revoked) token exists."""
        return self._counts()[1] > 0

    def open_mode(self):
        """True while anonymous callers act as admin.

        That is while no token was ever created (revoked ones count: revoking every
        token locks the server instead of opening it), and never with `require_tokens`.
        """
        return not self.require_tokens and self._counts()[0] == 0

    def locked_out_detail(self):
        """What a 401 adds when no live token exists: how to make one. Else None."""
        if self.any_tokens():
            return None
        if self._counts()[0]:
            return f"every API token of this server has been revoked: {RECOVERY_HINT}"
        return f"this server requires an API token and none exists yet: {RECOVERY_HINT}"

    def for_token(self, secret):
        """The principal of a bearer token, or None if unknown or revoked."""

        def load():
            with self.database.reader() as session:
                token = session.scalars(
                    select(ApiToken).where(
                        ApiToken.token_hash == digest(secret), ApiToken.revoked_at.is_(None)
                    )
                ).one_or_none()
                return principal_of(token) if token else None

        return self._cached(("token", digest(secret)), load)

    def for_session(self, cookie):
        """The principal of a dashboard session cookie, or None if unknown or expired."""

        def load():
            with self.database.reader() as session:
                row = session.execute(
                    select(ApiToken, DashboardSession.csrf_token)
                    .join(DashboardSession, DashboardSession.token_id == ApiToken.id)
                    .where(
                        DashboardSession.id == digest(cookie),
                        DashboardSession.expires_at > time.time(),
                        ApiToken.revoked_at.is_(None),
                    )
                ).one_or_none()
                if row is None:
                    return None
                token, csrf = row
                return Principal(token.name, token.role, token.project, token.id, csrf)

        return self._cached(("session", digest(cookie)), load)


def open_session(session, token_id, lifetime_seconds):
    """Start a dashboard session; return `(cookie secret, csrf token)`."""
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = time.time()
    session.add(
        DashboardSession(
            id=digest(secret),
            token_id=token_id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + lifetime_seconds,
        )
    )
    return secret, csrf
