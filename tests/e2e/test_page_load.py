"""The run page's first load in Chromium: plotly.js arrives gzipped behind its compile hint,
runs, and draws every chart; the next load takes plotly.js from the browser's cache."""

from .test_dashboard import assert_clean, create_run, post_epochs
from .test_training import unique

# What the browser's resource timing says of the bundle, once the page has drawn.
BUNDLE_TIMING = """() => {
  const entry = performance.getEntriesByType('resource')
    .find(e => e.name.includes('/vendor/plotly.min.js?v='));
  return {encoded: entry.encodedBodySize, decoded: entry.decodedBodySize,
          transferred: entry.transferSize};
}"""
CHART_POINTS = """() => [...document.querySelectorAll('#charts .chart')]
  .map(chart => chart.data.reduce((sum, trace) => sum + trace.x.length, 0))"""


def test_chromium_gets_plotly_gzipped_then_from_its_cache_and_draws_every_chart(live_server, page):
    root = live_server.root
    run_id = create_run(root, unique("first-load"))
    post_epochs(root, run_id, range(6))
    url = f"{root}/runs/{run_id}"

    answer = page.goto(url)
    assert answer.ok
    page.wait_for_selector("body[data-charts-ready=true]")
    first = page.evaluate(BUNDLE_TIMING)
    assert 0 < first["encoded"] < first["decoded"] / 2  # gzipped on the wire
    assert first["transferred"] >= first["encoded"]
    assert page.evaluate("typeof Plotly.newPlot") == "function"
    points = page.evaluate(CHART_POINTS)
    assert len(points) == 2  # loss (with val_loss) and accuracy
    assert all(count >= 6 for count in points)

    page.goto(url)
    page.wait_for_selector("body[data-charts-ready=true]")
    again = page.evaluate(BUNDLE_TIMING)
    assert again["transferred"] == 0  # the browser's cache: no request at all
    assert again["decoded"] == first["decoded"]
    assert page.evaluate(CHART_POINTS) == points
    assert_clean(page)
