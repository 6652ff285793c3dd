"""A lean keep-alive HTTP/1.1 client over asyncio streams, for load generators.

Thousands of them in one asyncio process cost a few percent of a core, where
a general client's per-request work would make the load generator the bottleneck.
"""

import asyncio
import time

import orjson


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its answer (Content-Length bodies).

    A connection idle longer than uvicorn keeps one (5 s) is opened afresh, as
    httpx's pool does; a request on one the server just closed is sent again once.
    """

    def __init__(self, root):
        self.host, port = root.removeprefix("http://").split(":")
        self.port = int(port)
        self.reader = self.writer = None
        self.used = 0.0

    async def request(self, method, path, body=None):
        """`(status, parsed JSON answer)`."""
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        fresh = self.writer is None or time.monotonic() - self.used > 4.5
        for attempt in (1, 2):
            if fresh:
                self.close()
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            try:
                self.writer.write(head + payload)
                status, data = await self._answer()
                break
            except (ConnectionError, asyncio.IncompleteReadError):
                if fresh or attempt == 2:
                    raise
                fresh = True
        self.used = time.monotonic()
        try:
            return status, orjson.loads(data) if data else None
        except orjson.JSONDecodeError:  # uvicorn's own answers (a 503) are plain text
            return status, data.decode(errors="replace")

    async def _answer(self):
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").lower().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        data = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection") == "close":
            self.close()
        return int(lines[0].split()[1]), data

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
