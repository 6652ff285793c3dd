"""Every Callboard callback in a real `fit()` on this process's Keras backend.

Run as `python -m tests.e2e.backend_training ROOT PREFIX FOLDER [SCENARIO,...]` with
`KERAS_BACKEND` set (Keras fixes its backend per process). Each scenario trains
a tiny model into the run `PREFIX-<scenario>` of project "backends", with
RemoteMonitor and RemoteStop beside the callback it exercises; the last line of
output is JSON: the backend, and per scenario its history, or the error it
raised (so one broken scenario does not hide the others).
"""

import json
import os
import sys
import time
import traceback

import httpx
import keras
import numpy as np

from callboard.client import (
    BackupAndRestore,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    RemoteControl,
    RemoteMonitor,
    RemoteStop,
    TerminateOnNaN,
)
from tests.e2e.training import tiny_data, tiny_model

EPOCHS = 3
STOP_AFTER = 2  # epochs before another client presses Stop
MOST_EPOCHS = 500  # a remote-stop scenario that reaches this was never stopped
NEW_RATE = 0.0005  # what the remote-control scenario's set_learning_rate asks for
BATCH_SIZE = 16  # 96 training samples after the validation split: 6 steps an epoch


class Scenario:
    """One `fit()`: the callbacks beside RemoteMonitor and RemoteStop, and its data."""

    def __init__(self, root, prefix, folder):
        self.root, self.prefix, self.folder = root, prefix, folder

    def monitor(self, name, **kwargs):
        return RemoteMonitor(
            root=self.root, run=f"{self.prefix}-{name}", project="backends", **kwargs
        )

    def fit(self, name, callbacks, epochs=EPOCHS, model=None, data=None, monitor=None, **kwargs):
        x, y = data or tiny_data()
        model = model or tiny_model()
        monitor = monitor or self.monitor(name)
        history = model.fit(
            x,
            y,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            validation_split=0.25,
            shuffle=False,
            verbose=0,
            callbacks=[monitor, RemoteStop(root=self.root, interval=0.05), *callbacks],
            **kwargs,
        )
        return history.history

    def remote_stop(self, name, **monitor_args):
        """Another client presses Stop after `STOP_AFTER` epochs; the poller ends fit()."""
        monitor = self.monitor(name, **monitor_args)

        def press_stop(epoch, logs):
            if epoch + 1 == STOP_AFTER:
                url = f"{self.root}/api/v1/runs/{monitor.run.id}/stop"
                httpx.post(url, json={"reason": "e2e"}).raise_for_status()

        work = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: time.sleep(0.005), on_epoch_end=press_stop
        )
        work.async_safe = True  # keep Keras's thread-pool dispatch on JAX and torch
        return self.fit(name, [work], epochs=MOST_EPOCHS, monitor=monitor)

    def remote_control(self, name):
        """Another client sets the learning rate after epoch 0, then asks for a stop after
        epoch 1: RemoteControl applies both, and the fit ends at an epoch's end."""
        monitor = self.monitor(name)

        def steer(epoch, logs):
            commands = {0: {"kind": "set_learning_rate", "value": NEW_RATE}}
            commands[STOP_AFTER - 1] = {"kind": "stop_after_epoch"}
            if epoch in commands:
                url = f"{self.root}/api/v1/runs/{monitor.run.id}/commands"
                httpx.post(url, json=commands[epoch]).raise_for_status()

        work = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: time.sleep(0.005), on_epoch_end=steer
        )
        work.async_safe = True
        model = tiny_model()
        history = self.fit(
            name, [work, RemoteControl()], epochs=MOST_EPOCHS, model=model, monitor=monitor
        )
        rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        return {**history, "final_learning_rate": [rate]}

    def model_checkpoint(self, name):
        path = os.path.join(self.folder, "model.keras")
        return self.fit(name, [ModelCheckpoint(path)])

    def early_stopping(self, name):
        # No change counts as an improvement: training stops after epoch 1.
        return self.fit(name, [EarlyStopping(monitor="loss", patience=0, min_delta=1e9)])

    def learning_rate_scheduler(self, name):
        return self.fit(name, [LearningRateScheduler(lambda epoch: 0.01 / (epoch + 1))])

    def reduce_lr_on_plateau(self, name):
        # No plateau ever improves enough: the rate halves after epochs 1 and 2.
        reduce = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9)
        return self.fit(name, [reduce])

    def terminate_on_nan(self, name):
        x, y = tiny_data()
        y[20] = np.inf  # in the second batch
        return self.fit(name, [TerminateOnNaN()], data=(x, y))

    def backup_and_restore(self, name):
        """Interrupted at epoch 2, then resumed: one run, with a "restored" event."""
        backup = BackupAndRestore(os.path.join(self.folder, "backup"))
        model = tiny_model()
        interrupted = []

        def interrupt(epoch, logs):
            if epoch == 2 and not interrupted:
                interrupted.append(epoch)
                raise RuntimeError("interrupted")

        interrupter = keras.callbacks.LambdaCallback(on_epoch_begin=interrupt)
        try:
            self.fit(name, [backup, interrupter], epochs=4, model=model)
        except RuntimeError as exc:
            if str(exc) != "interrupted":
                raise
        return self.fit(name, [backup, interrupter], epochs=4, model=model)


SCENARIOS = {
    "remote-stop": lambda s, name: s.remote_stop(name),
    "remote-stop-batches": lambda s, name: s.remote_stop(name, batch_frequency=2),
    "remote-control": Scenario.remote_control,
    "model-checkpoint": Scenario.model_checkpoint,
    "early-stopping": Scenario.early_stopping,
    "learning-rate-scheduler": Scenario.learning_rate_scheduler,
    "reduce-lr-on-plateau": Scenario.reduce_lr_on_plateau,
    "terminate-on-nan": Scenario.terminate_on_nan,
    "backup-and-restore": Scenario.backup_and_restore,
}


def main(root, prefix, folder, only=""):
    """Train every scenario, or only those named in `only` (comma-separated)."""
    scenario = Scenario(root, prefix, folder)
    results = {}
    for name, train in SCENARIOS.items():
        if only and name not in only.split(","):
            continue
        try:
            history = train(scenario, name)
            results[name] = {"history": {k: [float(v) for v in vs] for k, vs in history.items()}}
        except Exception:  # reported per scenario; the test names it
            results[name] = {"error": traceback.format_exc()}
    return {"backend": keras.backend.backend(), "results": results}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
