"""Keras 3 on the PyTorch backend: the same callbacks, against a real server.

The backend is chosen before Keras is imported, so the training runs in a
process of its own. On torch (a thread-safe backend) Keras dispatches batch
hooks to a thread pool, since RemoteMonitor and RemoteStop are async-safe.
"""

import json
import os
import subprocess
import sys

import httpx
import pytest

from .test_training import find_run, series, unique

TRAINING = """
import json, sys, threading, time
import httpx, keras
from callboard.client import RemoteMonitor, RemoteStop
from tests.e2e.training import tiny_data, tiny_model

root, name, epochs, stop_after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
x, y = tiny_data()
model = tiny_model()
monitor = RemoteMonitor(root=root, run=name, project="backends", batch_frequency=2)


def stop_from_outside(epoch, logs):
    if epoch + 1 == stop_after:  # another client presses Stop; the poller sees it
        run_id = monitor.run.id
        threading.Thread(
            target=httpx.post, args=(f"{root}/api/v1/runs/{run_id}/stop",), daemon=True
        ).start()


slow = keras.callbacks.LambdaCallback(
    on_train_batch_end=lambda batch, logs: time.sleep(0.01), on_epoch_end=stop_from_outside
)
slow.async_safe = True
history = model.fit(x, y, epochs=epochs, batch_size=16, validation_split=0.25, verbose=0,
                    callbacks=[monitor, RemoteStop(root=root, interval=0.2), slow])
print(json.dumps({"backend": keras.backend.backend(), "history": history.history}))
"""


def train_on_torch(root, name, epochs, stop_after):
    done = subprocess.run(
        [sys.executable, "-c", TRAINING, root, name, str(epochs), str(stop_after)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "KERAS_BACKEND": "torch"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_torch_backend_streams_every_epoch_and_batch_and_stops_remotely(live_server):
    pytest.importorskip("torch")
    name = unique("torch")
    result = train_on_torch(live_server.root, name, epochs=200, stop_after=3)
    assert result["backend"] == "torch"
    history = result["history"]
    epochs = len(history["loss"])
    assert 3 <= epochs < 200  # stopped by the remote Stop, a batch or an epoch later
    run = find_run(live_server.root, name)
    assert run["status"] == "stopped" and run["epochs_done"] == epochs
    for key, values in history.items():
        assert series(live_server.root, run["id"], key) == list(enumerate(values)), key
    # 96 training samples in batches of 16: 6 steps an epoch, a batch event every 2 steps.
    batch_steps = [step for step, _ in series(live_server.root, run["id"], "batch/loss")]
    assert batch_steps[: 3 * 3] == [2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert batch_steps == sorted(set(batch_steps))
    control = httpx.get(f"{live_server.root}/api/v1/runs/{run['id']}/control").json()
    assert control["state"] == "stopped"
