"""System metrics end to end: a real Keras fit samples its machine into a real server, and
the run page draws the samples in their own System section."""

import time

import httpx
import keras
import pytest

from callboard.client import RemoteMonitor
from callboard.client._system_metrics import GpuReader

from .test_dashboard import assert_clean
from .test_training import find_run, series, unique
from .training import slow_batches, tiny_data, tiny_model

MOST_EPOCHS = 300  # 0.4 s each: the fit ends long before, once the server holds the samples
SAMPLES = 2

# Titles and x titles of the charts in `selector`, and each one's count of plotted points.
CHARTS_IN = """selector => [...document.querySelectorAll(`${selector} .chart.js-plotly-plot`)]
  .map(div => ({title: div.layout.title.text, x: div.layout.xaxis.title.text,
                points: div.data.filter((trace, i) => i % 2 === 0)
                  .reduce((sum, trace) => sum + trace.x.length, 0)}))"""


def stored_points(root, run_id, key):
    answer = httpx.get(f"{root}/api/v1/runs/{run_id}/metrics/{key}")
    return answer.json()["points"] if answer.status_code == 200 else []


def stop_once_stored(root, name, keys, count):
    """A callback that ends the fit once the server holds `count` points of every key."""

    def check(epoch, logs):
        runs = httpx.get(f"{root}/api/v1/runs", params={"name": name}).json()["runs"]
        if runs and all(len(stored_points(root, runs[0]["id"], key)) >= count for key in keys):
            callback.model.stop_training = True

    callback = keras.callbacks.LambdaCallback(on_epoch_end=check)
    return callback


def sampled_fit(root, name, keys):
    """Fit with `system_metrics_interval=1` until the server holds 2 samples of `keys`."""
    x, y = tiny_data(samples=64)
    history = tiny_model().fit(
        x,
        y,
        epochs=MOST_EPOCHS,
        batch_size=8,
        verbose=0,
        callbacks=[
            RemoteMonitor(root=root, run=name, project="system", system_metrics_interval=1),
            slow_batches(0.05),
            stop_once_stored(root, name, keys, SAMPLES),
        ],
    )
    return find_run(root, name), history.history


@pytest.fixture(scope="module")
def sampled_run(live_server):
    name = unique("system-metrics")
    started = time.monotonic()
    run, history = sampled_fit(live_server.root, name, ["system/cpu_percent", "system/memory_mb"])
    return run, history, time.monotonic() - started


def test_a_fit_stores_cpu_and_memory_samples(live_server, sampled_run):
    run, history, seconds = sampled_run
    root = live_server.root
    assert len(history["loss"]) < MOST_EPOCHS  # ended by the samples, not by the epoch count
    cpu = stored_points(root, run["id"], "system/cpu_percent")
    memory = stored_points(root, run["id"], "system/memory_mb")
    assert len(cpu) >= SAMPLES and len(memory) >= SAMPLES
    assert [p["step"] for p in cpu] == list(range(len(cpu)))  # the sample numbers
    assert all(0 <= p["value"] <= 100 and p["epoch"] is None for p in cpu), cpu
    assert all(50 < p["value"] < 64_000 for p in memory), memory  # TensorFlow alone takes more
    times = [p["time"] for p in cpu]
    assert times == sorted(times) and times[-1] - times[0] >= 0.9 * (len(cpu) - 1)
    keys = httpx.get(f"{root}/api/v1/runs/{run['id']}/metrics").json()["keys"]
    assert {"system/process_cpu_percent", "system/memory_percent"} <= set(keys)
    # The training's own series are untouched by the samples.
    assert series(root, run["id"], "loss") == list(enumerate(history["loss"]))
    detail = httpx.get(f"{root}/api/v1/runs/{run['id']}").json()
    assert detail["main_metric"] == "loss" and detail["epochs_done"] == len(history["loss"])


def test_gpu_series_are_stored_where_nvml_sees_a_gpu(live_server):
    gpus = GpuReader.open()
    if gpus is None:
        pytest.skip("no NVIDIA GPU visible to NVML (nvidia-ml-py)")
    gpus.close()
    keys = ["system/gpu0_utilization", "system/gpu0_memory_mb", "system/gpu0_memory_percent"]
    run, _ = sampled_fit(live_server.root, unique("system-gpu"), keys)
    for key in keys:
        points = stored_points(live_server.root, run["id"], key)
        assert len(points) >= SAMPLES and all(p["value"] >= 0 for p in points), key


def test_run_page_draws_system_metrics_in_their_own_section(live_server, sampled_run, page):
    run, _, _ = sampled_run
    root = live_server.root
    page.goto(f"{root}/runs/{run['id']}")
    page.wait_for_selector("body[data-charts-ready=true]")
    system = {chart["title"]: chart for chart in page.evaluate(CHARTS_IN, "#system-charts")}
    training = {chart["title"] for chart in page.evaluate(CHARTS_IN, "#charts")}
    assert {"cpu percent", "memory mb", "process cpu percent", "memory percent"} <= set(system)
    assert all(chart["x"] == "sample" for chart in system.values()), system
    assert system["cpu percent"]["points"] >= SAMPLES
    assert "loss" in training and not any("cpu" in title for title in training), training
    assert page.locator("#system-empty").is_hidden()
    heading = page.get_by_role("heading", name="System", exact=True)
    assert heading.is_visible()
    metrics_box = page.locator("#charts").bounding_box()
    assert heading.bounding_box()["y"] > metrics_box["y"] + metrics_box["height"]
    # A sample arriving live joins its chart in the System section.
    before = system["cpu percent"]["points"]
    sample = {"seq": 2**62, "kind": "metrics", "step": 1000, "metrics": {"system/cpu_percent": 7}}
    posted = httpx.post(f"{root}/api/v1/runs/{run['id']}/events", json={"events": [sample]})
    posted.raise_for_status()
    page.wait_for_function(
        f"""([selector, count]) => ({CHARTS_IN})(selector)
              .some(chart => chart.title === "cpu percent" && chart.points === count)""",
        arg=["#system-charts", before + 1],
    )
    assert_clean(page)


def test_a_run_without_system_metrics_says_how_to_get_them(live_server, page):
    root = live_server.root
    answer = httpx.post(f"{root}/api/v1/runs", json={"name": unique("no-system")})
    run_id = answer.json()["id"]
    page.goto(f"{root}/runs/{run_id}")
    page.wait_for_selector("body[data-charts-ready=true]")
    assert page.locator("#system-empty").is_visible()
    assert "system_metrics_interval" in page.locator("#system-empty").text_content()
    assert page.evaluate(CHARTS_IN, "#system-charts") == []
    assert_clean(page)
