"""The run page's axes, toolbar, relative times and ETA in a real Chromium (issue 11's
run page bugs: constant series on a −1…1 axis, half-epoch ticks, plotly's toolbar over the
legend, "started N s ago" frozen at page load, "0s per epoch" for sub-second epochs)."""

import time

import httpx

from .test_dashboard import assert_clean, create_run, post_epochs, wait_for_chart
from .test_training import unique

# Tick labels of one axis ("x" or "y") of the chart titled `title`, as drawn.
TICK_LABELS = """([title, axis]) => {
  const chart = [...document.querySelectorAll('.chart.js-plotly-plot')]
    .find(div => div.layout && div.layout.title.text === title);
  return [...chart.querySelectorAll(`g.${axis}tick text`)].map(text => text.textContent);
}"""

# Every chart's legend, toolbar (modebar) and plot area as [left, top, right, bottom].
CHART_BOXES = """() => [...document.querySelectorAll('.chart.js-plotly-plot')].map(div => {
  const box = selector => {
    const r = div.querySelector(selector).getBoundingClientRect();
    return [r.left, r.top, r.right, r.bottom];
  };
  return {title: div.layout.title.text, legend: box('g.legend'), modebar: box('.modebar'),
          plot: box('.nsewdrag'), chart: box('.main-svg')};
})"""


def tick_values(page, title, axis):
    """The chart's tick labels on `axis`, read back as numbers (plotly writes − for -)."""
    labels = page.evaluate(TICK_LABELS, [title, axis])
    assert labels, f"no {axis} tick labels on {title!r}"
    return labels, [float(label.replace("−", "-")) for label in labels]


def wait_for_ticks(page, title, axis, condition):
    """Wait until the drawn tick `values` of the chart pass the JS `condition`, then return
    them as `tick_values` does (plotly draws ticks after it updates its layout)."""
    page.wait_for_function(
        f"""(args) => {{
          const values = ({TICK_LABELS})(args).map(label => Number(label.replace('−', '-')));
          return values.length > 0 && ({condition});
        }}""",
        arg=[title, axis],
    )
    return tick_values(page, title, axis)


def overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def open_run(page, root, run_id):
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")


def test_a_constant_series_gets_an_axis_around_its_value(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("constant-lr"))
    post_epochs(root, run_id, range(3), learning_rate=0.001)
    # Keras logs float32: the same rate arrives as 0.001 or as 0.0010000000474974513.
    noisy = create_run(root, unique("float32-lr"))
    post_epochs(root, noisy, range(2), learning_rate=0.001)
    post_epochs(root, noisy, range(2, 4), learning_rate=0.0010000000474974513)
    for shown in (run_id, noisy):
        open_run(page, root, shown)
        labels, values = tick_values(page, "learning rate", "y")
        assert len(set(labels)) == len(labels) >= 3, labels
        assert all(0.0005 <= value <= 0.0015 for value in values), labels
        assert min(values) < 0.001 < max(values), labels
        assert all(len(label) <= 7 for label in labels), labels  # "0.00105", not 0.00100000003
    # A rate that changes later is no longer flat: the axis follows it down.
    post_epochs(root, noisy, [4], learning_rate=0.0001)
    labels, values = wait_for_ticks(page, "learning rate", "y", "Math.min(...values) <= 0.0002")
    assert max(values) >= 0.001 and len(set(labels)) == len(labels), labels
    assert_clean(page)


def test_step_axes_tick_whole_numbers(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("short-run"))
    post_epochs(root, run_id, range(3))
    batches = [
        {
            "seq": 1000 + step,
            "kind": "batch_end",
            "step": step,
            "epoch": step // 4,
            "metrics": {"batch/loss": 1 / step},
        }
        for step in range(1, 6)
    ]
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": batches})
    open_run(page, root, run_id)
    for title in ("loss", "accuracy", "loss (per batch)"):
        labels, values = tick_values(page, title, "x")
        assert all(value == int(value) for value in values), (title, labels)
        assert len(values) >= 3, (title, labels)
    # Live epochs widen the axis to plotly's own (whole) ticks, and zooming in keeps them whole.
    post_epochs(root, run_id, range(3, 40))
    wait_for_chart(page, "loss", 1, "===", 80)
    labels, values = wait_for_ticks(page, "loss", "x", "Math.max(...values) >= 30")
    assert all(value == int(value) for value in values), labels
    page.evaluate(
        """() => Plotly.relayout(document.querySelector('.chart'), {'xaxis.range': [10, 12.5]})"""
    )
    labels, values = wait_for_ticks(page, "loss", "x", "Math.max(...values) < 13")
    assert values == [10, 11, 12], labels
    assert_clean(page)


def assert_toolbars_clear_legends(page):
    boxes = page.evaluate(CHART_BOXES)
    assert boxes
    for box in boxes:
        assert not overlap(box["legend"], box["modebar"]), box
        assert not overlap(box["legend"], box["plot"]), box
        assert box["chart"][0] <= box["legend"][0] and box["legend"][2] <= box["chart"][2], box
        assert box["chart"][1] <= box["legend"][1], box


def test_plotly_toolbar_never_covers_a_legend(live_server, page):
    root = live_server.root
    project = unique("toolbar")
    ids = [create_run(root, f"a rather long run name {i} <lr>", project=project) for i in range(6)]
    for run_id in ids:
        post_epochs(root, run_id, range(4), learning_rate=0.01)
    open_run(page, root, ids[0])
    for chart in page.locator(".chart.js-plotly-plot").all():
        chart.hover()  # the toolbar shows on hover
    assert_toolbars_clear_legends(page)
    # The compare page's one chart, with a legend of six long names.
    page.goto(f"{root}/compare?ids={','.join(map(str, ids))}")
    page.wait_for_selector("body[data-charts-ready=true]")
    page.locator(".chart.js-plotly-plot").hover()
    assert_toolbars_clear_legends(page)
    assert_clean(page)


def test_relative_times_keep_counting(live_server, page):
    root = live_server.root
    project = unique("ago")
    run_id = create_run(root, unique("ago"), project=project)
    post_epochs(root, run_id, range(2))
    page.clock.install()
    open_run(page, root, run_id)
    created = page.locator("#run-created")
    updated = page.locator("#run-updated")
    page.wait_for_function(
        "() => /s ago$/.test(document.querySelector('#run-created').textContent)"
    )
    page.clock.fast_forward("05:00")
    page.wait_for_function("() => document.querySelector('#run-created').textContent === '5m ago'")
    assert updated.text_content() == "5m ago"
    assert created.get_attribute("datetime")  # the exact time stays on the element
    # The runs list counts on too.
    page.goto(f"{root}/?project={project}")
    page.wait_for_selector("body[data-ready=true]")
    page.clock.fast_forward("03:00")
    page.wait_for_function(
        "() => document.querySelector('tr.run-row .run-updated time').textContent === '8m ago'"
    )
    assert_clean(page)


def test_durations_below_ten_seconds_keep_two_digits(live_server, page):
    open_run(page, live_server.root, create_run(live_server.root, unique("format")))
    shown = page.evaluate(
        """async (seconds) => {
          const src = document.querySelector('script[src*="/static/run.js"]').src;
          const format = await import(src.replace('/run.js', '/format.js'));
          return seconds.map(format.duration);
        }""",
        [0, 0.043, 0.4, 1.44, 9.96, 75, 3725],
    )
    assert shown == ["0s", "0.043s", "0.4s", "1.4s", "10s", "1m 15s", "1h 02m"]


def test_eta_shows_sub_second_epochs(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("fast-epochs"))
    began = time.time() - 10
    events = [{"seq": 1, "kind": "train_begin", "time": began, "data": {"epochs": 1000}}]
    events += [
        {
            "seq": 2 + epoch,
            "kind": "epoch_end",
            "epoch": epoch,
            "time": began + 0.4 * (epoch + 1),
            "metrics": {"loss": 1 / (epoch + 1)},
        }
        for epoch in range(6)
    ]
    httpx.post(f"{root}/api/v1/runs/{run_id}/events", json={"events": events})
    open_run(page, root, run_id)
    page.wait_for_function("() => document.querySelector('#eta').textContent.includes('per epoch')")
    assert page.locator("#eta").text_content().endswith(" · 0.4s per epoch")
    assert_clean(page)
