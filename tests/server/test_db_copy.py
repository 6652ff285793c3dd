"""`callboard db copy`: a SQLite install moves to PostgreSQL and the API answers the same."""

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from callboard.server.auth import create_token
from callboard.server.cli.main import app as cli
from callboard.server.main import create_app
from callboard.server.settings import Settings
from callboard.server.store.db import Database

from .fresh_postgres import fresh_postgres_database
from .helpers import create_run, epoch_event, post_events


@pytest.fixture
def target_url():
    with fresh_postgres_database("callboard_copy") as url:
        yield url


def server(url, token=None):
    client = TestClient(create_app(Settings(database_url=url)))
    if token:
        client.headers["Authorization"] = f"Bearer {token}"
    return client


def fill(url):
    """Three runs in two projects: NaN and infinities, batch steps, a stop, a finished run."""
    with server(url) as api:
        first = create_run(api, "first", "vision", config={"lr": 0.1}, tags=["a", "b"])
        post_events(
            api,
            first,
            {"seq": 1, "kind": "train_begin", "data": {"epochs": 5}},
            *(epoch_event(s, s - 2, loss=1.0 / s, acc=s / 10) for s in range(2, 6)),
            epoch_event(6, 4, loss="NaN", acc="Infinity"),
            {"seq": 7, "kind": "train_end", "data": {"status": "finished"}},
        )
        second = create_run(api, "second", "vision")
        post_events(
            api,
            second,
            *(
                {"seq": s, "kind": "batch_end", "step": s * 10, "metrics": {"loss": 2.0 - s / 100}}
                for s in range(1, 301)
            ),
            epoch_event(301, 0, loss="-Infinity", val_loss=0.5),
        )
        assert api.post(f"/api/v1/runs/{second}/stop", json={"reason": "plateau"}).is_success
        assert api.post(f"/api/v1/runs/{second}/control/ack").is_success
        third = create_run(api, "third", "audio")
        post_events(api, third, epoch_event(1, 0, loss=0.25))
        return [first, second, third]


def snapshot(api, run_ids):
    """Everything the REST API says about the runs."""
    answer = {
        "runs": api.get("/api/v1/runs").json(),
        "vision": api.get("/api/v1/runs", params={"project": "vision"}).json(),
    }
    for run_id in run_ids:
        run = api.get(f"/api/v1/runs/{run_id}").json()
        answer[run_id] = {
            "run": run,
            "control": api.get(f"/api/v1/runs/{run_id}/control").json(),
            "events": api.get(f"/api/v1/runs/{run_id}/events").json(),
            "series": {
                key: [
                    api.get(f"/api/v1/runs/{run_id}/metrics/{key}").json(),
                    api.get(f"/api/v1/runs/{run_id}/metrics/{key}?max_points=20").json(),
                ]
                for key in run["metrics"]
            },
        }
    return answer


def add_token(url):
    database = Database(url)
    try:
        with database.writer() as session:
            _, secret = create_token(session, "laptop", "admin")
            session.commit()
    finally:
        database.dispose()
    return secret


def test_copy_sqlite_to_postgresql_keeps_every_answer_and_then_takes_new_runs(tmp_path, target_url):
    source_url = f"sqlite:///{tmp_path / 'laptop.db'}"
    run_ids = fill(source_url)
    token = add_token(source_url)
    with server(source_url, token) as api:
        before = snapshot(api, run_ids)
    assert before[run_ids[0]]["series"]["loss"][0]["points"][-1]["value"] == "NaN"
    assert before[run_ids[1]]["control"]["state"] == "acknowledged"

    result = CliRunner().invoke(cli, ["db", "copy", "--from", source_url, "--to", target_url])
    assert result.exit_code == 0, result.output
    assert "3 runs" in result.output and "row counts verified" in result.output

    # The token came along, and the API answers exactly as before.
    with server(target_url, token) as api:
        assert snapshot(api, run_ids) == before
        # Sequences continue after the copied ids.
        new_run = create_run(api, "after-the-move", "vision")
        assert new_run == max(run_ids) + 1
        post_events(api, new_run, epoch_event(1, 0, loss=0.5))
        events = api.get(f"/api/v1/runs/{new_run}/events").json()["events"]
        copied_ids = [e["id"] for r in run_ids for e in before[r]["events"]["events"]]
        assert events[0]["id"] > max(copied_ids)

    # A second copy into the now non-empty target is refused, and changes nothing.
    again = CliRunner().invoke(cli, ["db", "copy", "--from", source_url, "--to", target_url])
    assert again.exit_code == 1
    assert "not empty" in again.output
    with server(target_url, token) as api:
        assert api.get("/api/v1/runs").json()["total"] == len(run_ids) + 1


def test_copy_back_from_postgresql_to_sqlite(tmp_path, target_url):
    source_url = f"sqlite:///{tmp_path / 'first.db'}"
    run_ids = fill(source_url)
    CliRunner().invoke(cli, ["db", "copy", "--from", source_url, "--to", target_url])
    back_url = f"sqlite:///{tmp_path / 'back.db'}"
    result = CliRunner().invoke(cli, ["db", "copy", "--from", target_url, "--to", back_url])
    assert result.exit_code == 0, result.output
    with server(source_url) as original, server(back_url) as back:
        assert snapshot(back, run_ids) == snapshot(original, run_ids)


def test_copy_into_itself_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'same.db'}"
    fill(url)
    result = CliRunner().invoke(cli, ["db", "copy", "--from", url, "--to", url])
    assert result.exit_code == 1
    assert "same database" in result.output


def test_copy_from_a_missing_sqlite_file_is_refused(tmp_path):
    # It used to create the file, copy its nothing and report success.
    missing, target = tmp_path / "missing.db", tmp_path / "target.db"
    result = CliRunner().invoke(
        cli, ["db", "copy", "--from", f"sqlite:///{missing}", "--to", f"sqlite:///{target}"]
    )
    assert result.exit_code == 1, result.output
    assert f"Nothing copied: there is no SQLite database at {missing}" in result.output
    assert not missing.exists() and not target.exists()
