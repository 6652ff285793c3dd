"""A project-scoped admin manages its own project's tokens and nothing else (SQLite, PostgreSQL)."""

import pytest


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def make(api, headers, **spec):
    response = api.post("/api/v1/tokens", json=spec, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def admins(api):
    """An unscoped admin (made in open mode) and an admin scoped to project `team-a`."""
    root = api.post("/api/v1/tokens", json={"name": "root", "role": "admin"}).json()
    scoped = make(api, bearer(root["token"]), name="a-admin", role="admin", project="team-a")
    return bearer(root["token"]), bearer(scoped["token"]), root, scoped


def test_scoped_admin_creates_tokens_only_for_its_project(api, admins):
    _root, scoped, _, _ = admins
    default = make(api, scoped, name="a-reader", role="read")
    assert default["project"] == "team-a"
    promoted = make(api, scoped, name="a-admin-2", role="admin")
    assert promoted["project"] == "team-a"
    assert (
        make(api, scoped, name="a-ingest", role="ingest", project="team-a")["project"] == "team-a"
    )
    for project, named in (("team-b", "'team-b'"), (None, "unscoped")):
        refused = api.post(
            "/api/v1/tokens",
            json={"name": "escalate", "role": "admin", "project": project},
            headers=scoped,
        )
        assert refused.status_code == 403, (project, refused.text)
        detail = refused.json()["detail"]
        assert "limited to project 'team-a'" in detail and named in detail
    # The promoted admin is just as confined as the one that made it.
    assert api.get("/api/v1/tokens", headers=bearer(promoted["token"])).status_code == 200
    escalate = {"name": "x", "role": "admin", "project": None}
    refused = api.post("/api/v1/tokens", json=escalate, headers=bearer(promoted["token"]))
    assert refused.status_code == 403


def test_scoped_admin_lists_and_revokes_only_its_projects_tokens(api, admins):
    root, scoped, root_row, scoped_row = admins
    b_reader = make(api, root, name="b-reader", role="read", project="team-b")
    a_reader = make(api, root, name="a-reader", role="read", project="team-a")
    listed = api.get("/api/v1/tokens", headers=scoped).json()["tokens"]
    assert {t["name"] for t in listed} == {"a-admin", "a-reader"}
    everything = api.get("/api/v1/tokens", headers=root).json()["tokens"]
    assert {t["name"] for t in everything} == {"root", "a-admin", "b-reader", "a-reader"}
    for other in (root_row, b_reader):
        refused = api.delete(f"/api/v1/tokens/{other['id']}", headers=scoped)
        assert refused.status_code == 404, refused.text
        assert refused.json() == {"detail": f"token {other['id']} not found"}
    assert all(
        t["revoked_at"] is None for t in api.get("/api/v1/tokens", headers=root).json()["tokens"]
    )
    revoked = api.delete(f"/api/v1/tokens/{a_reader['id']}", headers=scoped)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    # An unscoped admin keeps full power over every token.
    assert api.delete(f"/api/v1/tokens/{b_reader['id']}", headers=root).status_code == 200
    assert api.delete(f"/api/v1/tokens/{scoped_row['id']}", headers=root).status_code == 200
