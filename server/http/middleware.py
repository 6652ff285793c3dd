"""HTTP hardening: security headers, a body-size limit, cross-site writes and Host names.

Cross-site writes (CSRF against open mode or a signed-in browser): a POST, PUT,
PATCH or DELETE that a browser says comes from another site is refused with
403, whatever its body (`cross_site_reason`). Browsers send `Sec-Fetch-Site`
or `Origin` on such requests and scripts cannot forge them; clients that send
neither (the training client, the stock Keras RemoteMonitor, curl) are not
browsers another site can drive, and are let in.

Host names (DNS rebinding: another site's name resolving to 127.0.0.1): with no
token the server answers only `localhost`, `127.0.0.1` and `[::1]`, unless
`CALLBOARD_ALLOWED_HOSTS` names more (`HostAllowList`).
"""

import json
import re
from urllib.parse import urlsplit

from sqlalchemy.exc import OperationalError

STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", STRICT_CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def header_values(scope, names):
    """The first value of each header of `names` (lower-case bytes) in `scope`, as text.

    A look-up of a few names without building Starlette's `Headers` per request.

    Example:
        >>> header_values({"headers": [(b"host", b"a:1"), (b"x", b"y")]}, (b"host", b"origin"))
        {'host': 'a:1'}
    """
    found = {}
    for name, value in scope["headers"]:
        if name in names and name not in found:
            found[name] = value
    return {name.decode(): value.decode("latin-1") for name, value in found.items()}


class SecurityHeaders:
    """Adds CSP (no inline script), nosniff, no framing and no referrer to every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *SECURITY_HEADERS]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    """Answers 413 to request bodies over `max_bytes`, declared or streamed."""

    def __init__(self, app, max_bytes):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._too_large(send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            await self._too_large(send)

    async def _too_large(self, send):
        await send_detail(send, 413, f"request body over {self.max_bytes} bytes")


class BodyTooLarge(Exception):
    pass


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_SITE_HEADERS = frozenset({b"sec-fetch-site", b"origin", b"referer", b"host"})
CROSS_SITE = "refused: this {method} came from another site ({reason}), a CSRF attempt"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
DATABASE_BUSY = "database busy or unavailable, retry shortly"


async def send_detail(send, status, detail, headers=()):
    """Answer `{"detail": detail}` with `status` straight from a middleware."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})


def cross_site_reason(headers):
    """Why a browser says this request comes from another site, or None.

    `Sec-Fetch-Site` decides when present (`same-origin` and `none` pass; the
    server's own pages send `Origin: null` under its `no-referrer` policy).
    Without it, an `Origin` (or else a `Referer`) must name this Host.

    Example:
        >>> cross_site_reason({"host": "127.0.0.1:8000", "origin": "http://evil.example"})
        'Origin http://evil.example'
        >>> cross_site_reason({"host": "127.0.0.1:8000"}) is None
        True
    """
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site.lower() in ("cross-site", "same-site"):
            return f"Sec-Fetch-Site: {fetch_site}"
        return None
    for name in ("origin", "referer"):
        origin = headers.get(name)
        if origin is None:
            continue
        if origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
            return f"{name.title()} {origin[:100]}"
        return None
    return None


class CrossSiteGuard:
    """Answers 403 to state-changing requests a browser sent from another site."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            reason = cross_site_reason(header_values(scope, CROSS_SITE_HEADERS))
            if reason is not None:
                detail = CROSS_SITE.format(method=scope["method"], reason=reason)
                return await send_detail(send, 403, detail)
        return await self.app(scope, receive, send)


# A Host header: a name or a bracketed IPv6 address, then at most a port.
HOST_HEADER = re.compile(r"(\[[0-9a-f:.]+\]|[^\[\]:@/\\\s]*)(:[0-9]*)?")


def host_name(host):
    """The name in a Host header, lower-case, without its port; anything else as it is.

    Example:
        >>> host_name("LocalHost:8000"), host_name("[::1]:8000"), host_name("example.org.")
        ('localhost', '[::1]', 'example.org')
        >>> host_name("localhost:80@evil.example"), host_name("[::1].evil.example")
        ('localhost:80@evil.example', '[::1].evil.example')
    """
    host = host.strip().lower()
    match = HOST_HEADER.fullmatch(host)
    if match is None:
        return host  # not a name and a port: matches no allowed name
    name = match.group(1)
    return name if name.startswith("[") else name.rstrip(".")


def parse_allowed_hosts(value):
    """`CALLBOARD_ALLOWED_HOSTS` as a tuple of names, or None when unset."""
    if value is None or not value.strip():
        return None
    return tuple(host_name(item) if item.strip() != "*" else "*" for item in value.split(","))


def host_allowed(host, allowed):
    """True if Host name `host` matches an entry of `allowed` (`*`, `.domain`, or a name)."""
    for entry in allowed:
        if entry == "*" or host == entry:
            return True
        if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
            return True
    return False


def served_whatever_the_mode(host, allowed):
    """True for a Host name served with or without tokens: loopback ones, and those that
    `allowed` (`CALLBOARD_ALLOWED_HOSTS`, parsed) names."""
    return host in LOOPBACK_HOSTS or bool(allowed) and host_allowed(host, allowed)


async def in_open_mode(app):
    """`TokenStore.open_mode()`, from the token cache on the event loop when it can."""
    tokens = app.state.tokens
    return await tokens.without_blocking(tokens.open_mode)


class HostAllowList:
    """Serves only allowed Host names: loopback ones while open, any once tokens exist.

    `allowed_hosts` (the setting) lists more names; set, only loopback names
    and those are served, tokens or not.
    """

    def __init__(self, app, allowed_hosts=None):
        self.app = app
        self.allowed = parse_allowed_hosts(allowed_hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = host_name(header_values(scope, (b"host",)).get("host", ""))
        if served_whatever_the_mode(host, self.allowed):
            return await self.app(scope, receive, send)
        if self.allowed is None:
            try:
                if not await in_open_mode(scope["app"]):
                    return await self.app(scope, receive, send)
            except OperationalError:
                return await send_detail(send, 503, DATABASE_BUSY, [(b"retry-after", b"1")])
            detail = (
                f"Host {host[:100]!r} is not served: with no API token this server answers "
                "only localhost, 127.0.0.1 and [::1] (against DNS rebinding). Create a token, "
                "or name this host in CALLBOARD_ALLOWED_HOSTS."
            )
        else:
            detail = f"Host {host[:100]!r} is not in CALLBOARD_ALLOWED_HOSTS"
        return await send_detail(send, 400, detail)
