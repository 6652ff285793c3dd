"""A real HTTP receiver for webhooks on 127.0.0.1: records every POST, answers as told.

Example:
    ```python
    receiver = Receiver()
    url = receiver.url("/hook")  # give it to a rule's webhook action
    ...
    assert receiver.received("/hook")[0].headers["X-Callboard-Signature"]
    receiver.close()
    ```
"""

import collections
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# `at`: when the post had arrived (time.time()).
Received = collections.namedtuple("Received", "method path headers body at")


class BusyServer(ThreadingHTTPServer):
    """Takes many connections at once (the default backlog of 5 resets some of 20 posts)."""

    daemon_threads = True
    request_queue_size = 128


class Receiver:
    """A real HTTP receiver on 127.0.0.1 that records every POST (method, path, headers, body, at).

    `answers[path]` lists the statuses to answer in turn (then 200); a path in `hanging`
    never answers: its handler waits until the client hangs up (recorded in `hung_up`)
    or the receiver closes.
    """

    def __init__(self):
        self.requests = []
        self.answers = {}
        self.hanging = set()
        self.hung_up = []
        self.open_connections = 0
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.server = BusyServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def received(self, path=None):
        with self.lock:
            return [request for request in self.requests if path in (None, request.path)]

    def wait_for(self, count, path=None, timeout=30.0):
        """The posts to `path` once there are `count` of them; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while len(found := self.received(path)) < count:
            assert time.monotonic() < deadline, f"{len(found)} of {count} posts arrived"
            time.sleep(0.01)
        return found

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def _next_status(self, path):
        with self.lock:
            planned = self.answers.get(path)
            return planned.pop(0) if planned else 200

    def _hang(self, connection, path):
        while not self.closing.is_set():
            readable, _, _ = select.select([connection], [], [], 0.05)
            if readable and not connection.recv(1, socket.MSG_PEEK):  # the client hung up
                with self.lock:
                    self.hung_up.append(path)
                return

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a client keeps its connections open

            def setup(self):
                super().setup()
                with receiver.lock:
                    receiver.open_connections += 1

            def finish(self):
                super().finish()
                with receiver.lock:
                    receiver.open_connections -= 1

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append(
                        Received(self.command, self.path, self.headers, body, time.time())
                    )
                if self.path in receiver.hanging:
                    receiver._hang(self.connection, self.path)
                    self.close_connection = True
                    return
                status = receiver._next_status(self.path)
                answer = b"ok" if status < 300 else b"no such hook\nsee the docs"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        return Handler
