"""The run page's Commands panel in a real Chromium against a real server: buttons that
POST commands (with the session's CSRF token), the list kept live from the run's stream,
errors from the answer's detail, Cancel, and no controls for a read-only session."""

import httpx
from playwright.sync_api import expect

from .test_dashboard import assert_clean, create_run
from .test_dashboard_security import admin_client, running_run, sign_in
from .test_dashboard_security import secured as secured  # the module's own server  # noqa: F401
from .test_training import unique

WAIT_MS = 20_000


def open_run(page, root, run_id):
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")


def command_row(page, kind):
    return page.locator(f"#command-list tbody tr[data-kind='{kind}']")


def issue(root, run_id, kind, value=None, client=httpx):
    answer = client.post(
        f"{root}/api/v1/runs/{run_id}/commands", json={"kind": kind, "value": value}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_pause_button_sends_a_pause_shown_requested(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("pause-me"))
    open_run(page, root, run_id)
    expect(page.locator("#command-empty")).to_be_visible()
    expect(page.locator("#command-resume")).to_be_hidden()
    with page.expect_response(lambda r: r.url.endswith(f"/runs/{run_id}/commands")) as answer:
        page.click("#command-pause")
    assert answer.value.status == 201 and answer.value.request.method == "POST"
    row = command_row(page, "pause")
    expect(row).to_have_attribute("data-state", "requested", timeout=WAIT_MS)
    expect(row.locator(".command-state")).to_have_text("requested")
    expect(row).to_contain_text("open mode")
    expect(page.locator("#command-message")).to_contain_text("Sent")
    listed = httpx.get(f"{root}/api/v1/runs/{run_id}/commands").json()["commands"]
    assert [(c["kind"], c["state"]) for c in listed] == [("pause", "requested")]
    assert_clean(page)


def test_an_outcome_reported_through_the_api_shows_applied_without_reload(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("applied"))
    open_run(page, root, run_id)
    page.evaluate("window.notReloaded = true")
    # Issued elsewhere (the CLI, say): the page hears of it on the run's stream.
    command = issue(root, run_id, "pause")
    row = command_row(page, "pause")
    expect(row).to_have_attribute("data-state", "requested", timeout=WAIT_MS)
    outcome = httpx.post(
        f"{root}/api/v1/runs/{run_id}/commands/{command['id']}/outcome",
        json={"state": "applied", "epoch": 1, "step": 5},
    )
    assert outcome.status_code == 200, outcome.text
    expect(row).to_have_attribute("data-state", "applied", timeout=WAIT_MS)
    expect(row).to_contain_text("epoch 1 · step 5")
    expect(row.locator(".command-cancel")).to_have_count(0)
    # The applied pause paused the run: its badge says so, and Resume replaces Pause.
    expect(page.locator("#run-status")).to_have_text("paused", timeout=WAIT_MS)
    expect(page.locator("#command-resume")).to_be_visible()
    expect(page.locator("#command-pause")).to_be_hidden()
    assert page.evaluate("window.notReloaded") is True
    assert_clean(page)


def test_set_learning_rate_shows_the_422_detail_then_sends_a_good_value(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("lr"))
    open_run(page, root, run_id)
    message = page.locator("#command-message")
    page.fill("#command-lr", "-1")
    with page.expect_response(lambda r: r.url.endswith("/commands")) as answer:
        page.click("#command-lr-send")
    assert answer.value.status == 422
    expect(message).to_contain_text("finite number > 0", timeout=WAIT_MS)
    expect(message).to_have_attribute("data-state", "error")
    assert "[" not in message.text_content()  # the detail's message, not its JSON
    page.fill("#command-lr", "0.0005")
    page.click("#command-lr-send")
    row = command_row(page, "set_learning_rate")
    expect(row).to_have_attribute("data-state", "requested", timeout=WAIT_MS)
    expect(row.locator("td.num")).to_have_text("0.0005")
    expect(page.locator("#command-lr")).to_have_value("")


def test_cancel_button_cancels_an_unsettled_command(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("cancel"))
    open_run(page, root, run_id)
    page.click("#command-checkpoint")
    row = command_row(page, "checkpoint")
    expect(row).to_have_attribute("data-state", "requested", timeout=WAIT_MS)
    with page.expect_response(lambda r: r.url.endswith("/cancel")) as answer:
        row.locator(".command-cancel").click()
    assert answer.value.status == 200
    assert answer.value.request.header_value("content-type") == "application/json"
    expect(row).to_have_attribute("data-state", "cancelled", timeout=WAIT_MS)
    expect(row.locator(".command-cancel")).to_have_count(0)
    listed = httpx.get(f"{root}/api/v1/runs/{run_id}/commands").json()["commands"]
    assert [c["state"] for c in listed] == ["cancelled"]
    assert_clean(page)


def test_an_ended_run_hides_the_command_controls(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("ends"))
    open_run(page, root, run_id)
    expect(page.locator("#command-controls")).to_be_visible()
    ended = {"seq": 1, "kind": "train_end", "data": {"status": "finished"}}
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": [ended]}).raise_for_status()
    expect(page.locator("#run-status")).to_have_text("finished", timeout=WAIT_MS)
    expect(page.locator("#command-controls")).to_be_hidden()
    refused = httpx.post(f"{root}/api/v1/runs/{run_id}/commands", json={"kind": "pause"})
    assert refused.status_code == 409
    assert_clean(page)


def test_control_session_sends_commands_with_the_csrf_token(secured, page):  # noqa: F811
    server, tokens = secured
    run_id = running_run(server, tokens, unique("csrf-commands"))
    sign_in(page, server.root, tokens["control"], f"/runs/{run_id}")
    page.wait_for_url(f"{server.root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    with page.expect_response(lambda r: r.url.endswith(f"/runs/{run_id}/commands")) as answer:
        page.click("#command-pause")
    assert answer.value.status == 201
    assert answer.value.request.header_value("x-csrf-token")
    row = command_row(page, "pause")
    expect(row).to_have_attribute("data-state", "requested", timeout=WAIT_MS)
    expect(row).to_contain_text("control-token")
    # The same cookie without the header: refused, and nothing is issued.
    status = page.evaluate(
        """async (url) => (await fetch(url, {method: 'POST', body: '{"kind": "checkpoint"}',
             headers: {'Content-Type': 'application/json'}})).status""",
        f"{server.root}/api/v1/runs/{run_id}/commands",
    )
    assert status == 403
    with admin_client(server, tokens) as client:
        listed = client.get(f"/api/v1/runs/{run_id}/commands").json()["commands"]
    assert [c["kind"] for c in listed] == ["pause"]


def test_read_only_session_sees_the_commands_but_no_command_buttons(secured, page):  # noqa: F811
    server, tokens = secured
    run_id = running_run(server, tokens, unique("read-commands"))
    with admin_client(server, tokens) as client:
        issue(server.root, run_id, "checkpoint", client=client)
    sign_in(page, server.root, tokens["read"], f"/runs/{run_id}")
    page.wait_for_url(f"{server.root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    row = command_row(page, "checkpoint")
    expect(row).to_have_attribute("data-state", "requested", timeout=WAIT_MS)
    expect(page.locator("#commands-need-control")).to_be_visible()
    expect(page.locator("#command-controls")).to_have_count(0)
    expect(page.locator("#commands-panel button")).to_have_count(0)
    assert_clean(page)
