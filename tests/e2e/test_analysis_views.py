"""Analysis views in a real Chromium against a real server: the x-axis switch (step, epoch,
wall time, relative time) on the run page with live points, runs grouped into mean ± band on
the compare page, parallel coordinates filtering the runs by a real mouse drag, and every
view opened again from its URL (a shared link shows the same view)."""

import json
import statistics
from urllib.parse import parse_qs, urlsplit

import httpx
from playwright.sync_api import expect
from pytest import approx

from .test_dashboard import assert_clean, create_run
from .test_training import unique

WAIT_MS = 20_000

# The chart titled `title`: [x values, y values, x axis type, x title] of its first trace.
FIRST_TRACE = """title => {
  const div = [...document.querySelectorAll('.chart.js-plotly-plot')]
    .find(d => d.layout && d.layout.title.text === title);
  return [div.data[0].x, div.data[0].y, div.layout.xaxis.type, div.layout.xaxis.title.text];
}"""

COMPARE_TRACES = """() => document.querySelector('#compare-chart .chart').data
  .map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))"""


def post_values(root, run_id, values, start_time, seconds_per_epoch=10.0, first_epoch=0):
    """One `epoch_end` per value of `values` (`{key: [value per epoch]}`), at known times."""
    count = len(next(iter(values.values())))
    events = [
        {
            "seq": first_epoch + i + 1,
            "kind": "epoch_end",
            "epoch": first_epoch + i,
            "time": start_time + seconds_per_epoch * (first_epoch + i + 1),
            "metrics": {key: series[i] for key, series in values.items()},
        }
        for i in range(count)
    ]
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": events}).raise_for_status()


def close(values, expected):
    return len(values) == len(expected) and all(
        abs(a - b) < 1e-3 for a, b in zip(values, expected, strict=True)
    )


def created_at(root, run_id):
    return httpx.get(f"{root}/api/v1/runs/{run_id}").json()["created_at"]


def view_of(page):
    """The page URL's query as `{name: value}`."""
    return {key: values[-1] for key, values in parse_qs(urlsplit(page.url).query).items()}


def wait_ready(page):
    page.wait_for_selector("body[data-charts-ready=true]", timeout=WAIT_MS)


def test_x_axis_switches_on_the_run_page_live_and_from_its_url(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("axes"))
    start = created_at(root, run_id)
    post_values(root, run_id, {"loss": [1.0, 0.5, 0.25]}, start)
    page.goto(f"{root}/runs/{run_id}")
    wait_ready(page)
    x, _, kind, title = page.evaluate(FIRST_TRACE, "loss")
    assert (x, kind, title) == ([0, 1, 2], "linear", "epoch")

    page.select_option("#x-mode", "relative")
    page.wait_for_function(
        "() => document.querySelector('.chart').layout.xaxis.title.text.startsWith('time since')"
    )
    x, _, kind, _ = page.evaluate(FIRST_TRACE, "loss")
    assert close(x, [10, 20, 30])  # seconds since the run was created
    assert view_of(page)["x"] == "relative"

    page.select_option("#x-mode", "wall")
    page.wait_for_function("() => document.querySelector('.chart').layout.xaxis.type === 'date'")
    x, _, _, title = page.evaluate(FIRST_TRACE, "loss")
    assert close(x, [(start + 10 * (i + 1)) * 1000 for i in range(3)]) and title == "time"

    # A live epoch lands at its wall time too.
    post_values(root, run_id, {"loss": [0.125]}, start, first_epoch=3)
    page.wait_for_function(
        "() => document.querySelector('.chart').data[0].x.length === 4", timeout=WAIT_MS
    )
    x, y, _, _ = page.evaluate(FIRST_TRACE, "loss")
    assert close(x[-1:], [(start + 40) * 1000]) and y[-1] == 0.125

    # The URL holds the view: opened again, the page shows the same axes, scale and smoothing.
    page.select_option("#x-mode", "epoch")
    page.check("#log-scale")
    page.wait_for_function("() => document.querySelector('.chart').layout.yaxis.type === 'log'")
    page.fill("#smoothing", "0.3")
    page.wait_for_function("() => new URL(location.href).searchParams.get('smooth') === '0.3'")
    assert view_of(page) == {"x": "epoch", "log": "1", "smooth": "0.3"}
    page.goto(f"{root}/runs/{run_id}?x=relative&log=1&smooth=0.5")
    wait_ready(page)
    x, y, kind, _ = page.evaluate(FIRST_TRACE, "loss")
    assert close(x, [10, 20, 30, 40]) and kind == "linear"
    assert y[0] == 1.0 and y[1] != 0.5  # smoothed (debiased: the first point stays)
    assert page.locator("#x-mode").input_value() == "relative"
    assert page.locator("#log-scale").is_checked()
    assert page.locator("#smoothing").input_value() == "0.5"
    assert page.evaluate("() => document.querySelector('.chart').layout.yaxis.type") == "log"
    assert_clean(page)


def grouped_runs(root):
    """Four runs: two learning rates × two seeds, each with three epochs of val_loss."""
    project = unique("groups")
    runs = {}
    for lr in (0.1, 0.01):
        for seed in (1, 2):
            run_id = create_run(
                root, f"lr{lr}-s{seed}", project=project, config={"lr": lr, "seed": seed}
            )
            values = [lr * 10 + seed * 0.5 + epoch for epoch in range(3)]
            post_values(root, run_id, {"val_loss": values}, created_at(root, run_id))
            runs[run_id] = (lr, values)
    return runs


def open_grouped_runs(page, root, view=""):
    """`grouped_runs` on the compare page (with `view` added to its URL): `(runs, ids)`."""
    runs = grouped_runs(root)
    ids = ",".join(map(str, runs))
    page.goto(f"{root}/compare?ids={ids}&metric=val_loss{view}")
    wait_ready(page)
    return runs, ids


def test_compare_groups_runs_into_mean_and_band_and_reopens_from_the_url(live_server, page):
    root = live_server.root
    runs, ids = open_grouped_runs(page, root)
    assert page.evaluate("() => document.body.dataset.traces") == "8"  # 4 runs × (line, raw)

    page.select_option("#group-select", "config.lr")
    page.wait_for_function("() => document.body.dataset.groups === '2'", timeout=WAIT_MS)
    wait_ready(page)
    traces = page.evaluate(COMPARE_TRACES)
    assert len(traces) == 6  # per group: band top, band bottom, mean
    for index, lr in enumerate((0.01, 0.1)):  # groups sorted by value
        members = [values for run_lr, values in runs.values() if run_lr == lr]
        mean = [statistics.fmean(epoch) for epoch in zip(*members, strict=True)]
        spread = [statistics.pstdev(epoch) for epoch in zip(*members, strict=True)]
        high, low, line = traces[3 * index : 3 * index + 3]
        assert line["name"] == f"{lr} (2 runs)"
        assert line["x"] == [0, 1, 2]
        assert all(abs(a - b) < 1e-9 for a, b in zip(line["y"], mean, strict=True))
        assert all(abs(h - m - s) < 1e-9 for h, m, s in zip(high["y"], mean, spread, strict=True))
        assert all(abs(m - lo - s) < 1e-9 for lo, m, s in zip(low["y"], mean, spread, strict=True))

    page.select_option("#band-select", "minmax")
    page.wait_for_function(
        "() => document.querySelector('#compare-chart .chart').data[0].name.endsWith('high')"
        " && document.body.dataset.chartsReady === 'true'"
    )
    high = page.evaluate(COMPARE_TRACES)[0]
    lowest_lr = [values for run_lr, values in runs.values() if run_lr == 0.01]
    assert high["y"] == [max(epoch) for epoch in zip(*lowest_lr, strict=True)]
    assert view_of(page) == {
        "ids": ids,
        "metric": "val_loss",
        "group": "config.lr",
        "band": "minmax",
    }

    # The link opens the same view.
    link = page.url
    page.goto(f"{root}/")
    page.goto(link)
    wait_ready(page)
    assert page.evaluate("() => document.body.dataset.groups") == "2"
    assert page.locator("#group-select").input_value() == "config.lr"
    assert page.locator("#band-select").input_value() == "minmax"
    assert page.evaluate(COMPARE_TRACES)[0]["y"] == high["y"]
    assert_clean(page)


def drag_over_axis(page, index, low, high):
    """Drag a box with the mouse over parallel axis `index`, from `high` down to `low` (0 is
    the axis' bottom, 1 its top)."""
    page.locator("#parallel-chart").scroll_into_view_if_needed()
    x, top, bottom = page.evaluate(
        """([index, low, high]) => {
          const div = document.getElementById('parallel-chart');
          const box = div.getBoundingClientRect();
          const {xaxis, yaxis} = div._fullLayout;
          return [box.left + xaxis._offset + xaxis.l2p(index),
                  box.top + yaxis._offset + yaxis.l2p(high),
                  box.top + yaxis._offset + yaxis.l2p(low)];
        }""",
        [index, low, high],
    )
    page.mouse.move(x - 20, top)
    page.mouse.down()
    page.mouse.move(x + 20, bottom, steps=8)
    page.mouse.up()


def test_parallel_coordinates_filter_runs_by_dragging_an_axis(live_server, page):
    root = live_server.root
    runs, ids = open_grouped_runs(page, root)
    page.wait_for_selector("#parallel-chart .scatterlayer .trace", timeout=WAIT_MS)
    labels = page.evaluate(
        "() => document.getElementById('parallel-chart').layout.annotations"
        ".filter(a => a.yanchor === 'bottom').map(a => a.text)"
    )
    assert labels == ["lr", "seed", "val_loss (best)"]
    assert page.evaluate("() => document.body.dataset.shownRuns") == ids

    # lr runs 0.01 … 0.1 bottom to top: keep the top part, the lr = 0.1 runs.
    drag_over_axis(page, 0, 0.8, 1.02)
    big = [run_id for run_id, (lr, _) in runs.items() if lr == 0.1]
    page.wait_for_function(
        "want => document.body.dataset.shownRuns === want", arg=",".join(map(str, big))
    )
    wait_ready(page)
    page.wait_for_function("() => document.body.dataset.traces === '4'", timeout=WAIT_MS)
    names = [t["name"] for t in page.evaluate(COMPARE_TRACES)][::2]
    assert sorted(names) == sorted(
        f"lr0.1-s{seed} #{run_id}" for seed, run_id in zip((1, 2), big, strict=True)
    )
    faded = page.locator("#compared-runs tr.filtered-out").evaluate_all(
        "rows => rows.map(row => Number(row.dataset.runId))"
    )
    assert sorted(faded) == sorted(set(runs) - set(big))
    assert json.loads(view_of(page)["filter"]) == {"lr": [approx(0.082, abs=0.003), approx(0.1)]}

    # Grouped, the aggregate covers only the runs the filter keeps; the link keeps both.
    page.select_option("#group-select", "config.seed")
    page.wait_for_function("() => document.body.dataset.groups === '2'", timeout=WAIT_MS)
    wait_ready(page)
    lines = page.evaluate(COMPARE_TRACES)[2::3]
    assert [line["name"] for line in lines] == ["1 (1 run)", "2 (1 run)"]
    page.goto(page.url)
    wait_ready(page)
    page.wait_for_function(
        "want => document.body.dataset.shownRuns === want", arg=",".join(map(str, big))
    )
    assert page.evaluate("() => document.body.dataset.groups") == "2"

    # A box where no run is keeps none: no group to draw, and nothing to complain about
    # (the page asked the server to aggregate no runs, and showed its 422).
    drag_over_axis(page, 1, 0.3, 0.7)  # seeds are 1 and 2: nothing between
    page.wait_for_function("() => document.body.dataset.shownRuns === ''", timeout=WAIT_MS)
    page.wait_for_function("() => document.body.dataset.groups === '0'", timeout=WAIT_MS)
    wait_ready(page)
    expect(page.locator("#chart-problem")).to_be_hidden()
    assert_clean(page)


def test_a_link_with_a_grouping_the_server_refuses_says_why(live_server, page):
    # A hand-edited link: the aggregate answers 422; the page waited forever for its chart.
    root = live_server.root
    open_grouped_runs(page, root, "&group=bogus")
    expect(page.locator("#chart-problem")).to_contain_text("Could not draw val_loss: ")
    assert page.locator("#chart-problem").is_visible()
    page.select_option("#group-select", "config.lr")  # a good choice draws again
    page.wait_for_function("() => document.body.dataset.groups === '2'", timeout=WAIT_MS)
    expect(page.locator("#chart-problem")).to_be_hidden()
