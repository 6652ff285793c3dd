"""A run's uid: re-creating a run returns it only to its own project's writers."""

import pytest

from callboard.client._api import ServerApi
from callboard.server.auth import create_token

SECRET_CONFIG = {"dataset": "project-b-private-dataset"}


@pytest.fixture
def tokens(api):
    """Bearer headers: an admin, ingest tokens scoped to `a` and to `b`, and an unscoped one."""
    app = api.app
    made = {}
    with app.state.database.writer() as session:
        for name, role, project in (
            ("admin", "admin", None),
            ("ingest-a", "ingest", "a"),
            ("ingest-b", "ingest", "b"),
            ("ingest-any", "ingest", None),
        ):
            _, secret = create_token(session, name, role, project)
            made[name] = {"Authorization": f"Bearer {secret}"}
        session.commit()
    app.state.tokens.invalidate()
    return made


@pytest.fixture
def run_b(api, tokens):
    """A run of project `b`, with a config no other project may see."""
    spec = {"uid": "run-of-project-b", "name": "b-run", "project": "b", "config": SECRET_CONFIG}
    response = api.post("/api/v1/runs", json=spec, headers=tokens["ingest-b"])
    assert response.status_code == 201, response.text
    return response.json()


def claim(api, headers, project, uid="run-of-project-b"):
    return api.post(
        "/api/v1/runs", json={"uid": uid, "name": "claim", "project": project}, headers=headers
    )


def assert_refused_without_leak(response, run):
    assert response.status_code in (403, 409), response.text
    assert set(response.json()) == {"detail"}
    for private in (SECRET_CONFIG["dataset"], run["name"], str(run["id"])):
        assert private not in response.text


def assert_unchanged(api, tokens, run):
    stored = api.get(f"/api/v1/runs/{run['id']}", headers=tokens["admin"]).json()
    assert (stored["project"], stored["name"], stored["config"]) == ("b", "b-run", SECRET_CONFIG)
    listed = api.get("/api/v1/runs", headers=tokens["admin"]).json()["runs"]
    assert [r["id"] for r in listed] == [run["id"]]


def test_other_projects_token_cannot_claim_a_runs_uid(api, tokens, run_b):
    for project in ("a", "b"):
        response = claim(api, tokens["ingest-a"], project)
        assert_refused_without_leak(response, run_b)
    assert claim(api, tokens["ingest-a"], "a").status_code == 409
    assert claim(api, tokens["ingest-a"], "b").status_code == 403
    assert_unchanged(api, tokens, run_b)


def test_unscoped_token_cannot_claim_a_uid_from_another_project(api, tokens, run_b):
    response = claim(api, tokens["ingest-any"], "a")
    assert response.status_code == 409
    assert "another project" in response.json()["detail"]
    assert_refused_without_leak(response, run_b)
    assert_unchanged(api, tokens, run_b)


def test_same_uid_in_the_same_project_returns_the_same_run(api, tokens, run_b):
    for headers in (tokens["ingest-b"], tokens["ingest-any"], tokens["admin"]):
        response = claim(api, headers, "b")
        assert response.status_code == 200, response.text
        assert response.json()["id"] == run_b["id"]
    assert_unchanged(api, tokens, run_b)


def test_client_recreating_its_run_after_a_restart_gets_the_same_run(api, tokens):
    spec = {"uid": "client-restarts-1", "name": "resumed", "project": "a", "config": {"lr": 0.1}}
    first = ServerApi("http://testserver", headers=tokens["ingest-a"], client=api).create_run(spec)
    again = ServerApi("http://testserver", headers=tokens["ingest-a"], client=api).create_run(spec)
    assert again.id == first.id and again.config == {"lr": 0.1}
