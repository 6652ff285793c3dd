"""The run page's Manage block in a real Chromium against a real server: rename, tags and the
note shown live on a second open page, a Markdown note with HTML in it rendered safely,
archive leaving the runs list (live) and restore bringing it back, delete after confirm()."""

import httpx
from playwright.sync_api import expect

from .test_dashboard import assert_clean, create_run
from .test_dashboard_security import admin_client, running_run, sign_in
from .test_dashboard_security import secured as secured  # the module's own server  # noqa: F401
from .test_training import unique

WAIT_MS = 20_000


def open_run(page, root, run_id):
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("#manage-panel[data-ready=true]")
    page.evaluate("window.notReloaded = true")


def open_manage(page):
    page.click("#manage-edit summary")


def test_rename_and_tags_on_one_page_show_live_on_another(live_server, page, dark_page):
    root = live_server.root
    run_id = create_run(root, unique("before"), project="managed", tags=["draft"])
    open_run(page, root, run_id)
    open_run(dark_page, root, run_id)
    open_manage(page)
    new_name = unique("after <b>")
    page.fill("#manage-name", new_name)
    page.click("#manage-rename")
    expect(page.locator("#manage-message")).to_have_text("Renamed.", timeout=WAIT_MS)
    expect(dark_page.locator("#run-name")).to_have_text(new_name, timeout=WAIT_MS)
    assert dark_page.title().startswith(new_name)
    page.fill("#manage-tags", "baseline, seed-1")
    page.click("#manage-save-tags")
    tags = dark_page.locator(".run-meta > .tag")
    expect(tags).to_have_text(["baseline", "seed-1"], timeout=WAIT_MS)
    run = httpx.get(f"{root}/api/v1/runs/{run_id}").json()
    assert (run["name"], run["tags"]) == (new_name, ["baseline", "seed-1"])
    timeline = dark_page.locator("#timeline li[data-kind='renamed']")
    expect(timeline).to_contain_text(f"→ {new_name} by ", timeout=WAIT_MS)  # who did what, live
    tagged = dark_page.locator("#timeline li[data-kind='tagged']")
    expect(tagged).to_contain_text("+baseline", timeout=WAIT_MS)
    assert dark_page.evaluate("window.notReloaded") is True
    assert_clean(page)
    assert_clean(dark_page)


def test_a_note_with_html_and_markdown_renders_safely(live_server, page, dark_page):
    root = live_server.root
    run_id = create_run(root, unique("noted"), project="managed")
    open_run(page, root, run_id)
    open_run(dark_page, root, run_id)
    open_manage(page)
    note = (
        "# Findings\n\n**lr 3e-4** wins. <script>window.pwned = 1</script>\n\n"
        '<img src="x" onerror="window.pwned = 2"> [click](javascript:window.pwned=3)'
    )
    page.fill("#manage-note", note)
    page.click("#manage-save-note")
    for viewer in (page, dark_page):  # the editor's page, and another one live
        view = viewer.locator("#manage-note-view")
        expect(view.locator("h1")).to_have_text("Findings", timeout=WAIT_MS)
        expect(view.locator("strong")).to_have_text("lr 3e-4")
        expect(view).to_contain_text("<script>window.pwned = 1</script>")
        assert view.locator("script, img, a[href^='javascript']").count() == 0
        assert viewer.evaluate("window.pwned") is None
        expect(viewer.locator("#manage-note-empty")).to_be_hidden()
    page.reload()
    expect(page.locator("#manage-note-view h1")).to_have_text("Findings")
    assert page.evaluate("window.pwned") is None
    assert_clean(page)
    assert_clean(dark_page)


def test_archive_leaves_the_runs_list_live_and_restore_brings_it_back(live_server, page, dark_page):
    root = live_server.root
    project = unique("shelf")
    name = unique("shelved")
    run_id = create_run(root, name, project=project)
    dark_page.goto(f"{root}/?project={project}")
    row = dark_page.locator(f"tr.run-row[data-run-id='{run_id}']")
    expect(row).to_be_visible(timeout=WAIT_MS)
    open_run(page, root, run_id)
    open_manage(page)
    page.click("#manage-archive")
    expect(page.locator("#manage-archived")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#manage-archive")).to_have_text("Restore")
    expect(row).to_have_count(0, timeout=WAIT_MS)  # gone from the list, without reload
    dark_page.check("#filter-archived")
    expect(row).to_be_visible(timeout=WAIT_MS)
    assert "archived=true" in dark_page.url
    dark_page.uncheck("#filter-archived")
    expect(row).to_have_count(0, timeout=WAIT_MS)
    page.click("#manage-archive")
    expect(page.locator("#manage-archived")).to_be_hidden(timeout=WAIT_MS)
    expect(row).to_be_visible(timeout=WAIT_MS)  # back in the list, live
    assert httpx.get(f"{root}/api/v1/runs/{run_id}").json()["archived"] is False
    assert_clean(page)
    assert_clean(dark_page)


def test_delete_asks_first_then_the_run_and_its_data_go(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("doomed"), project="managed")
    events = [{"seq": 1, "kind": "epoch_end", "epoch": 0, "metrics": {"loss": 1.0}}]
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": events}).raise_for_status()
    open_run(page, root, run_id)
    open_manage(page)
    asked = []

    def dismiss(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("#manage-delete")
    page.wait_for_function("document.querySelector('#manage-delete') !== null")
    assert len(asked) == 1 and "for good" in asked[0]
    assert httpx.get(f"{root}/api/v1/runs/{run_id}").status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#manage-delete")
    page.wait_for_selector("body[data-page=runs]")
    assert httpx.get(f"{root}/api/v1/runs/{run_id}").status_code == 404
    assert httpx.get(f"{root}/api/v1/runs/{run_id}/events").status_code == 404


def test_a_run_page_holds_one_stream_and_hears_of_its_run_deleted_elsewhere(live_server, page):
    # The Manage block opened a second stream of the run: with the alerts' long-poll, each run
    # page held three of the browser's six connections to the server, so a third open run
    # page left a fourth one waiting.
    root = live_server.root
    run_id = create_run(root, unique("watched"), project="managed")
    streams = []
    page.on("request", lambda request: "/stream" in request.url and streams.append(request.url))
    open_run(page, root, run_id)
    page.wait_for_selector("#live-status[data-state=live]")
    assert len(streams) == 1, streams
    httpx.delete(f"{root}/api/v1/runs/{run_id}").raise_for_status()
    expect(page.locator("#manage-message")).to_have_text("This run was deleted.", timeout=WAIT_MS)
    assert page.locator("#manage-panel").get_attribute("data-deleted") == "true"
    assert all("404" in error for error in page.problems.errors)  # asking for the gone run


def test_a_control_session_edits_with_its_csrf_token_a_read_session_cannot(secured, page):  # noqa: F811
    server, tokens = secured
    run_id = running_run(server, tokens, unique("signed-in"))
    sign_in(page, server.root, tokens["control"], f"/runs/{run_id}")
    page.wait_for_selector("#manage-panel[data-ready=true]")
    open_manage(page)
    page.fill("#manage-name", "renamed by control")
    with page.expect_response(lambda r: r.url.endswith(f"/api/v1/runs/{run_id}")) as answer:
        page.click("#manage-rename")
    assert answer.value.status == 200 and answer.value.request.header_value("x-csrf-token")
    expect(page.locator("#manage-delete")).to_have_count(0)  # deleting needs an admin token
    with admin_client(server, tokens) as client:
        run = client.get(f"/api/v1/runs/{run_id}")
        assert run.json()["name"] == "renamed by control"
        assert client.patch(f"/api/v1/runs/{run_id}", json={"note": "*kept*"}).status_code == 200
    reader = page.context.browser.new_context()
    read_page = reader.new_page()
    try:
        sign_in(read_page, server.root, tokens["read"], f"/runs/{run_id}")
        read_page.wait_for_selector("#manage-panel[data-ready=true]")
        expect(read_page.locator("#manage-note-view em")).to_have_text("kept")
        expect(read_page.locator("#manage-needs-control")).to_be_visible()
        assert read_page.locator("#manage-edit, #manage-delete, #manage-archive").count() == 0
    finally:
        reader.close()
