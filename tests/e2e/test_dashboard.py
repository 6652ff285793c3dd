"""The dashboard in a real Chromium against a real server: live runs list, live charts,
the Stop button stopping a real Keras training, compare, themes, no external requests."""

import importlib.resources
import re
import threading
import time

import httpx
import pytest

from callboard.client import RemoteMonitor, RemoteStop

from .conftest import save_screenshot
from .test_training import find_run, unique
from .training import slow_batches, tiny_data, tiny_model

# Plotted points of the chart titled `title` on the run page: `[traces, points, markers]`,
# read from plotly's own data (main traces only) and from the SVG it drew.
CHART_POINTS = """title => {
  const chart = [...document.querySelectorAll('#charts .chart')]
    .find(div => div.layout && div.layout.title.text === title);
  if (!chart) return [0, 0, 0];
  const mains = chart.data.filter((trace, i) => i % 2 === 0);
  const points = mains.reduce((sum, trace) => sum + trace.x.length, 0);
  const markers = chart.querySelectorAll('.scatterlayer .trace .points path.point').length;
  return [mains.length, points, markers];
}"""


def wait_for_chart(page, title, index, op, value, timeout=15_000):
    """Wait until `CHART_POINTS(title)[index] <op> value` (0: traces, 1: points, 2: markers).

    Only function predicates: the page's CSP forbids eval, so expression strings can't run.
    """
    page.wait_for_function(
        f"([title, value]) => ({CHART_POINTS})(title)[{index}] {op} value",
        arg=[title, value],
        timeout=timeout,
    )


def create_run(root, name, project="dashboard", **fields):
    answer = httpx.post(f"{root}/api/v1/runs", json={"name": name, "project": project, **fields})
    answer.raise_for_status()
    return answer.json()["id"]


def post_epochs(root, run_id, epochs, **extra):
    """Post one `epoch_end` per epoch in `epochs` (seq = epoch + 1); `extra` adds metrics."""
    events = [
        {
            "seq": epoch + 1,
            "kind": "epoch_end",
            "epoch": epoch,
            "metrics": {
                "loss": 1 / (epoch + 1),
                "val_loss": 1.2 / (epoch + 1),
                "accuracy": epoch / (epoch + 2),
                **extra,
            },
        }
        for epoch in epochs
    ]
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": events}).raise_for_status()


def assert_clean(page):
    assert page.problems.errors == [], page.problems.errors
    assert page.problems.external == [], page.problems.external


def test_runs_page_shows_a_run_created_during_the_test_without_reload(live_server, page):
    root = live_server.root
    page.goto(root + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate("window.notReloaded = true")
    name = unique("live <img src=x>")
    run_id = create_run(root, name, tags=["fresh"])
    row = page.locator(f"tr.run-row[data-run-id='{run_id}']")
    row.wait_for()
    # Escaped as text: the markup in the name shows literally, no element is made.
    assert row.locator(".run-name").text_content() == name
    assert row.locator("img").count() == 0
    assert row.locator(".badge").text_content() == "running"
    assert row.locator(".tag").all_text_contents() == ["fresh"]
    post_epochs(root, run_id, range(3))
    page.wait_for_function(
        "id => document.querySelector(`tr[data-run-id='${id}'] .run-epochs`).textContent === '3'",
        arg=run_id,
    )
    assert row.locator(".metric-key").text_content() == "val_loss"
    assert row.locator(".metric-value").text_content() == "0.4"
    row.locator("svg.sparkline polyline").wait_for()
    assert "ago" in row.locator(".run-updated time").text_content()
    assert page.evaluate("window.notReloaded") is True
    assert_clean(page)


def test_runs_page_filters_by_project_and_name(live_server, page):
    root = live_server.root
    project = unique("filter-project")
    create_run(root, "alpha-run", project=project)
    create_run(root, "beta-run", project=project)
    create_run(root, "alpha-elsewhere", project=unique("other"))
    page.goto(f"{root}/?project={project}")
    page.wait_for_selector("body[data-ready=true]")
    names = page.locator("tr.run-row .run-name")
    assert sorted(names.all_text_contents()) == ["alpha-run", "beta-run"]
    page.fill("#filter-q", "alpha")
    page.wait_for_function("() => document.querySelectorAll('tr.run-row').length === 1")
    assert names.all_text_contents() == ["alpha-run"]
    assert "q=alpha" in page.url
    late = create_run(root, "alpha-late", project=project)
    create_run(root, "gamma-late", project=project)  # filtered out, never shown
    page.locator(f"tr.run-row[data-run-id='{late}']").wait_for()
    assert names.all_text_contents() == ["alpha-late", "alpha-run"]
    assert_clean(page)


def test_run_page_chart_grows_as_epochs_are_posted(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("growing"))
    post_epochs(root, run_id, range(2))
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    traces, points, markers = page.evaluate(CHART_POINTS, "loss")
    assert (traces, points, markers) == (2, 4, 4)  # loss and val_loss, 2 epochs each
    seen = [points]
    for epoch in range(2, 6):
        post_epochs(root, run_id, [epoch])
        expected = 2 * (epoch + 1)
        wait_for_chart(page, "loss", 1, "===", expected)
        seen.append(page.evaluate(CHART_POINTS, "loss")[1])
    assert seen == [4, 6, 8, 10, 12]
    wait_for_chart(page, "loss", 2, "===", 12)  # drawn as SVG markers too
    assert page.locator("#epoch-text").text_content() == "6 epochs"
    # A family that first appears live gets its own chart.
    post_epochs(root, run_id, [6], auc=0.5)
    wait_for_chart(page, "auc", 1, "===", 1)
    assert_clean(page)


def test_run_page_controls_events_and_config(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("controls"), config={"lr": 0.001, "net": {"units": 64}})
    events = [{"seq": 1, "kind": "train_begin", "data": {"epochs": 8, "steps": 4}}]
    events += [
        {"seq": 2 + e, "kind": "epoch_end", "epoch": e, "metrics": {"loss": 10.0**-e}}
        for e in range(4)
    ]
    events.append(
        {"seq": 9, "kind": "lr_changed", "epoch": 3, "data": {"old": 0.001, "new": 0.0001}}
    )
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": events})
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    assert page.locator("#epoch-progress").get_attribute("max") == "8"
    assert page.locator("#epoch-text").text_content() == "4 / 8 epochs"
    assert page.locator("#timeline li[data-kind=lr_changed] .detail").text_content() == (
        "epoch 3 · 0.001 → 0.0001"
    )
    assert page.locator("#timeline li[data-kind=train_begin]").count() == 1
    config = page.locator("table.kv").first
    assert "net.units" in config.text_content() and "64" in config.text_content()
    # Log scale and smoothing, from the keyboard.
    page.focus("#log-scale")
    page.keyboard.press("Space")
    page.wait_for_function(
        "() => document.querySelector('#charts .chart').layout.yaxis.type === 'log'"
    )
    page.focus("#smoothing")
    for _ in range(60):
        page.keyboard.press("ArrowRight")
    assert page.locator("#smoothing-value").text_content() == "0.60"
    smoothed, raw, raw_visible = page.evaluate(
        """() => { const d = document.querySelector('#charts .chart').data;
                   return [d[0].y, d[1].y, d[1].visible]; }"""
    )
    assert raw == [1.0, 0.1, 0.01, 0.001] and raw_visible is True
    assert smoothed[0] == pytest.approx(1.0)  # debiased: the first point is the value itself
    assert smoothed[1] == pytest.approx((0.4 * 0.6 * 1 + 0.4 * 0.1) / (1 - 0.6**2))
    assert_clean(page)


def test_stop_button_stops_a_real_keras_training(live_server, page):
    root = live_server.root
    name = unique("stop-from-browser")
    epochs = 500
    result = {}

    def train():
        x, y = tiny_data()
        result["history"] = tiny_model().fit(
            x,
            y,
            epochs=epochs,
            batch_size=16,
            verbose=0,
            callbacks=[
                RemoteMonitor(root=root, run=name, project="dashboard", batch_frequency=2),
                RemoteStop(root=root, interval=0.2),
                slow_batches(0.01),
            ],
        )

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    try:
        run = find_run(root, name, timeout=60)
        page.goto(f"{root}/runs/{run['id']}")
        page.wait_for_selector("body[data-charts-ready=true]")
        button = page.locator("#stop-button")
        assert button.is_enabled()
        # Keyboard: open the dialog, then cancel it with Escape: nothing is stopped.
        button.focus()
        page.keyboard.press("Enter")
        dialog = page.locator("#stop-dialog")
        assert dialog.is_visible()
        page.keyboard.press("Escape")
        assert not dialog.is_visible()
        control = httpx.get(f"{root}/api/v1/runs/{run['id']}/control").json()
        assert control["state"] == "none"
        wait_for_chart(page, "loss", 1, ">=", 2)  # epochs arrive live
        # Now for real.
        button.click()
        page.fill("#stop-reason", "enough, from the browser")
        page.click("#stop-confirm")
        page.wait_for_selector("#run-status[data-status=stopped]", timeout=60_000)
        trainer.join(60)
        assert not trainer.is_alive()
    finally:
        if trainer.is_alive():
            httpx.post(f"{root}/api/v1/runs/{run['id']}/stop", json={"reason": "cleanup"})
            trainer.join(60)
    assert len(result["history"].history["loss"]) < epochs
    detail = httpx.get(f"{root}/api/v1/runs/{run['id']}").json()
    assert detail["status"] == "stopped"
    assert detail["control"]["state"] == "stopped"
    assert detail["control"]["reason"] == "enough, from the browser"
    steps = page.locator("#stop-steps li.done")
    steps.nth(2).wait_for()
    assert steps.all_text_contents() == ["requested", "acknowledged", "stopped"]
    assert page.locator("#stop-button").is_disabled()
    # The status comes with the run's summary; its events follow through the chart queue.
    page.locator("#timeline li[data-kind=train_end]").wait_for()
    kinds = page.locator("#timeline li").evaluate_all("items => items.map(i => i.dataset.kind)")
    assert {"stop_requested", "stop_acknowledged", "train_end"} <= set(kinds)
    assert page.locator("#eta").text_content().startswith("Ended: stopped")
    assert_clean(page)


def test_a_late_stop_answer_does_not_undo_the_live_steps(live_server, page):
    # Our POST /stop answers "requested"; if that answer lands after the live updates
    # that followed it (acknowledged, stopped), the steps must stay at "stopped".
    root = live_server.root
    run_id = create_run(root, unique("late-answer"))
    post_epochs(root, run_id, range(2))

    def late_answer(route):
        answer = route.fetch()
        httpx.post(f"{root}/api/v1/runs/{run_id}/control/ack").raise_for_status()
        ended = {"seq": 100, "kind": "train_end", "data": {"status": "finished"}}
        httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": [ended]})
        time.sleep(1.5)  # the page hears acknowledged and stopped live meanwhile
        route.fulfill(response=answer)

    page.route(re.compile(r".*/api/v1/runs/\d+/stop$"), late_answer)
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    page.click("#stop-button")
    with page.expect_response(re.compile(r".*/stop$")):
        page.click("#stop-confirm")
    page.wait_for_timeout(300)  # the page has handled the late answer
    steps = page.locator("#stop-steps li.done").all_text_contents()
    assert steps == ["requested", "acknowledged", "stopped"]
    assert page.locator("#run-status").get_attribute("data-status") == "stopped"
    assert page.locator("#stop-message").text_content() == "Training stopped."


@pytest.mark.parametrize("acknowledged", [False, True], ids=["requested", "acknowledged"])
def test_a_run_that_ended_before_its_stop_does_not_say_it_is_stopping(
    live_server, page, acknowledged
):
    # A run that failed (or a stock run that finished) with a stop pending said
    # "waiting for the training to notice" or "stopping after its current batch" forever.
    root = live_server.root
    run_id = create_run(root, unique("ended-first"))
    post_epochs(root, run_id, range(2))
    httpx.post(f"{root}/api/v1/runs/{run_id}/stop", json={}).raise_for_status()
    if acknowledged:
        httpx.post(f"{root}/api/v1/runs/{run_id}/control/ack").raise_for_status()
    failed = {"seq": 100, "kind": "train_end", "data": {"status": "failed", "error": "boom"}}
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": [failed]})
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    assert page.locator("#run-status").get_attribute("data-status") == "failed"
    message = page.locator("#stop-message").text_content()
    assert message == "The run ended (failed) before the stop took effect."
    assert page.locator("#stop-button").is_disabled()
    assert_clean(page)


def test_compare_overlays_two_runs(live_server, page):
    root = live_server.root
    project = unique("compare")
    first = create_run(root, "small <lr>", project=project, config={"lr": 0.1, "units": 8})
    second = create_run(root, "big <lr>", project=project, config={"lr": 0.01, "units": 8})
    post_epochs(root, first, range(5))
    post_epochs(root, second, range(3), accuracy=0.99)
    page.goto(f"{root}/?project={project}")
    page.wait_for_selector("body[data-ready=true]")
    compare = page.locator("#compare-button")
    assert compare.is_disabled()
    page.check(f"tr[data-run-id='{first}'] .pick")
    page.check(f"tr[data-run-id='{second}'] .pick")
    compare.click()
    page.wait_for_url("**/compare?ids=*")
    page.wait_for_selector("body[data-charts-ready=true]")
    names, lengths = page.evaluate(
        """() => { const d = document.querySelector('#compare-chart .chart').data
                     .filter((t, i) => i % 2 === 0);
                   return [d.map(t => t.name), d.map(t => t.x.length)]; }"""
    )
    # Plotly renders some HTML in names: they are escaped, and shown as the plain text.
    assert dict(zip(names, lengths, strict=True)) == {
        f"small &lt;lr&gt; #{first}": 5,
        f"big &lt;lr&gt; #{second}": 3,
    }
    legend = page.locator("#compare-chart .legendtext").all_text_contents()
    assert sorted(legend) == [f"big <lr> #{second}", f"small <lr> #{first}"]
    assert page.locator("#metric-select").input_value() == "val_loss"
    page.select_option("#metric-select", "accuracy")
    page.wait_for_function(
        "() => document.body.dataset.chartsReady === 'true' && "
        "document.querySelector('#compare-chart .chart').layout.title.text === 'accuracy'"
    )
    # Config differences: lr differs; units is the same and hidden until asked for.
    differs = page.locator("#config-diff tr.differs th")
    assert differs.all_text_contents() == ["lr"]
    assert not page.locator("#config-diff tr.same").first.is_visible()
    page.check("#show-same")
    assert page.locator("#config-diff tr.same").first.is_visible()
    # Best values: lowest loss (run 1 reached 0.2), highest accuracy (run 2's 0.99).
    best = page.locator("#best-table tbody tr")
    best.first.wait_for()
    loss = page.locator("#best-table tbody tr", has_text="val_loss").locator("td.best")
    assert loss.count() == 1 and loss.text_content().startswith("0.24")
    accuracy = page.locator("#best-table tbody tr").filter(
        has=page.locator("th", has_text="accuracy")
    )
    assert accuracy.first.locator("td.best").text_content().startswith("0.99")
    assert_clean(page)


def test_dark_preference_switches_page_and_chart_theme(live_server, dark_page):
    root = live_server.root
    run_id = create_run(root, unique("dark"))
    post_epochs(root, run_id, range(3))
    dark_page.goto(f"{root}/runs/{run_id}")
    dark_page.wait_for_selector("body[data-charts-ready=true]")
    background = dark_page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    font = dark_page.evaluate("document.querySelector('#charts .chart').layout.font.color")
    assert background == "rgb(17, 20, 24)"
    assert font == "#e6e9ee"
    assert_clean(dark_page)


def test_plotly_comes_from_the_installed_package_and_pages_need_nothing_external(live_server):
    root = live_server.root
    served = httpx.get(f"{root}/vendor/plotly.min.js")
    assert served.status_code == 200
    shipped = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
    assert served.content.endswith(shipped.read_bytes())  # behind one compile-hint line
    for path in ("/", "/compare", f"/runs/{create_run(root, unique('html'))}"):
        html = httpx.get(root + path).text
        assert "<script>" not in html and not re.search(r"\son[a-z]+=", html)
        assert "http://" not in html.replace(root, "") and "https://" not in html
    assert httpx.get(f"{root}/runs/999999").status_code == 404


def test_failure_screenshots_are_saved(live_server, page, tmp_path):
    page.goto(live_server.root + "/")
    path = save_screenshot(page, "tests/e2e/x.py::test_something[param]", folder=tmp_path)
    assert path.name == "tests_e2e_x.py_test_something_param.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reconnecting_stream_loses_no_point(server_factory, page):
    server = server_factory()
    root = server.root
    run_id = create_run(root, unique("reconnect"))
    post_epochs(root, run_id, range(2))
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    page.wait_for_selector("#live-status[data-state=live]")
    server.kill()
    page.wait_for_selector("#live-status[data-state=reconnecting]")
    time.sleep(0.5)
    server.start()
    post_epochs(root, run_id, range(2, 5))  # posted while the page may still be away
    wait_for_chart(page, "loss", 1, "===", 10, timeout=20_000)
    assert page.evaluate(CHART_POINTS, "loss")[1] == 10
