"""Every Callboard callback, on every Keras 3 backend, against a real server.

Keras fixes its backend per process, so each backend trains in a process of its
own (`backend_training.py`: one `fit()` per scenario, all in that one process).
On thread-safe backends (JAX, torch) Keras dispatches batch hooks to a thread
pool, since RemoteMonitor and RemoteStop are async-safe; on JAX a callback that
touched the model from another thread crashed `fit()` with "Buffer has been
deleted or donated". A backend is skipped only where its package is absent.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .backend_training import EPOCHS, MOST_EPOCHS, NEW_RATE, SCENARIOS, STOP_AFTER
from .test_training import find_run, series, unique

REPO = Path(__file__).resolve().parents[2]
BACKENDS = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}  # backend: package


def train_every_scenario(backend, root, prefix, folder):
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.backend_training", root, prefix, str(folder)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": backend},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    errors = {name: r["error"] for name, r in result["results"].items() if "error" in r}
    assert not errors, f"on {backend}: " + "\n".join(f"{n}:\n{e}" for n, e in errors.items())
    return {name: r["history"] for name, r in result["results"].items()}


class ServerRun:
    """A finished run on the server, read back over the API."""

    def __init__(self, root, name):
        self.root = root
        self.summary = find_run(root, name)
        self.id = self.summary["id"]

    def get(self, path, **params):
        return httpx.get(f"{self.root}/api/v1/runs/{self.id}{path}", params=params).json()

    @property
    def status(self):
        return self.get("")["status"]

    def events(self, kind):
        return self.get("/events", kind=kind)["events"]

    def series(self, key):
        return series(self.root, self.id, key)

    def assert_stores(self, history):
        for key, values in history.items():
            assert self.series(key) == list(enumerate(values)), key


def check_remote_stop(run, history, batches):
    epochs = len(history["loss"])
    assert STOP_AFTER <= epochs < MOST_EPOCHS  # stopped by the remote Stop
    assert run.status == "stopped" and run.get("")["epochs_done"] == epochs
    assert run.get("/control")["state"] == "stopped"
    run.assert_stores(history)
    keys = run.get("/metrics")["keys"]
    if not batches:
        assert "batch/loss" not in keys
        return
    # 6 steps an epoch, a batch event every 2 steps, also from Keras's thread pool.
    steps = [step for step, _ in run.series("batch/loss")]
    assert steps[: 3 * STOP_AFTER] == list(range(2, 6 * STOP_AFTER + 1, 2))
    assert steps == sorted(set(steps))


def check_remote_control(run, history):
    """The rate set and the stop after an epoch, sent while it trained, both applied."""
    [rate] = history.pop("final_learning_rate")
    epochs = len(history["loss"])
    assert STOP_AFTER <= epochs < MOST_EPOCHS  # stopped by the command
    assert rate == pytest.approx(NEW_RATE)
    assert run.status == "stopped" and run.get("")["epochs_done"] == epochs
    commands = run.get("/commands")["commands"]
    assert [(c["kind"], c["state"]) for c in commands] == [
        ("set_learning_rate", "applied"),
        ("stop_after_epoch", "applied"),
    ], commands
    assert commands[1]["epoch"] == epochs - 1  # it took effect at the last epoch's end
    run.assert_stores(history)


def check_model_checkpoint(run, history):
    assert run.status == "finished"
    run.assert_stores(history)
    saved = run.events("checkpoint_saved")
    assert [e["data"]["epoch"] for e in saved] == list(range(EPOCHS))
    assert all(Path(e["data"]["path"]).name == "model.keras" for e in saved)


def check_early_stopping(run, history):
    assert len(history["loss"]) == 2 and run.status == "stopped"
    run.assert_stores(history)
    [stop] = run.events("early_stop")
    assert stop["data"]["stopped_epoch"] == 1 and stop["data"]["monitor"] == "loss"


def check_rate_changes(run, history, rates):
    assert run.status == "finished"
    run.assert_stores(history)
    changes = run.events("lr_changed")
    assert [e["data"]["new"] for e in changes] == pytest.approx(rates, rel=1e-6)


def check_terminate_on_nan(run, history):
    assert len(history["loss"]) == 1 and run.status == "failed"
    [nan] = run.events("nan")
    assert nan["data"] == {"batch": 1, "epoch": 0}


def check_backup_and_restore(run, history):
    assert len(history["loss"]) == 2  # epochs 2 and 3, after the restore
    assert run.status == "finished"
    [restored] = run.events("restored")
    assert restored["data"] == {"epoch": 2}
    losses = run.series("loss")
    assert [epoch for epoch, _ in losses] == [0, 1, 2, 3]
    assert [value for _, value in losses[2:]] == history["loss"]


CHECKS = {
    "remote-stop": lambda run, history: check_remote_stop(run, history, batches=False),
    "remote-stop-batches": lambda run, history: check_remote_stop(run, history, batches=True),
    "remote-control": check_remote_control,
    "model-checkpoint": check_model_checkpoint,
    "early-stopping": check_early_stopping,
    "learning-rate-scheduler": lambda run, h: check_rate_changes(run, h, [0.01, 0.005, 0.01 / 3]),
    "reduce-lr-on-plateau": lambda run, h: check_rate_changes(run, h, [0.0005, 0.00025]),
    "terminate-on-nan": check_terminate_on_nan,
    "backup-and-restore": check_backup_and_restore,
}


def test_every_scenario_is_checked():
    assert set(CHECKS) == set(SCENARIOS)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_callback_trains_on_the_backend(live_server, tmp_path, backend):
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"{BACKENDS[backend]} is not installed")
    prefix = unique(backend)
    histories = train_every_scenario(backend, live_server.root, prefix, tmp_path)
    for name, history in histories.items():
        run = ServerRun(live_server.root, f"{prefix}-{name}")
        try:
            CHECKS[name](run, history)
        except AssertionError as exc:
            raise AssertionError(f"{name} on {backend}: {exc}") from exc
