"""The runs page with a few hundred runs in a real Chromium against a real server: pages of
100 in the server's order, filters, and a run deleted elsewhere leaving the list live."""

import httpx
import pytest
from playwright.sync_api import expect

from .test_dashboard import assert_clean, create_run
from .test_training import unique

RUNS = 250
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def many(live_server):
    """`RUNS` runs in a project of their own (every tenth tagged `tenth`): (project, names)
    in creation order."""
    project = unique("many")
    names = [f"many-{index:03d}" for index in range(RUNS)]
    with httpx.Client(base_url=live_server.root, timeout=30) as client:
        for index, name in enumerate(names):
            tags = ["tenth"] if index % 10 == 0 else []
            client.post("/api/v1/runs", json={"name": name, "project": project, "tags": tags})
    return project, names


def open_runs(page, root, query):
    page.goto(f"{root}/?{query}")
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate("window.notReloaded = true")


def shown_names(page):
    return page.locator("#runs-body .run-name").all_text_contents()


def test_more_shows_the_next_hundred_in_order_until_every_run(live_server, page, many):
    project, names = many
    newest_first = names[::-1]
    open_runs(page, live_server.root, f"project={project}")
    count = page.locator("#runs-count")
    expect(count).to_have_text(f"{RUNS} runs, showing 100")
    assert shown_names(page) == newest_first[:100]
    more = page.locator("#more-runs")
    more.click()
    expect(count).to_have_text(f"{RUNS} runs, showing 200", timeout=WAIT_MS)
    assert shown_names(page) == newest_first[:200]
    more.click()
    expect(count).to_have_text(f"{RUNS} runs", timeout=WAIT_MS)
    assert shown_names(page) == newest_first
    expect(more).to_be_hidden()
    assert page.evaluate("window.notReloaded") is True
    assert_clean(page)


def test_filters_and_sort_show_the_servers_answer(live_server, page, many):
    project, names = many
    open_runs(page, live_server.root, f"project={project}")
    count = page.locator("#runs-count")
    page.fill("#filter-q", "many-12")
    matching = [name for name in names if "many-12" in name][::-1]  # many-012, many-120…129
    expect(count).to_have_text(f"{len(matching)} runs", timeout=WAIT_MS)
    assert shown_names(page) == matching
    page.fill("#filter-q", "")
    page.fill("#filter-tag", "tenth")
    expect(count).to_have_text(f"{RUNS // 10} runs", timeout=WAIT_MS)
    assert shown_names(page) == names[::10][::-1]
    page.select_option("#filter-sort", "name")
    expect(page.locator("#runs-body .run-name").first).to_have_text(names[0], timeout=WAIT_MS)
    assert shown_names(page) == names[::10]
    assert "sort=name" in page.url and "tag=tenth" in page.url
    assert_clean(page)


def test_a_run_deleted_elsewhere_leaves_every_open_list(live_server, page, dark_page):
    root = live_server.root
    project = unique("deleting")
    ids = [create_run(root, f"doomed-{index}", project=project) for index in range(5)]
    open_runs(page, root, f"project={project}")
    open_runs(dark_page, root, "")  # every project: the run is on its first page too
    doomed = page.locator(f"#runs-body tr[data-run-id='{ids[2]}']")
    expect(doomed).to_have_count(1)
    expect(dark_page.locator(f"#runs-body tr[data-run-id='{ids[2]}']")).to_have_count(1)
    httpx.delete(f"{root}/api/v1/runs/{ids[2]}").raise_for_status()
    expect(doomed).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#runs-count")).to_have_text("4 runs")
    expect(dark_page.locator(f"#runs-body tr[data-run-id='{ids[2]}']")).to_have_count(
        0, timeout=WAIT_MS
    )
    assert shown_names(page) == [f"doomed-{index}" for index in (4, 3, 1, 0)]
    assert page.evaluate("window.notReloaded") is True
    assert dark_page.evaluate("window.notReloaded") is True
    assert_clean(page)
    assert_clean(dark_page)
