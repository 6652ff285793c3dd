"""RemoteControl in a real Keras `fit()` against a real `callboard serve`.

Someone steers the training through the REST API, as the CLI and the run page
do, from another thread; each command takes effect in the running `fit()` and
ends `applied` (or `refused`, with its reason) at the epoch and step reported.
"""

import threading
import time

import httpx
import keras
import pytest

from callboard.client import ModelCheckpoint, RemoteControl, RemoteMonitor

from .test_training import unique
from .training import slow_batches, tiny_data, tiny_model

DEADLINE = 60  # seconds any awaited change may take
EPOCHS = 500  # more than a test waits for: only a command ends these fits early
BATCHES = 8  # 128 samples, batch size 16


def wait_for(condition, what, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)
    return value


class Steering:
    """Talks to the server as a person with the run page open: finds the run, sends commands."""

    def __init__(self, root, name):
        self.http = httpx.Client(base_url=f"{root}/api/v1", timeout=30)
        self.name = name
        self.run_id = None

    def find_run(self):
        def live_run():
            runs = self.http.get("/runs", params={"name": self.name}).json()["runs"]
            return runs and runs[0]["status"] == "running" and runs[0]["id"]

        self.run_id = wait_for(live_run, f"the run {self.name!r}")
        return self.run_id

    def send(self, kind, value=None):
        body = {"kind": kind} if value is None else {"kind": kind, "value": value}
        answer = self.http.post(f"/runs/{self.run_id}/commands", json=body)
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    def commands(self):
        answer = self.http.get(f"/runs/{self.run_id}/commands")
        assert answer.status_code == 200, answer.text
        return {command["id"]: command for command in answer.json()["commands"]}

    def settled(self, command_id):
        """The command once the training applied or refused it."""
        return wait_for(
            lambda: (c := self.commands()[command_id])["state"] in ("applied", "refused") and c,
            f"command {command_id} settling",
        )

    def status(self):
        return self.http.get(f"/runs/{self.run_id}").json()["status"]

    def status_once_not(self, status):
        """The run's status once it is no longer `status`."""
        return wait_for(
            lambda: (now := self.status()) != status and now, f"the run leaving {status}"
        )

    def events(self, kind):
        answer = self.http.get(f"/runs/{self.run_id}/events", params={"kind": kind})
        return answer.json()["events"]


def fit_steered(steering, steer, callbacks, model=None):
    """Fit while `steer(steering)` runs on another thread; its failure fails the test.

    Whatever `steer` did, the run is stopped at the end, so the fit always returns.
    """
    failures = []

    def run_steer():
        try:
            steering.find_run()
            steer(steering)
        except BaseException as exc:
            failures.append(exc)
            if steering.run_id is not None:
                steering.http.post(f"/runs/{steering.run_id}/stop", json={"reason": "test failed"})

    thread = threading.Thread(target=run_steer, daemon=True)
    thread.start()
    x, y = tiny_data()
    model = model or tiny_model()
    history = model.fit(
        x, y, epochs=EPOCHS, batch_size=16, verbose=0, callbacks=[*callbacks, slow_batches(0.01)]
    )
    thread.join(DEADLINE)
    if failures:
        raise failures[0]
    assert not thread.is_alive(), "the steering never finished"
    return model, history.history


class WhereStopped(keras.callbacks.Callback):
    """Placed after RemoteControl: each batch begun, and the first that begins told to stop."""

    def __init__(self):
        super().__init__()
        self.begun = []
        self.at = None
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.begun.append((self._epoch, batch))
        if self.at is None and self.model.stop_training:
            self.at = (self._epoch, batch)


def stop_after_epochs(epochs, sent):
    """Steering that sends `stop` once the run has `epochs` epochs done."""

    def steer(steering):
        wait_for(
            lambda: steering.http.get(f"/runs/{steering.run_id}").json()["epochs_done"] >= epochs,
            f"{epochs} epochs",
        )
        sent["id"] = steering.send("stop")

    return steer


def test_stop_from_the_api_ends_the_fit_with_the_next_batch(live_server):
    steering = Steering(live_server.root, unique("rc-stop"))
    sent, where = {}, WhereStopped()
    monitor = RemoteMonitor(root=live_server.root, run=steering.name, project="e2e")
    _, history = fit_steered(
        steering, stop_after_epochs(1, sent), [monitor, RemoteControl(), where]
    )
    command = steering.settled(sent["id"])
    assert command["state"] == "applied" and where.at is not None
    assert where.begun[-1] == where.at  # the batch about to start when it applied was the last
    assert len(history["loss"]) == where.at[0] + 1 < EPOCHS
    assert steering.status_once_not("running") == "stopped"


def test_a_stop_reports_the_epoch_and_step_where_it_took_effect(live_server):
    steering = Steering(live_server.root, unique("rc-where"))
    sent, where = {}, WhereStopped()
    monitor = RemoteMonitor(root=live_server.root, run=steering.name, project="e2e")
    fit_steered(steering, stop_after_epochs(2, sent), [monitor, RemoteControl(), where])
    command = steering.settled(sent["id"])
    epoch, batch = where.at
    assert (command["epoch"], command["step"]) == (epoch, epoch * BATCHES + batch)


def test_pause_then_checkpoint_and_set_lr_while_paused_then_resume_and_stop_after_epoch(
    live_server, tmp_path
):
    steering = Steering(live_server.root, unique("rc-flow"))
    pattern = str(tmp_path / "ckpt-{epoch:03d}-{batch:02d}.weights.h5")
    seen = {}

    def steer(steering):
        seen["pause"] = pause = steering.settled(steering.send("pause"))
        assert pause["state"] == "applied", pause
        seen["paused_status"] = steering.status_once_not("running")
        lr = steering.settled(steering.send("set_learning_rate", 0.0005))
        checkpoint = steering.settled(steering.send("checkpoint"))
        seen["while_paused"] = (lr, checkpoint, steering.status())
        assert steering.settled(steering.send("resume"))["state"] == "applied"
        seen["resumed_status"] = steering.status_once_not("paused")
        seen["stop"] = steering.settled(steering.send("stop_after_epoch"))

    model, history = fit_steered(
        steering,
        steer,
        [
            RemoteControl(),  # ahead of the monitor: it finds the monitor's run all the same
            RemoteMonitor(root=live_server.root, run=steering.name, project="e2e"),
            ModelCheckpoint(pattern, save_weights_only=True, save_freq=10**9),
        ],
    )
    assert seen["paused_status"] == "paused" and seen["resumed_status"] == "running"
    lr, checkpoint, status_while_paused = seen["while_paused"]
    assert status_while_paused == "paused"
    # Both applied at the batch that was waiting: the same epoch and step as the pause.
    assert lr["state"] == "applied" and checkpoint["state"] == "applied", (lr, checkpoint)
    where = (seen["pause"]["epoch"], seen["pause"]["step"])
    assert None not in where
    assert (lr["epoch"], lr["step"]) == where == (checkpoint["epoch"], checkpoint["step"])
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(5e-4)
    [saved] = steering.events("checkpoint_saved")
    assert checkpoint["detail"] == f"saved {saved['data']['path']}"
    assert saved["data"]["path"].startswith(str(tmp_path)) and list(tmp_path.iterdir())
    [changed] = steering.events("lr_changed")
    assert changed["data"]["new"] == 0.0005
    rates = steering.http.get(f"/runs/{steering.run_id}/metrics/learning_rate").json()["points"]
    assert 0.0005 in [point["value"] for point in rates]
    stop = seen["stop"]
    assert stop["state"] == "applied" and stop["epoch"] == len(history["loss"]) - 1
    assert steering.status_once_not("running") == "stopped"


def test_without_a_monitor_it_opens_its_own_run_and_refuses_what_it_cannot_do(live_server):
    steering = Steering(live_server.root, unique("rc-own"))
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=100, decay_rate=0.9)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    outcomes = {}

    def steer(steering):
        outcomes["lr"] = steering.settled(steering.send("set_learning_rate", 0.1))
        outcomes["checkpoint"] = steering.settled(steering.send("checkpoint"))
        outcomes["stop"] = steering.settled(steering.send("stop"))

    fit_steered(
        steering,
        steer,
        [RemoteControl(root=live_server.root, run=steering.name, project="e2e")],
        model=model,
    )
    assert outcomes["lr"]["state"] == "refused"
    assert outcomes["lr"]["detail"] == (
        "the optimizer's learning rate is a schedule (ExponentialDecay), not a variable"
    )
    assert outcomes["checkpoint"]["state"] == "refused"
    assert outcomes["checkpoint"]["detail"] == (
        "no ModelCheckpoint in this fit and no checkpoint_path given"
    )
    assert outcomes["stop"]["state"] == "applied"
    assert steering.status_once_not("running") == "stopped"
    [end] = steering.events("train_end")
    assert end["data"]["status"] == "stopped"
