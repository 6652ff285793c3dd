"""The commands that open a database themselves: `serve`, `demo`, `db ...`, `token create`."""

import socket

import pytest
from fastapi.testclient import TestClient

from callboard.server.main import create_app
from callboard.server.settings import Settings
from callboard.server.store import migrate

from .conftest import invoke, secret_of


def free_listening_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def token_names(url, admin_secret):
    """`{name: revoked?}` of the tokens in the database at `url`, as the API lists them."""
    with TestClient(create_app(Settings(database_url=url))) as api:
        answer = api.get("/api/v1/tokens", headers={"Authorization": f"Bearer {admin_secret}"})
    assert answer.status_code == 200, answer.text
    return {token["name"]: token["revoked_at"] is not None for token in answer.json()["tokens"]}


def test_db_upgrade_says_its_revision(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgraded = invoke("db", "upgrade", "--db", url)
    assert upgraded.exit_code == 0 and migrate.current_revision(url) in upgraded.output


def test_db_url_comes_from_the_environment(tmp_path):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    environment = {"CALLBOARD_DATABASE_URL": url}
    assert invoke("db", "upgrade", env=environment).exit_code == 0
    assert migrate.current_revision(url) is not None
    assert invoke("db", "downgrade", "base", env=environment).exit_code == 0
    assert migrate.current_revision(url) is None


# --- token create: the first token, written to the database -------------------------------


def test_token_create_if_none_makes_only_the_first_token(tmp_path):
    # docker-compose's first start: `callboard token create admin --role admin --if-none`.
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    args = ["token", "create", "admin", "--role", "admin", "--if-none", "--db", url]
    first = invoke(*args)
    secret = secret_of(first)
    assert secret.startswith("cb_")
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "none created" in again.output and "cb_" not in again.output
    assert token_names(url, secret) == {"admin": False}


def test_token_create_if_none_counts_only_live_tokens(tmp_path):
    # After every token is revoked, compose's migrate step must make a new admin token,
    # else the replicas (on 0.0.0.0) refuse to start.
    url = f"sqlite:///{tmp_path / 'live.db'}"
    args = ["token", "create", "admin", "--role", "admin", "--if-none", "--db", url]
    secret = secret_of(invoke(*args))
    with TestClient(create_app(Settings(database_url=url))) as api:
        revoked = api.delete("/api/v1/tokens/1", headers={"Authorization": f"Bearer {secret}"})
        assert revoked.status_code == 200, revoked.text
    renewed = invoke(*args)
    assert secret_of(renewed).startswith("cb_")
    assert "'admin-2'" in renewed.stdout  # the revoked token keeps its name
    assert "none created" in invoke(*args).stdout
    assert token_names(url, secret_of(renewed)) == {"admin": True, "admin-2": False}


def test_token_secret_file_is_private_and_the_secret_is_not_printed(tmp_path):
    url = f"sqlite:///{tmp_path / 'secret.db'}"
    secret_file = tmp_path / "admin-token"
    created = invoke(
        "token",
        "create",
        "admin",
        "--role",
        "admin",
        "--secret-file",
        str(secret_file),
        "--db",
        url,
    )
    assert created.exit_code == 0, created.output
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip()
    assert secret.startswith("cb_") and secret not in created.output
    with TestClient(create_app(Settings(database_url=url))) as api:
        answer = api.get("/api/v1/runs", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200


# --- ports: one line and a hint, not a traceback ------------------------------------------


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_busy_port_says_so_in_one_line(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        database = tmp_path / "busy.db"
        result = invoke(command, "--port", str(port), "--db", f"sqlite:///{database}")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert not result.stdout, result.stdout
    assert len(lines) == 1, result.output
    assert f":{port}" in lines[0] and "in use" in lines[0] and "--port" in lines[0]
    assert not database.exists(), "a server that could not listen created its database"


def test_demo_on_a_database_with_tokens_asks_for_one_before_training(tmp_path):
    # It trained with no token: every post got 401 and the demo recorded nothing.
    url = f"sqlite:///{tmp_path / 'guarded.db'}"
    secret_of(invoke("token", "create", "admin", "--role", "admin", "--db", url))
    port = free_listening_port()
    result = invoke("demo", "--port", str(port), "--db", url, "--epochs", "1", "--exit")
    assert result.exit_code == 2, result.output
    assert "needs one" in result.stderr and "--token" in result.stderr


def test_serve_refused_for_want_of_a_token_names_the_database_to_create_it_in(tmp_path):
    # The hint made the token in ./callboard.db, not in the --db the server was given.
    url = f"sqlite:///{tmp_path / 'public.db'}"
    port = free_listening_port()
    result = invoke("serve", "--host", "0.0.0.0", "--port", str(port), "--db", url)
    assert result.exit_code == 2, result.output
    assert f"callboard token create admin --role admin --db {url}" in result.stdout


# --- which database: said on stderr; a missing SQLite file is refused ---------------------


def test_db_downgrade_refuses_a_sqlite_file_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("db", "downgrade", "base")
    assert result.exit_code == 1, result.output
    assert f"No database at {tmp_path / 'callboard.db'}" in result.stderr
    assert "--db" in result.stderr and "CALLBOARD_DATABASE_URL" in result.stderr
    assert not (tmp_path / "callboard.db").exists(), "the command created ./callboard.db"


def test_commands_say_which_database_they_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    created = invoke("db", "upgrade")
    assert created.exit_code == 0, created.output
    assert created.stderr == f"database: SQLite file {tmp_path / 'callboard.db'} (new)\n"
    result = invoke("token", "create", "ci")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"database: SQLite file {tmp_path / 'callboard.db'}\n"
    other = tmp_path / "other.db"
    made = invoke("token", "create", "first", env={"CALLBOARD_DATABASE_URL": f"sqlite:///{other}"})
    assert made.exit_code == 0 and f"SQLite file {other} (new)" in made.stderr
