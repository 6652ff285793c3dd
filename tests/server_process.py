"""`callboard serve` as a child process on a free port, for tests and benchmarks."""

import os
import socket
import subprocess
import sys
import time

import httpx


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A real server in a child process; it can be killed and started again on its port.

    Example:
        ```python
        server = ServerProcess("sqlite:///bench.db").start()
        httpx.get(server.root + "/api/v1/runs")
        server.stop()
        ```
    """

    def __init__(self, database_url, port=None, env=None, args=()):
        self.database_url = database_url
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.args = list(args)
        self.process = None

    def start(self, timeout=60):
        """Start the server and wait until `/api/v1/health` answers."""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "callboard.server",
                "serve",
                "--port",
                str(self.port),
                "--db",
                self.database_url,
                *self.args,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()}")
            try:
                if httpx.get(self.root + "/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server on port {self.port} did not answer within {timeout}s")

    def kill(self):
        """SIGKILL: the server dies mid-request, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self):
        """Shut down gracefully (SIGTERM), killing after 10 s."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
