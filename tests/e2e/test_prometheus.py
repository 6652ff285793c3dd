"""Prometheus scrapes a real server while a real Keras fit runs: its latest `loss` is a gauge."""

import threading
import time
import uuid

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from callboard.client import RemoteMonitor
from tests.server.test_auth import make_token
from tests.server_process import ServerProcess

from .training import slow_batches, tiny_data, tiny_model

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture(scope="module")
def tokens_server(tmp_path_factory):
    """A real server with tokens: `(server, {"admin", "vision", "text"})`; the last two are
    read tokens scoped to their project."""
    url = f"sqlite:///{tmp_path_factory.mktemp('prometheus') / 'prometheus.db'}"
    admin = make_token(url, "admin", "admin")
    server = ServerProcess(url).start()
    tokens = {"admin": admin}
    for project in ("vision", "text"):
        made = httpx.post(
            f"{server.root}/api/v1/tokens",
            headers=bearer(admin),
            json={"name": f"{project}-reader", "role": "read", "project": project},
        )
        assert made.status_code == 201, made.text
        tokens[project] = made.json()["token"]
    yield server, tokens
    server.stop()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def loss_gauges(root, token, run_name):
    """This run's `callboard_run_metric{metric="loss"}` samples, scraped as OpenMetrics."""
    answer = httpx.get(f"{root}/metrics", headers={**bearer(token), "Accept": OPENMETRICS})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    return [
        sample
        for family in text_string_to_metric_families(answer.text)
        if family.name == "callboard_run_metric"
        for sample in family.samples
        if sample.labels["metric"] == "loss" and sample.labels["run"] == run_name
    ]


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)
    return value


def test_a_running_fits_latest_loss_is_scraped_with_its_run_and_project(tokens_server):
    server, tokens = tokens_server
    name = f"scraped-{uuid.uuid4().hex[:8]}"
    x, y = tiny_data()
    fitted = {}

    def train():
        fitted["history"] = tiny_model().fit(
            x,
            y,
            epochs=12,
            batch_size=16,
            verbose=0,
            callbacks=[
                slow_batches(0.05),
                RemoteMonitor(root=server.root, run=name, project="vision", token=tokens["admin"]),
            ],
        )

    training = threading.Thread(target=train)
    training.start()
    try:
        seen = wait_for(lambda: loss_gauges(server.root, tokens["vision"], name), "a loss gauge")
        run = httpx.get(
            f"{server.root}/api/v1/runs", params={"name": name}, headers=bearer(tokens["admin"])
        ).json()["runs"][0]
        assert run["status"] == "running" and not fitted  # scraped while the fit runs
        assert seen[0].labels == {
            "project": "vision",
            "run": name,
            "run_id": str(run["id"]),
            "metric": "loss",
        }
        assert httpx.get(f"{server.root}/metrics").status_code == 401
        assert loss_gauges(server.root, tokens["text"], name) == []  # another project's reader
        # Later scrapes follow the fit: each shows the latest epoch's loss.
        later = wait_for(
            lambda: [s for s in loss_gauges(server.root, tokens["vision"], name) if s != seen[0]],
            "a later epoch's loss",
        )
    finally:
        training.join(120)
    losses = fitted["history"].history["loss"]
    assert seen[0].value in losses and later[0].value in losses
    assert losses.index(later[0].value) > losses.index(seen[0].value)
    # The fit ended: its run is no longer running, and its gauges are gone.
    wait_for(lambda: not loss_gauges(server.root, tokens["vision"], name), "gauges gone")
