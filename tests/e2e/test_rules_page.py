"""The rules page, the notifications list and the run page's alerts in a real Chromium against
a real server: a rule added through the form, a 422 shown by its field, alerts of a real NaN
arriving without reload, the "Watch this run" shortcut, Remove and the delivery log."""

import time

import httpx
import pytest
from playwright.sync_api import expect

from .test_dashboard import assert_clean, create_run
from .test_dashboard_security import admin_client, running_run, sign_in
from .test_dashboard_security import secured as secured  # the module's own server  # noqa: F401
from .test_training import unique

WAIT_MS = 20_000
CLOSED_PORT_HOOK = "http://127.0.0.1:9/hooks/nobody-listens"


def open_rules(page, root, query=""):
    page.goto(f"{root}/rules{query}")
    page.wait_for_selector("#rules-panel[data-ready=true]")


def expect_added(page):
    """The rules page shown again after an add, saying so once (the URL forgets `added=`)."""
    expect(page.locator("#rules-message")).to_have_text(
        "Rule added: it watches the runs from now on.", timeout=WAIT_MS
    )
    assert "added=" not in page.url


def assert_clean_but_refused(page, status):
    """`assert_clean`, but for the console line the browser logs of each refused request."""
    errors = [error for error in page.problems.errors if f"status of {status}" not in error]
    assert errors == [], errors
    assert page.problems.external == [], page.problems.external


def rule_row(page, name):
    return page.locator("tr.rule-row", has=page.locator(".rule-name", has_text=name))


def add_rule(root, rule, client=httpx):
    answer = client.post(f"{root}/api/v1/rules", json=rule)
    assert answer.status_code == 201, answer.text
    return answer.json()


def listed_rules(root, client=httpx):
    return client.get(f"{root}/api/v1/rules").json()["rules"]


def post_nan_epoch(root, run_id, metric="loss"):
    """An epoch whose `metric` is NaN, as a training would send it."""
    event = {"seq": 1, "kind": "epoch_end", "epoch": 0, "metrics": {metric: "NaN"}}
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": [event]}).raise_for_status()


def nan_rule(project, name, actions=None):
    return {
        "name": name,
        "project": project,
        "condition": {"kind": "nan", "metric": "loss"},
        "actions": actions or [{"kind": "command", "command": "checkpoint"}],
    }


def test_a_rule_added_through_the_form_is_listed_in_words(live_server, page):
    root = live_server.root
    name, project = unique("loss too high"), unique("form")
    open_rules(page, root)
    page.fill("#rule-name", name)
    page.fill("#rule-project", project)
    page.select_option("#rule-kind", "above")
    expect(page.locator("#rule-value")).to_be_visible()
    expect(page.locator("#rule-patience")).to_be_hidden()
    page.fill("#rule-metric", "val_loss")
    page.fill("#rule-value", "2.5")
    first = page.locator("#rule-action-list li").nth(0)
    first.locator("input[name=url]").fill(
        "https://hooks.example.org/services/T000/B000/secret-path"
    )
    first.locator("input[name=secret]").fill("s3cret")
    page.click("#add-command")
    second = page.locator("#rule-action-list li").nth(1)
    expect(second.locator("input[name=factor]")).to_be_hidden()
    second.locator("select[name=command]").select_option("set_learning_rate")
    second.locator("input[name=factor]").fill("0.5")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/rules")) as answer:
        page.click("#rule-submit")
    assert answer.value.status == 201
    expect_added(page)
    row = rule_row(page, name)
    expect(row).to_be_visible()
    expect(row.locator(".rule-scope")).to_have_text(project)
    expect(row.locator(".rule-condition")).to_have_text("val_loss above 2.5")
    expect(row.locator(".rule-actions")).to_contain_text(
        "webhook https://hooks.example.org/… (signed)"
    )
    expect(row.locator(".rule-actions")).to_contain_text("command set_learning_rate ×0.5")
    expect(row.locator(".rule-firings")).to_have_text("0")
    assert "secret-path" not in page.content() and "s3cret" not in page.content()
    (stored,) = [rule for rule in listed_rules(root) if rule["name"] == name]
    assert stored["condition"] == {"kind": "above", "metric": "val_loss", "value": 2.5}
    assert [action["kind"] for action in stored["actions"]] == ["webhook", "command"]
    assert stored["actions"][1]["factor"] == 0.5
    assert_clean(page)


def test_a_bad_form_shows_the_field_the_422_names_and_adds_nothing(live_server, page):
    root = live_server.root
    name = unique("bad hook")
    open_rules(page, root)
    page.fill("#rule-name", name)
    page.fill("#rule-metric", "loss")
    url = page.locator("#rule-action-list li input[name=url]")
    url.fill("ftp://x")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/rules")) as answer:
        page.click("#rule-submit")
    assert answer.value.status == 422
    errors = page.locator("#rule-errors")
    expect(errors).to_be_visible()
    expect(errors).to_contain_text("Webhook URL (action 1):")
    expect(errors).to_contain_text("URL scheme should be 'http' or 'https'")
    expect(url).to_have_attribute("aria-invalid", "true")
    assert "[" not in errors.text_content()  # the detail's messages, not its JSON
    # A condition missing its value: the Value field is the one named.
    page.select_option("#rule-kind", "below")
    url.fill("https://hooks.example.org/x")
    page.click("#rule-submit")
    expect(errors).to_contain_text("Value: Field required", timeout=WAIT_MS)
    expect(page.locator("#rule-value")).to_have_attribute("aria-invalid", "true")
    expect(url).not_to_have_attribute("aria-invalid", "true")
    assert page.url.endswith("/rules")  # still the form, not a reload
    assert [rule for rule in listed_rules(root) if rule["name"] == name] == []
    assert_clean_but_refused(page, 422)


@pytest.mark.parametrize("path", ["/", "/rules"])
def test_notifications_list_shows_an_alert_raised_after_load(live_server, page, path):
    root = live_server.root
    project, rule_name = unique("alerting"), unique("nan loss")
    add_rule(root, nan_rule(project, rule_name))
    page.goto(root + path)
    page.wait_for_selector("#notifications-list[data-loaded=true]", state="attached")
    page.evaluate("window.notReloaded = true")
    run_id = create_run(root, unique("goes-nan"), project=project)
    post_nan_epoch(root, run_id)
    alert = page.locator(f"#notifications-list li.alert[data-run-id='{run_id}']")
    expect(alert).to_be_visible(timeout=WAIT_MS)
    expect(alert.locator(".alert-rule")).to_have_text(rule_name)
    expect(alert).to_contain_text("checkpoint")  # what the rule did
    # A link within this dashboard: an alert's `run.url` holds the Host its rule was added by.
    assert alert.locator("a.alert-run").get_attribute("href") == f"/runs/{run_id}"
    # Newest on top: the alert is the list's first item.
    first = page.locator("#notifications-list li.alert").first
    assert first.get_attribute("data-run-id") == str(run_id)
    assert page.evaluate("window.notReloaded") is True
    assert_clean(page)


def test_run_page_lists_its_own_alerts_live(live_server, page):
    root = live_server.root
    project = unique("run-alerts")
    rule_name = unique("nan here")
    add_rule(root, nan_rule(project, rule_name))
    other = create_run(root, unique("other"), project=project)
    post_nan_epoch(root, other)
    run_id = create_run(root, unique("watched"), project=project)
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    expect(page.locator("#run-alerts-empty")).to_be_visible()
    expect(page.locator("#notifications")).to_have_count(0)  # the run page lists its own
    post_nan_epoch(root, run_id)
    alert = page.locator("#run-alerts-list li.alert")
    expect(alert).to_have_count(1, timeout=WAIT_MS)
    expect(alert).to_have_attribute("data-run-id", str(run_id))
    expect(alert.locator(".alert-rule")).to_have_text(rule_name)
    expect(page.locator("#run-alerts-empty")).to_be_hidden()
    fired = page.locator('#timeline li[data-kind="rule_fired"]')  # the run's events, in words
    expect(fired).to_contain_text(f"{rule_name}: loss is NaN at epoch 0 → command checkpoint")
    assert_clean(page)


def test_watch_this_run_fills_in_project_and_metric_then_adds_in_one_click(live_server, page):
    root = live_server.root
    project = unique("watched")
    run_id = create_run(root, unique("watch-me"), project=project)
    epoch = {"seq": 1, "kind": "epoch_end", "epoch": 0, "metrics": {"loss": 1.0, "val_loss": 1.5}}
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": [epoch]}).raise_for_status()
    main = httpx.get(f"{root}/api/v1/runs/{run_id}").json()["main_metric"]
    assert main == "val_loss"
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    page.click("#watch-run")
    page.wait_for_selector("#rules-panel[data-ready=true]")
    expect(page.locator("#rule-project")).to_have_value(project)
    expect(page.locator("#rule-metric")).to_have_value(main)
    expect(page.locator("#rule-kind")).to_have_value("nan")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/rules")) as answer:
        page.click("#rule-submit")
    assert answer.value.status == 201
    expect_added(page)
    (rule,) = [rule for rule in listed_rules(root) if rule["project"] == project]
    assert rule["condition"] == {"kind": "nan", "metric": main}
    assert rule["actions"] == [
        {"kind": "command", "command": "stop", "value": None, "factor": None}
    ]
    expect(rule_row(page, rule["name"]).locator(".rule-scope")).to_have_text(project)
    assert_clean(page)


def wait_for_failed_attempt(root, rule_id, timeout=30):
    """The rule's first delivery once an attempt at it failed (its error recorded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"{root}/api/v1/rules/{rule_id}/deliveries").json()["deliveries"]
        if answer and answer[0]["last_error"]:
            return answer[0]
        time.sleep(0.1)
    raise AssertionError(f"rule {rule_id}'s webhook was not tried within {timeout}s")


def test_admin_reads_the_delivery_log_then_removes_the_rule(live_server, page):
    root = live_server.root
    project, rule_name = unique("deliveries"), unique("hook to nowhere")
    hook = {"kind": "webhook", "url": CLOSED_PORT_HOOK}
    rule = add_rule(root, nan_rule(project, rule_name, actions=[hook]))
    post_nan_epoch(root, create_run(root, unique("nan"), project=project))
    delivery = wait_for_failed_attempt(root, rule["id"])
    open_rules(page, root)
    row = rule_row(page, rule_name)
    expect(row.locator(".rule-firings")).to_have_text("1")
    row.locator(".rule-deliveries").click()
    log = page.locator(f"#deliveries-{rule['id']} tbody tr")
    expect(log).to_have_count(1)
    expect(log).to_have_attribute("data-state", delivery["state"])
    expect(log).to_contain_text("http://127.0.0.1:9/…")
    expect(log).to_contain_text(delivery["last_error"][:20])
    expect(row.locator(".rule-deliveries")).to_have_attribute("aria-expanded", "true")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_response(lambda r: r.request.method == "DELETE") as answer:
        row.locator(".rule-remove").click()
    assert answer.value.status == 200
    expect(row).to_have_count(0)
    expect(page.locator(f"#deliveries-{rule['id']}")).to_have_count(0)
    expect(page.locator("#rules-message")).to_contain_text("Removed")
    assert [r for r in listed_rules(root) if r["id"] == rule["id"]] == []
    assert_clean(page)


def test_read_only_session_sees_rules_without_form_remove_or_deliveries(secured, page):  # noqa: F811
    server, tokens = secured
    rule_name = unique("seen by readers")
    with admin_client(server, tokens) as client:
        add_rule("", nan_rule("secure", rule_name), client=client)
    running_run(server, tokens, unique("read-rules"))
    sign_in(page, server.root, tokens["read"], "/rules")
    page.wait_for_url(f"{server.root}/rules")
    page.wait_for_selector("#rules-panel[data-ready=true]")
    expect(rule_row(page, rule_name)).to_be_visible()
    expect(page.locator("#rules-need-control")).to_be_visible()
    expect(page.locator("#rule-form")).to_have_count(0)
    expect(page.locator("#rules-panel button")).to_have_count(0)
    page.wait_for_selector("#notifications-list[data-loaded=true]", state="attached")
    assert_clean(page)


def test_control_session_adds_a_project_rule_with_the_csrf_token(secured, page):  # noqa: F811
    server, tokens = secured
    rule_name = unique("control adds")
    sign_in(page, server.root, tokens["control"], "/rules?project=secure&metric=loss")
    page.wait_for_url(f"{server.root}/rules?project=secure&metric=loss")
    page.wait_for_selector("#rules-panel[data-ready=true]")
    page.fill("#rule-name", rule_name)
    # Every project's rules are an admin's: the server's 403 is said next to the form.
    page.fill("#rule-project", "")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/rules")) as refused:
        page.click("#rule-submit")
    assert refused.value.status == 403
    expect(page.locator("#rule-errors")).to_have_text(
        "Could not add the rule: only an admin token manages rules of every project"
    )
    page.fill("#rule-project", "secure")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/rules")) as answer:
        page.click("#rule-submit")
    assert answer.value.status == 201
    assert answer.value.request.header_value("x-csrf-token")
    expect_added(page)
    row = rule_row(page, rule_name)
    expect(row.locator(".rule-scope")).to_have_text("secure")
    expect(row.locator(".rule-remove")).to_have_count(1)
    expect(row.locator(".rule-deliveries")).to_have_count(0)  # the log is for admins
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator(".rule-remove").click()
    expect(row).to_have_count(0)
    with admin_client(server, tokens) as client:
        assert [r for r in listed_rules("", client) if r["name"] == rule_name] == []
    assert_clean_but_refused(page, 403)


def test_notifications_back_off_on_errors_and_stop_when_signed_out(live_server, page):
    """A 503 is tried again after 1 s, then 2 s (never in a hot loop); a 401 ends the loop."""
    asked = []
    answers = {"status": 503, "detail": "the database is busy"}

    def answer(route):
        asked.append(route.request.url)
        route.fulfill(status=answers["status"], json={"detail": answers["detail"]})

    page.route("**/api/v1/alerts?*", answer)
    page.goto(live_server.root + "/")
    status = page.locator("#notifications-status")
    expect(status).to_contain_text("the database is busy; trying again in 2 s", timeout=WAIT_MS)
    assert len(asked) == 2
    expect(status).to_have_attribute("data-state", "error")
    answers.update(status=401, detail="sign in first")
    expect(status).to_contain_text("New alerts no longer arrive: sign in first", timeout=WAIT_MS)
    assert len(asked) == 3
    assert all("after=0" in url for url in asked)
