"""Many runs: the runs list's plans on SQLite, deletions told to the runs stream, name sort
ties, and the compare page with more than a dozen runs."""

import contextlib
import re
import time

import pytest
from sqlalchemy import event

from callboard.server.api.routes.stream import RunsMessages
from callboard.server.web.pages import MAX_COMPARED, RECENT_CANDIDATES

from .helpers import create_run

SORT_INDEXES = {
    "newest": "ix_runs_created",
    "oldest": "ix_runs_created",
    "updated": "ix_runs_updated",
    "name": "ix_runs_name",
}


@contextlib.contextmanager
def sqlite_plans(api):
    """`{statement: [plan details]}` of the SELECTs the app sends SQLite meanwhile."""
    engine = api.app.state.database.engine
    statements, plans = [], {}

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield plans
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with engine.raw_connection() as raw:
        for statement, parameters in statements:
            rows = raw.cursor().execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plans[statement] = [row[3] for row in rows]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("sort", SORT_INDEXES)
def test_sqlite_reads_each_sorts_page_off_its_index_without_sorting(api, sort):
    for index in range(3):
        create_run(api, f"run-{index}")
    with sqlite_plans(api) as plans:
        answer = api.get("/api/v1/runs", params={"sort": sort, "limit": 2}).json()
    assert answer["total"] == 3 and len(answer["runs"]) == 2
    [page] = [plan for statement, plan in plans.items() if "LIMIT" in statement]
    assert f"SCAN runs USING INDEX {SORT_INDEXES[sort]}" in page, page
    assert not [step for step in page if "TEMP B-TREE" in step], page
    [total] = [plan for statement, plan in plans.items() if "count(" in statement]
    assert any("COVERING INDEX ix_runs_archived" in step for step in total), total


def test_name_sort_keeps_runs_of_one_name_in_creation_order(api):
    first, second = create_run(api, "same"), create_run(api, "same")
    other = create_run(api, "other")
    runs = api.get("/api/v1/runs", params={"sort": "name"}).json()["runs"]
    assert [run["id"] for run in runs] == [other, first, second]
    archived = create_run(api, "archived")
    assert api.patch(f"/api/v1/runs/{archived}", json={"archived": True}).status_code == 200
    listed = api.get("/api/v1/runs", params={"archived": "true", "sort": "name"}).json()
    assert [run["id"] for run in listed["runs"]] == [archived] and listed["total"] == 1


def quiet_stream(api, project=None):
    """The runs stream's batches from now on, caught up (its first batch read)."""
    messages = RunsMessages(api.app.state.database, time.time() + 1, project)
    assert messages() == ("", 0)
    return messages


def test_runs_stream_says_removed_once_runs_were_deleted(api):
    kept, doomed = create_run(api, "kept", "a"), create_run(api, "doomed", "a")
    other = create_run(api, "other", "b")
    everything, project_a = quiet_stream(api), quiet_stream(api, "a")
    assert everything() == ("", 0)  # nothing deleted: nothing said
    assert api.delete(f"/api/v1/runs/{doomed}").status_code == 200
    text, count = everything()
    assert count == 0 and text == 'event: removed\ndata: {"runs":2}\n\n'
    assert project_a()[0] == 'event: removed\ndata: {"runs":1}\n\n'
    assert everything() == ("", 0)  # said once
    assert api.get(f"/api/v1/runs/{kept}").status_code == 200
    b_only = quiet_stream(api, "b")
    assert api.delete(f"/api/v1/runs/{kept}").status_code == 200
    assert b_only() == ("", 0)  # a deletion in another project is not this stream's
    assert api.get(f"/api/v1/runs/{other}").status_code == 200


def compared_rows(html):
    return re.findall(r'<tr data-run-id="(\d+)">', html)


def test_compare_page_shows_up_to_fifty_runs(api):
    ids = [create_run(api, f"sweep-{index}", "sweep") for index in range(MAX_COMPARED + 5)]
    asked = ",".join(map(str, ids))
    page = api.get("/compare", params={"ids": asked})
    assert page.status_code == 200
    assert compared_rows(page.text) == [str(run_id) for run_id in ids[:MAX_COMPARED]]
    assert MAX_COMPARED >= 50


def test_compare_picker_offers_the_newest_runs_a_project_token_sees(api):
    mine = [create_run(api, f"mine-{index}", "mine") for index in range(3)]
    for index in range(RECENT_CANDIDATES + 2):  # newer, and another project's
        create_run(api, f"theirs-{index}", "theirs")
    offered = re.findall(r'name="ids" value="(\d+)"', api.get("/compare").text)
    assert len(offered) == RECENT_CANDIDATES and not set(offered) & set(map(str, mine))
    root = api.post("/api/v1/tokens", json={"name": "root", "role": "admin"}).json()["token"]
    reader = api.post(
        "/api/v1/tokens",
        json={"name": "mine-reader", "role": "read", "project": "mine"},
        headers={"Authorization": f"Bearer {root}"},
    ).json()["token"]
    page = api.get("/compare", headers={"Authorization": f"Bearer {reader}"})
    assert page.status_code == 200, page.text
    offered = re.findall(r'name="ids" value="(\d+)"', page.text)
    assert offered == [str(run_id) for run_id in reversed(mine)]  # newest first
