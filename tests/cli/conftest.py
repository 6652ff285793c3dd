"""A real server with a token of each role, and the `callboard` command pointed at it."""

import httpx
import pytest
from typer.testing import CliRunner

from callboard.server.auth import ROLES
from callboard.server.cli.main import app
from tests.server_process import ServerProcess

runner = CliRunner()
NO_ENVIRONMENT = {"CALLBOARD_ROOT": None, "CALLBOARD_TOKEN": None, "CALLBOARD_DATABASE_URL": None}


def invoke(*args, env=None):
    """`callboard ARGS` in this process, with no CALLBOARD_* variable unless `env` sets it."""
    return runner.invoke(app, list(args), env={**NO_ENVIRONMENT, **(env or {})})


def secret_of(result):
    """The secret `callboard token create` printed as its last word."""
    assert result.exit_code == 0, result.output
    return result.stdout.split()[-1]


class Board:
    """The server of this module's tests: `call(...)` runs a command against it."""

    def __init__(self, server, tokens):
        self.server = server
        self.root = server.root
        self.tokens = tokens

    def call(self, *args, role="admin"):
        """`callboard ARGS --root ROOT [--token T]` with the token of `role` (None: no token)."""
        token = ["--token", self.tokens[role]] if role else []
        return invoke(*args, "--root", self.root, *token)

    def client(self, role="ingest"):
        """An HTTP client on the server with the token of `role`, as a training script has."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.Client(base_url=self.root, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A real server (child process, SQLite) with one token per role, made by `token create`."""
    url = f"sqlite:///{tmp_path_factory.mktemp('board') / 'board.db'}"
    tokens = {
        role: secret_of(invoke("token", "create", role, "--role", role, "--db", url))
        for role in ROLES
    }
    server = ServerProcess(url).start()
    yield Board(server, tokens)
    server.stop()
