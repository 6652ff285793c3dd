"""The browser draws what the server sends (issue 12): the runs list is the server's answer
to its filters and sort, live changes ask the server again, and a live point's x, a run's
main metric and whether it has ended come from the server."""

from urllib.parse import parse_qsl, urlsplit

import httpx

from .test_dashboard import assert_clean, create_run, post_epochs, wait_for_chart
from .test_training import unique

ROW_IDS = "() => [...document.querySelectorAll('tr.run-row')].map(tr => Number(tr.dataset.runId))"

# The x values plotly holds for the series `key` on the chart titled `title`, and its x title.
CHART_X = """([title, key]) => {
  const chart = [...document.querySelectorAll('#charts .chart')]
    .find(div => div.layout && div.layout.title.text === title);
  const trace = chart && chart.data.find(trace => trace.name === key);
  return [trace ? trace.x : [], chart ? chart.layout.xaxis.title.text : null];
}"""


def server_ids(root, **query):
    answer = httpx.get(f"{root}/api/v1/runs", params=query)
    answer.raise_for_status()
    return [run["id"] for run in answer.json()["runs"]]


def asks_for_runs(url, query):
    """Whether `url` is a GET /api/v1/runs with the filters and sort of `query`."""
    parts = urlsplit(url)
    sent = dict(parse_qsl(parts.query))
    return parts.path.endswith("/api/v1/runs") and query.items() <= sent.items()


def wait_for_rows(page, ids):
    page.wait_for_function(
        f"(ids) => JSON.stringify(({ROW_IDS})()) === JSON.stringify(ids)", arg=ids
    )


def test_live_runs_list_is_the_servers_answer_to_its_filters_and_sort(live_server, page):
    root = live_server.root
    project = unique("server-filters")
    query = {"project": project, "q": "été", "sort": "name"}
    create_run(root, "été-b", project=project)
    create_run(root, "été-d", project=project)
    page.goto(f"{root}/?project={project}&q=%C3%A9t%C3%A9&sort=name")
    page.wait_for_selector("body[data-ready=true]")
    wait_for_rows(page, server_ids(root, **query))
    # A change the stream announces makes the page ask the server, with its filters.
    with page.expect_request(lambda request: asks_for_runs(request.url, query)):
        first = create_run(root, "été-a", project=project)
    # The server's substring match is not case-folded: "ÉTÉ" is not shown for "été",
    # though lowering both (as the page once did by itself) would match it.
    shouted = create_run(root, "ÉTÉ-c", project=project)
    create_run(root, "été-e", project=unique("elsewhere"))
    post_epochs(root, shouted, range(2))
    expected = server_ids(root, **query)
    assert expected[0] == first and shouted not in expected and len(expected) == 3
    wait_for_rows(page, expected)
    assert page.locator("tr.run-row .run-name").all_text_contents() == ["été-a", "été-b", "été-d"]
    # Sorted by update: a run that reports moves to the top, where the server puts it.
    page.select_option("#filter-sort", "updated")
    page.wait_for_url("**sort=updated**")
    post_epochs(root, first, range(1))
    updated = server_ids(root, **{**query, "sort": "updated"})
    assert updated[0] == first
    wait_for_rows(page, updated)
    assert_clean(page)


def test_main_metric_and_ended_come_with_the_run(live_server, page):
    root = live_server.root
    project = unique("main-metric")
    run_id = create_run(root, unique("judged"), project=project)
    post_epochs(root, run_id, range(2), aardvark=0.5)
    ended = {"seq": 100, "kind": "train_end", "data": {"status": "finished"}}
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": [ended]})
    run = httpx.get(f"{root}/api/v1/runs/{run_id}").json()
    assert run["main_metric"] == "val_loss" and run["ended"] is True
    page.goto(f"{root}/?project={project}")
    page.wait_for_selector("body[data-ready=true]")
    row = page.locator(f"tr.run-row[data-run-id='{run_id}']")
    assert row.locator(".metric-key").text_content() == run["main_metric"]
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    assert page.locator("#stop-button").is_disabled()
    assert page.locator("#eta").text_content().startswith("Ended: finished")
    assert_clean(page)


def test_live_points_sit_at_the_servers_x(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("server-x"))
    post_epochs(root, run_id, range(1))
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    # Batch ends with a step, and one without (its x is then its epoch), arriving live.
    batches = [
        {"seq": 10 + i, "kind": "batch_end", "step": step, "epoch": 1, "metrics": {"batch/loss": i}}
        for i, step in enumerate([5, 6, 7])
    ]
    batches.append({"seq": 20, "kind": "batch_end", "epoch": 9, "metrics": {"batch/loss": 0.1}})
    batches.append({"seq": 21, "kind": "metrics", "step": 3, "metrics": {"custom": 1.5}})
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": batches})
    post_epochs(root, run_id, range(1, 3))
    wait_for_chart(page, "loss (per batch)", 1, "===", 4)
    wait_for_chart(page, "loss", 1, "===", 6)
    wait_for_chart(page, "custom", 1, "===", 1)
    events = httpx.get(f"{root}/api/v1/runs/{run_id}/events").json()["events"]
    sent = [event["x"] for event in events if "batch/loss" in event["metrics"]]
    assert sent == [5, 6, 7, 9]
    # Charts made before the page loaded and charts made live title x as the server says.
    charts = (
        ("loss (per batch)", "batch/loss", "batch"),
        ("loss", "loss", "epoch"),
        ("custom", "custom", "step"),
    )
    for title, key, x_title in charts:
        series = httpx.get(f"{root}/api/v1/runs/{run_id}/metrics/{key}").json()
        drawn, drawn_title = page.evaluate(CHART_X, [title, key])
        assert drawn == [point["step"] for point in series["points"]], (key, drawn)
        assert drawn_title == x_title, key
    assert series["x_axis"] == "step"  # the last one read: custom's
    page.reload()
    page.wait_for_selector("body[data-charts-ready=true]")
    for title, key, x_title in charts:
        assert page.evaluate(CHART_X, [title, key])[1] == x_title, key
    assert_clean(page)
