import csv
import io
import socket

import pytest
from typer.testing import CliRunner

from callboard.server.cli.main import app
from callboard.server.store import migrate

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, list(args))
    return result


def test_db_upgrade_runs_stop_and_export(tmp_path):
    from fastapi.testclient import TestClient

    from callboard.server.main import create_app
    from callboard.server.settings import Settings

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgraded = invoke("db", "upgrade", "--db", url)
    assert upgraded.exit_code == 0 and migrate.current_revision(url) in upgraded.output

    with TestClient(create_app(Settings(database_url=url))) as api:
        run_id = api.post("/api/v1/runs", json={"name": "cli-run", "project": "p"}).json()["id"]
        api.post(
            f"/api/v1/runs/{run_id}/events",
            json={
                "events": [
                    {
                        "seq": 1,
                        "kind": "epoch_end",
                        "epoch": 0,
                        "metrics": {"loss": 0.5, "acc": "NaN"},
                    },
                    {
                        "seq": 2,
                        "kind": "epoch_end",
                        "epoch": 1,
                        "metrics": {"loss": 0.25, "acc": 0.9},
                    },
                ]
            },
        )

    listed = invoke("runs", "--db", url)
    assert listed.exit_code == 0
    assert "cli-run" in listed.output and "running" in listed.output

    stopped = invoke("stop", "cli-run", "--reason", "from cli", "--db", url)
    assert stopped.exit_code == 0, stopped.output
    assert f"run {run_id}" in stopped.output
    with TestClient(create_app(Settings(database_url=url))) as api:
        control = api.get(f"/api/v1/runs/{run_id}/control").json()
    assert control["state"] == "requested" and control["reason"] == "from cli"

    exported = invoke("export", str(run_id), "--csv", "--db", url)
    assert exported.exit_code == 0
    rows = list(csv.reader(io.StringIO(exported.stdout)))  # the database line is on stderr
    assert rows == [["epoch", "acc", "loss"], ["0", "nan", "0.5"], ["1", "0.9", "0.25"]]

    missing = invoke("stop", "no-such-run", "--db", url)
    assert missing.exit_code == 1 and "No run" in missing.output


def test_stop_by_name_stops_the_live_run_not_a_newer_ended_one(tmp_path):
    # A newer run of the same name that had ended (a quick retry, a replayed spool)
    # made `callboard stop NAME` answer "already ended" while the training ran on.
    from fastapi.testclient import TestClient

    from callboard.server.main import create_app
    from callboard.server.settings import Settings

    url = f"sqlite:///{tmp_path / 'names.db'}"
    assert invoke("db", "upgrade", "--db", url).exit_code == 0
    with TestClient(create_app(Settings(database_url=url))) as api:
        live, ended = (
            api.post("/api/v1/runs", json={"name": "twin", "project": "p"}).json()["id"]
            for _ in range(2)
        )
        end = {"seq": 1, "kind": "train_end", "data": {"status": "finished"}}
        api.post(f"/api/v1/runs/{ended}/events", json={"events": [end]})
        assert api.get(f"/api/v1/runs/{ended}").json()["status"] == "finished"
    stopped = invoke("stop", "twin", "--db", url)
    assert stopped.exit_code == 0, stopped.output
    assert f"Stop requested for run {live} " in stopped.output


def test_db_url_comes_from_the_environment(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("CALLBOARD_DATABASE_URL", url)
    assert invoke("db", "upgrade").exit_code == 0
    assert migrate.current_revision(url) is not None
    assert invoke("db", "downgrade", "base").exit_code == 0
    assert migrate.current_revision(url) is None


def test_token_create_if_none_makes_only_the_first_token(tmp_path):
    # docker-compose's first start: `callboard token create admin --role admin --if-none`.
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    args = ["token", "create", "admin", "--role", "admin", "--if-none", "--db", url]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.output.split()[-1].startswith("cb_")
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "none created" in again.output and "cb_" not in again.output
    listed = runner.invoke(app, ["token", "list", "--db", url])
    assert listed.output.count("admin") == 2  # one row: its name and its role


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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = runner.invoke(
        app,
        ["demo", "--port", str(port), "--db", url, "--epochs", "1", "--exit"],
        env={"CALLBOARD_TOKEN": None},
    )
    assert result.exit_code == 2, result.output
    assert "needs one" in result.stderr and "--token" in result.stderr


def test_serve_refused_for_want_of_a_token_names_the_database_to_create_it_in(tmp_path):
    # The hint made the token in ./callboard.db, not in the --db the server was given.
    url = f"sqlite:///{tmp_path / 'public.db'}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke("serve", "--host", "0.0.0.0", "--port", str(port), "--db", url)
    assert result.exit_code == 2, result.output
    assert f"callboard token create admin --role admin --db {url}" in result.stdout


# --- tokens -------------------------------------------------------------------------------


def secret_of(result):
    assert result.exit_code == 0, result.output
    return result.stdout.split()[-1]


def test_token_revoke_takes_an_id_or_a_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'revoke.db'}"
    for name in ("laptop", "gpu-box"):
        secret_of(invoke("token", "create", name, "--db", url))
    by_id = invoke("token", "revoke", "2", "--db", url)
    assert by_id.exit_code == 0, by_id.output
    assert "Revoked token 2 ('gpu-box'" in by_id.stdout
    by_name = invoke("token", "revoke", "laptop", "--db", url)
    assert by_name.exit_code == 0 and "Revoked token 1 ('laptop'" in by_name.stdout
    listed = invoke("token", "list", "--db", url).stdout
    assert [line.count("yes") for line in listed.splitlines() if "…" in line] == [1, 1]
    missing = invoke("token", "revoke", "7", "--db", url)
    assert missing.exit_code == 1 and "No token with id or name '7'" in missing.output
    again = invoke("token", "revoke", "2", "--db", url)  # it said "Revoked token 2" again
    assert again.exit_code == 0
    assert "Token 2 ('gpu-box', ingest) was revoked already" in again.stdout


def test_token_create_if_none_counts_only_live_tokens(tmp_path):
    # After every token is revoked, compose's migrate step must make a new admin token,
    # else the replicas (on 0.0.0.0) refuse to start.
    url = f"sqlite:///{tmp_path / 'live.db'}"
    args = ["token", "create", "admin", "--role", "admin", "--if-none", "--db", url]
    secret_of(invoke(*args))
    assert invoke("token", "revoke", "admin", "--db", url).exit_code == 0
    renewed = invoke(*args)
    assert secret_of(renewed).startswith("cb_")
    assert "'admin-2'" in renewed.stdout  # the revoked token keeps its name
    assert "none created" in invoke(*args).stdout


def test_token_secret_file_is_private_and_the_secret_is_not_printed(tmp_path):
    from fastapi.testclient import TestClient

    from callboard.server.main import create_app
    from callboard.server.settings import Settings

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


# --- which database: said on stderr; a missing SQLite file is refused ---------------------

READERS = [
    ["runs"],
    ["stop", "1"],
    ["export", "1"],
    ["token", "list"],
    ["token", "revoke", "1"],
    ["db", "downgrade", "base"],
]


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_commands_refuse_a_sqlite_file_that_does_not_exist(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLBOARD_DATABASE_URL", raising=False)
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert f"No database at {tmp_path / 'callboard.db'}" in result.stderr
    assert "--db" in result.stderr and "CALLBOARD_DATABASE_URL" in result.stderr
    assert not (tmp_path / "callboard.db").exists(), "the command created ./callboard.db"


def test_commands_say_which_database_they_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLBOARD_DATABASE_URL", raising=False)
    created = invoke("db", "upgrade")
    assert created.exit_code == 0, created.output
    assert created.stderr == f"database: SQLite file {tmp_path / 'callboard.db'} (new)\n"
    for args in (["runs"], ["token", "list"], ["token", "create", "ci"]):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        assert result.stderr == f"database: SQLite file {tmp_path / 'callboard.db'}\n", args
    other = tmp_path / "other.db"
    monkeypatch.setenv("CALLBOARD_DATABASE_URL", f"sqlite:///{other}")
    made = invoke("token", "create", "first")  # a container's first start makes its database
    assert made.exit_code == 0 and f"SQLite file {other} (new)" in made.stderr
