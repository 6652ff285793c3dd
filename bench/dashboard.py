"""Dashboard: a big run's page drawn in Chromium, and POST → pixel latency of a live epoch.

A run with 20 metrics (10 train/validation pairs, so 10 charts) × 100k epochs is
ingested through the events API in batches of 5,000 events. Chromium (Debian's,
driven by Playwright) then opens the run page:

- load: from navigation start until the page has drawn every chart (the page sets
  `performance.mark("callboard:charts-ready")` one task after the frame that drew
  the last chart). A cold load is a fresh browser context's first (empty HTTP and
  code caches); three are measured, in three contexts, and their median reported.
  The last context then loads the page again: warm.
- live: the page itself POSTs one `epoch_end` with all 20 metrics, and times from
  just before the POST until the task after the frame that drew it (the page's
  `callboard:drawn` event, once the chart holds the new epoch). The point has
  travelled POST → SQL → live hub → SSE → Plotly.extendTraces → paint.

The cold load is also cut into stages (modules, plotly.js downloaded, compiled and
run, series fetched, charts drawn) to show where its time goes.

Targets: every chart drawn in < 1.5 s cold (issue 4) and < 0.8 s warm (issue 15);
live p95 < 100 ms.

Usage: `python -m bench.dashboard [--quick]` (or `python bench/dashboard.py`).
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.browser import launch_chromium  # noqa: E402
from bench.common import JsonConnection, percentile  # noqa: E402
from bench.report import Report, machine_info  # noqa: E402
from callboard.server.settings import Settings  # noqa: E402

FAMILIES = ("loss", "accuracy", "auc", "precision", "recall", "mae", "mse", "f1", "iou", "kld")
KEYS = tuple(key for family in FAMILIES for key in (family, f"val_{family}"))
# Epochs per request: as many as the server takes in one (its metric-value cap).
BATCH = Settings().max_values_per_request // len(KEYS)
LOAD_TARGET_S = 1.5
WARM_TARGET_S = 0.8
LIVE_TARGET_MS = 100.0
PREVIOUS_COLD_S, PREVIOUS_WARM_S = 2.32, 0.979  # docs/benchmarks.md before issue 15

# Issue 15's attempts at a faster first load (see the report's last table): cold and
# warm medians of interleaved A/B runs, measured once on 2026-12-07; not re-measured.
ATTEMPTS_LOAD = "3.6 to 7.8"
ATTEMPTS = (
    ("before: plotly.min.js as the package ships it, uncompressed", 1.52, 0.62, ""),
    ("gzip, precompressed once (4.8 → 1.4 MB)", 1.57, 0.49, "yes"),
    (
        "V8 compile hint `//# allFunctionsCalledOnLoad` (main-thread long tasks 954 → 732 ms)",
        1.52,
        0.74,
        "yes",
    ),
    ("compile hint + gzip: what the server does now", 1.46, 0.66, "yes"),
    ("over an emulated 50 Mbit/s, 10 ms link: uncompressed", 2.45, 0.97, ""),
    ("same link: compile hint + gzip", 1.76, 0.75, "yes"),
    (
        "modulepreload of run.js's 13 modules (the same run without: 1.29 / 0.53)",
        1.39,
        0.51,
        "no: noise",
    ),
    ("run.js before plotly.js, plotly.js `defer` (without: 1.29 / 0.53)", 1.31, 0.47, "no: noise"),
    (
        "plotly.js's script in <head> with fetchpriority=high (without: 1.84 / 0.80)",
        1.81,
        0.77,
        "no: noise",
    ),
    (
        "run.js sends the 20 series requests before the rest of its start-up (two runs: "
        "1.48 / 0.74 against 1.41 / 0.85, then 1.36 / 0.72 against 1.34 / 0.71)",
        1.36,
        0.72,
        "no: noise",
    ),
    (
        "scattergl (WebGL) traces for the series, software GL here (without: 1.90 / 0.70)",
        2.63,
        1.54,
        "no: slower",
    ),
    (
        "plotly.js-cartesian-dist-min 4.1.1 (1.5 MB): on npm, no PyPI package ships it",
        1.16,
        0.48,
        "no: not on PyPI",
    ),
    ("cartesian bundle + compile hint", 0.97, 0.49, "no: not on PyPI"),
)

# Runs before the page's own scripts: marks the moment plotly.js has run (its `load` event).
MARK_PLOTLY_READY = """document.addEventListener('load', event => {
  if (event.target.id === 'plotly-js') performance.mark('bench:plotly-ready');
}, true);"""
# Milliseconds from navigation start to each stage of a load, read once it has drawn.
COLD_STAGES = """() => {
  const resources = performance.getEntriesByType('resource');
  const last = part => Math.max(...resources.filter(e => e.name.includes(part))
                                           .map(e => e.responseEnd));
  return {
    "the page's scripts and styles fetched": last('/static/'),
    'plotly.js downloaded': last('/vendor/plotly'),
    'every series fetched (20 requests)': last('/metrics/'),
    'plotly.js compiled and run': performance.getEntriesByName('bench:plotly-ready')[0].startTime,
    'all charts drawn': performance.getEntriesByName('callboard:charts-ready')[0].startTime,
  };
}"""

# Runs in the page: POST an epoch; resolve with the milliseconds until it was drawn in
# the first chart, in every chart in view, and in every chart (the page's `callboard:drawn`
# events, sent once the frame that drew them has painted).
POST_AND_TIME = """async ([url, body, epoch]) => {
  const chart = document.querySelector('#charts .chart');
  const times = {};
  const drawn = new Promise((resolve, reject) => {
    const check = event => {
      const x = chart.data[0].x;
      if (x[x.length - 1] !== epoch) return;
      times[event.detail.scope] = event.detail.at;
      if (times.all === undefined) return;
      document.removeEventListener('callboard:drawn', check);
      resolve();
    };
    document.addEventListener('callboard:drawn', check);
    setTimeout(() => reject(new Error('epoch ' + epoch + ' not drawn in 20 s')), 20000);
  });
  const start = performance.now();
  const answer = await fetch(url, {method: 'POST', body,
                                   headers: {'Content-Type': 'application/json'}});
  if (!answer.ok) throw new Error('POST answered ' + answer.status);
  await drawn;
  return [times.first - start, times.visible - start, times.all - start];
}"""


def metrics_at(epoch, keys=KEYS):
    """Plausible noisy curves: losses fall, scores rise."""
    values = {}
    for i, key in enumerate(keys):
        trend = 1 / math.sqrt(1 + epoch / 50)
        noise = 0.02 * math.sin(epoch * 0.37 + i) + 0.01 * math.sin(epoch * 2.1 + 3 * i)
        rising = FAMILIES.index(key.removeprefix("val_")) in (1, 2, 3, 4, 7, 8)
        values[key] = (1 - trend if rising else trend) + noise + (0.03 if "val_" in key else 0)
    return values


def ingest(root, points):
    """Create the run and post `points` epochs of every metric; return (run id, seconds)."""
    http = JsonConnection(root, timeout=600)
    run_id = http.post("/api/v1/runs", {"name": f"bench-20x{points}", "project": "bench"})["id"]
    started = time.perf_counter()
    http.post(
        f"/api/v1/runs/{run_id}/events",
        {"events": [{"seq": 1, "kind": "train_begin", "data": {"epochs": points + 1000}}]},
    )
    for first in range(0, points, BATCH):
        events = [
            {"seq": epoch + 2, "kind": "epoch_end", "epoch": epoch, "metrics": metrics_at(epoch)}
            for epoch in range(first, min(points, first + BATCH))
        ]
        http.post(f"/api/v1/runs/{run_id}/events", {"events": events})
    http.close()
    return run_id, time.perf_counter() - started


def measure_loads(browser, url, colds, warms):
    """Seconds from navigation start to every chart drawn: `colds` cold loads (each in a
    fresh context), then `warms` more in the last one. Returns (cold seconds, warm
    seconds, each cold load's stages (`COLD_STAGES`), charts, points drawn)."""
    cold, warm, stages = [], [], []
    for context_number in range(colds):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(MARK_PLOTLY_READY)
        page = context.new_page()
        for load in range(1 + (warms if context_number == colds - 1 else 0)):
            page.goto(url)
            page.wait_for_selector("body[data-charts-ready=true]", timeout=120_000)
            found = {name: ms / 1000 for name, ms in page.evaluate(COLD_STAGES).items()}
            (warm if load else cold).append(found["all charts drawn"])
            if not load:
                stages.append(found)
        charts = page.evaluate("() => document.querySelectorAll('#charts .chart').length")
        drawn = page.evaluate("() => Number(document.body.dataset.points)")
        context.close()
    return cold, warm, stages, charts, drawn


def measure_live(browser, url, root, run_id, first_epoch, posts):
    """Milliseconds from POST to drawn, for `posts` epochs posted one at a time."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-charts-ready=true]", timeout=120_000)
    page.wait_for_selector("#live-status[data-state=live]")
    latencies = []
    for i in range(posts):
        epoch = first_epoch + i
        body = json.dumps(
            {
                "events": [
                    {
                        "seq": epoch + 2,
                        "kind": "epoch_end",
                        "epoch": epoch,
                        "metrics": metrics_at(epoch),
                    }
                ]
            }
        )
        url_events = f"{root}/api/v1/runs/{run_id}/events"
        latencies.append(page.evaluate(POST_AND_TIME, [url_events, body, epoch]))
        page.wait_for_timeout(100)
    context.close()
    return latencies


def run(quick=False):
    """Measure; return a `Report`."""
    from playwright.sync_api import sync_playwright

    from tests.server_process import ServerProcess

    points = 10_000 if quick else 100_000
    colds, warms = (1, 2) if quick else (3, 4)
    posts = 10 if quick else 30
    with tempfile.TemporaryDirectory() as folder:
        server = ServerProcess(f"sqlite:///{Path(folder) / 'dashboard.db'}").start()
        try:
            run_id, ingest_s = ingest(server.root, points)
            url = f"{server.root}/runs/{run_id}"
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                cold_s, warm_s, stages, charts, drawn = measure_loads(browser, url, colds, warms)
                live_ms = measure_live(browser, url, server.root, run_id, points, posts)
                browser.close()
        finally:
            server.stop()
    first_ms, visible_ms, all_ms = ([sample[i] for sample in live_ms] for i in range(3))
    median_cold = sorted(cold_s)[len(cold_s) // 2]
    median_warm = sorted(warm_s)[len(warm_s) // 2]
    report = Report("Dashboard: a 20-metric run's page in Chromium")
    report.rows = [
        _row(f"all {charts} charts drawn, cold median (s)", median_cold, LOAD_TARGET_S),
        _row(f"all {charts} charts drawn, warm median (s)", median_warm, WARM_TARGET_S),
        _row("POST → pixel in the first chart, p50 (ms)", percentile(first_ms, 50)),
        _row("POST → pixel in the first chart, p95 (ms)", percentile(first_ms, 95), LIVE_TARGET_MS),
        _row("POST → every chart in view drawn, p50 (ms)", percentile(visible_ms, 50)),
        _row("POST → every chart in view drawn, p95 (ms)", percentile(visible_ms, 95)),
        _row("POST → all 10 charts drawn, p50 (ms)", percentile(all_ms, 50)),
        _row("POST → all 10 charts drawn, p95 (ms)", percentile(all_ms, 95)),
    ]
    report.notes = [
        f"Before issue 15 (this table at 55d48db): cold {PREVIOUS_COLD_S} s, warm "
        f"{PREVIOUS_WARM_S} s; the issue measured 3.1 s and 1.1 s. Now cold {median_cold:.2f} s "
        f"({median_cold / PREVIOUS_COLD_S:.0%} of before), warm {median_warm:.2f} s "
        f"({median_warm / PREVIOUS_WARM_S:.0%}).",
        f"{len(KEYS)} metrics × {points:,} epochs ({len(KEYS) * points:,} points), "
        f"ingested through the events API in {ingest_s:.1f} s; the page drew "
        f"{drawn:,} points (the server downsamples to about one point per pixel of width, "
        "keeping each bucket's min and max).",
        f"Loads: cold {', '.join(f'{s:.2f}' for s in cold_s)} s, each in a fresh browser "
        f"context; then warm {', '.join(f'{s:.2f}' for s in warm_s)} s. Live: {len(live_ms)} "
        "epochs posted one at a time by the page, each with all 20 metrics, so all 10 charts "
        "change: the page redraws them one per task, top to bottom, those in view (6 at "
        "1280×900) first; plotly.js spends about 20 ms of script per chart redraw on this machine.",
        "Chromium headless, software rendering (--disable-gpu), server and browser on one "
        "machine; SQLite.",
    ]
    report.tables = [
        (
            "Where the median cold load's time goes (seconds from navigation start):",
            [
                {"stage": stage, "at (s)": at}
                for stage, at in sorted(stages[cold_s.index(median_cold)].items(), key=stage_time)
            ],
        ),
        (
            "What was tried for a fast first load (issue 15), measured once side by side: "
            "interleaved A/B runs of the load above (4 to 8 fresh contexts each, median; warm = "
            "the 2nd and 3rd load of each) on this 2-core machine while other work ran "
            f"(load average {ATTEMPTS_LOAD}), so compare rows with each other, not with the "
            "table above:",
            [
                {"attempt": attempt, "cold (s)": cold, "warm (s)": warm, "kept": kept}
                for attempt, cold, warm, kept in ATTEMPTS
            ],
        ),
    ]
    return report


def stage_time(stage):
    return stage[1]


def _row(measure, value, target=None):
    holds = "" if target is None else ("yes" if value < target else "NO")
    return {
        "measure": measure,
        "Callboard": value,
        "target": "" if target is None else f"< {target:g}",
        "holds": holds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 metrics × 10k points")
    args = parser.parse_args(argv)
    print(f"Machine: {machine_info()}\n", flush=True)
    print(run(quick=args.quick).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
