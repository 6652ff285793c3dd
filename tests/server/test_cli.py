import csv
import io

from typer.testing import CliRunner

from callboard.server import migrate
from callboard.server.cli import app

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
    rows = list(csv.reader(io.StringIO(exported.output)))
    assert rows == [["epoch", "acc", "loss"], ["0", "nan", "0.5"], ["1", "0.9", "0.25"]]

    missing = invoke("stop", "no-such-run", "--db", url)
    assert missing.exit_code == 1 and "No run" in missing.output


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
