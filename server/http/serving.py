"""How uvicorn serves the app: the options every server runs with, time limits included.

uvicorn closes idle keep-alive connections, but not one that sends its request
head or body slowly (a slow-loris client holds a connection for as long as it
likes). `TimedHttpProtocol` gives every request `header_timeout_seconds` to
send its head, from the connection's start or the request's first byte, then
`body_timeout_seconds` to send its body; past either it answers 408 (when no
answer has started) and closes the connection.
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


def request_timeout_answer(what, seconds):
    body = b'{"detail": "request %s not received within %g s"}' % (what.encode(), seconds)
    return REQUEST_TIMEOUT % (len(body), body)


class TimedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing requests whose head or body arrive too slowly."""

    header_timeout = 10.0
    body_timeout = 20.0

    def connection_made(self, transport):
        self._deadline = None
        super().connection_made(transport)
        self._arm("head", self.header_timeout)

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self):
        super().on_message_begin()
        if self._deadline is None:
            self._arm("head", self.header_timeout)

    def on_headers_complete(self):
        super().on_headers_complete()
        self._arm("body", self.body_timeout)

    def on_message_complete(self):
        self._disarm()
        super().on_message_complete()

    def _arm(self, what, seconds):
        self._disarm()
        if seconds and seconds > 0:
            self._deadline = self.loop.call_later(seconds, self._timed_out, what, seconds)

    def _disarm(self):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self, what, seconds):
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if what == "head":  # an earlier pipelined request is still being answered
                return
            if not cycle.response_started:
                self.transport.write(request_timeout_answer(what, seconds))
            cycle.disconnected = True  # the app's receive() now answers http.disconnect
            cycle.message_event.set()
        elif what == "head":
            self.transport.write(request_timeout_answer(what, seconds))
        self.transport.close()


def protocol_for(settings):
    """`TimedHttpProtocol` with `settings`' time limits."""
    return type(
        "CallboardHttpProtocol",
        (TimedHttpProtocol,),
        {
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
        },
    )


def raise_open_files_limit(connections, spare=128):
    """Raise this process's soft limit of open files to hold `connections` (plus `spare`
    for the database and logs), up to the hard limit; never lower it. Returns the limit.

    Every training holds a connection for its commands: the common soft limit of
    1,024 would refuse connections long before `max_connections`.

    Example:
        `raise_open_files_limit(settings.max_connections)`
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + spare
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # past the kernel's own ceiling: keep what we have
            return soft
        return wanted
    return soft


def uvicorn_options(settings):
    """Options every Callboard server passes to uvicorn (`callboard serve`, the demo).

    Slow heads and bodies time out (`TimedHttpProtocol`); past `max_connections`
    open connections (live streams included) uvicorn answers 503, so a flood of
    connections cannot exhaust memory or file handles.

    Example:
        `uvicorn.run(create_app(settings), port=8000, **uvicorn_options(settings))`
    """
    return {
        "http": protocol_for(settings),
        "limit_concurrency": settings.max_connections or None,
    }
