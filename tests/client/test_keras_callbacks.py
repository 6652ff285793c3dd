"""Callboard's Keras callbacks: drop-ins that behave exactly like Keras's, and report actions.

Each equivalence test trains the same seeded model twice, once with the Keras
callback and once with ours, and compares the outcomes. Each reporting test
trains with a Callboard `RemoteMonitor` whose HTTP client is an
`httpx.MockTransport`, and checks the events that reached the "server".
"""

import json
import os
import subprocess
import sys

import httpx
import keras
import numpy as np
import pytest
from keras.src.utils.python_utils import is_default

import callboard.client as cb
from callboard.client import _exit_guard
from callboard.client._actions import as_number
from callboard.server.api.answers import Heartbeat

from .fake_server import FakeServer, control_answer, ingest_answer, problem, run_answer

EPOCHS = 4
BATCH_SIZE = 8  # 64 samples: 8 batches an epoch

ACTING = [
    "ModelCheckpoint",
    "EarlyStopping",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
    "BackupAndRestore",
]
PASSIVE = ["TensorBoard", "LambdaCallback", "CSVLogger", "ProgbarLogger", "History", "Callback"]


class RecordingServer:
    """Answers the client's API calls and records every run spec and posted event."""

    def __init__(self):
        self.specs = []
        self.posted = []  # (run id, event), in the order they arrived, duplicates included

    def handle(self, request):
        path = request.url.path
        if request.method == "POST" and path == "/api/v1/runs":
            spec = json.loads(request.content)
            uids = [s["uid"] for s in self.specs]
            self.specs.append(spec)
            run_id = uids.index(spec["uid"]) + 1 if spec["uid"] in uids else len(uids) + 1
            return httpx.Response(200, json=run_answer(run_id, spec))
        run_id = int(path.split("/")[4])
        if path.endswith("/events"):
            events = json.loads(request.content)["events"]
            self.posted.extend((run_id, event) for event in events)
            return httpx.Response(200, json=ingest_answer(len(events)))
        if path.endswith("/control"):
            return httpx.Response(200, json=control_answer(run_id, False))
        if path.endswith("/heartbeat"):
            return httpx.Response(200, json=Heartbeat(status="running").model_dump())
        return problem(404, f"no fake answer for {request.method} {path}")

    def client(self):
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def events(self, kind=None, run_id=None):
        return [
            event
            for rid, event in self.posted
            if (kind is None or event["kind"] == kind) and (run_id is None or rid == run_id)
        ]


@pytest.fixture
def server():
    return RecordingServer()


def monitor(server, tmp_path):
    return cb.RemoteMonitor(
        root="http://callboard.test",
        run="unit",
        client=server.client(),
        spool_dir=tmp_path / "spool",
        flush_timeout=5,
    )


def dataset(bad_sample=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32") + 1.0)[:, None]
    if bad_sample is not None:
        y[bad_sample] = np.inf
    return x, y


def make_model(learning_rate=0.05):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate), loss="mse")
    return model


def fit(callbacks, epochs=EPOCHS, model=None, data=None, **kwargs):
    model = model or make_model()
    x, y = data or dataset()
    history = model.fit(
        x, y, epochs=epochs, batch_size=BATCH_SIZE, shuffle=False, verbose=0,
        callbacks=callbacks, **kwargs,
    )  # fmt: skip
    return model, history.history


def same_weights(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights(), strict=True))


def status(server, run_id=None):
    return server.events("train_end", run_id)[-1]["data"]["status"]


# --- exports -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTING)
def test_acting_callbacks_subclass_keras_and_keep_its_batch_dispatch(name):
    ours, theirs = getattr(cb, name), getattr(keras.callbacks, name)
    assert issubclass(ours, theirs) and ours is not theirs
    for hook in ("on_batch_end", "on_train_batch_end", "on_test_batch_end"):
        # Overriding a batch hook Keras doesn't would turn off async batch dispatch.
        assert is_default(getattr(ours, hook)) == is_default(getattr(theirs, hook)), hook


@pytest.mark.parametrize("name", PASSIVE)
def test_passive_callbacks_are_the_keras_classes(name):
    assert getattr(cb, name) is getattr(keras.callbacks, name)
    assert name in cb.__all__ and name in dir(cb)


def test_importing_the_client_does_not_import_keras():
    code = "import sys, callboard.client; assert 'keras' not in sys.modules, 'keras imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_monitored_values_become_json_safe_floats():
    assert as_number(np.float32(0.5)) == 0.5
    assert as_number(keras.ops.convert_to_tensor(2.0)) == 2.0
    assert as_number(np.float64("nan")) == "NaN"
    assert as_number(float("-inf")) == "-Infinity"
    assert as_number(None) is None
    assert as_number(np.zeros(3)) is None


def test_callbacks_without_a_monitor_report_nothing_and_do_not_fail(tmp_path):
    callbacks = [
        cb.ModelCheckpoint(str(tmp_path / "m.keras"), monitor="loss"),
        cb.EarlyStopping(monitor="loss", min_delta=1000, patience=1),
        cb.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
        cb.ReduceLROnPlateau(monitor="loss", patience=0, mode="max"),
        cb.TerminateOnNaN(),
        cb.BackupAndRestore(str(tmp_path / "backup")),
    ]
    _, history = fit(callbacks)
    assert len(history["loss"]) == 2  # the early stop
    assert (tmp_path / "m.keras").exists()


# --- ModelCheckpoint -----------------------------------------------------------------------


def checkpoint_args(directory):
    # mode="max" on a falling loss: only the first epoch improves, the rest are skipped.
    return dict(
        filepath=str(directory / "w-{epoch:02d}-{loss:.3f}.weights.h5"),
        monitor="loss",
        mode="max",
        save_best_only=True,
        save_weights_only=True,
    )


def test_model_checkpoint_writes_the_same_files_as_keras(tmp_path):
    (tmp_path / "keras").mkdir()
    (tmp_path / "ours").mkdir()
    _, theirs = fit([keras.callbacks.ModelCheckpoint(**checkpoint_args(tmp_path / "keras"))])
    _, ours = fit([cb.ModelCheckpoint(**checkpoint_args(tmp_path / "ours"))])
    assert ours == theirs
    files = sorted(p.name for p in (tmp_path / "ours").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "keras").iterdir())
    assert len(files) == 1


def test_model_checkpoint_reports_only_files_really_written(tmp_path, server):
    every = cb.ModelCheckpoint(str(tmp_path / "all-{epoch}.keras"), monitor="loss")
    best = cb.ModelCheckpoint(**checkpoint_args(tmp_path))
    _, history = fit([monitor(server, tmp_path), every, best])
    saved = server.events("checkpoint_saved")
    assert sorted(e["data"]["path"] for e in saved) == sorted(
        str(p) for p in tmp_path.iterdir() if p.is_file()
    )
    assert len(saved) == EPOCHS + 1
    for event in saved:
        epoch = event["epoch"]
        assert event["data"]["epoch"] == epoch
        assert event["data"]["monitor"] == "loss"
        assert event["data"]["value"] == history["loss"][epoch]
    assert [e["epoch"] for e in saved if "w-" in e["data"]["path"]] == [0]
    assert status(server) == "finished"


def test_model_checkpoint_reports_every_overwrite_of_one_batch_checkpoint(tmp_path, server):
    path = tmp_path / "latest.weights.h5"
    check = cb.ModelCheckpoint(str(path), save_weights_only=True, save_freq=3, monitor="loss")
    fit([monitor(server, tmp_path), check], epochs=2)
    saved = server.events("checkpoint_saved")
    assert len(saved) == 16 // 3  # 16 batches, a save every third
    assert {e["data"]["path"] for e in saved} == {str(path)}
    assert [e["epoch"] for e in saved] == [0, 0, 1, 1, 1]


# --- EarlyStopping -------------------------------------------------------------------------


def stopping_args():
    # No epoch improves by 1000: training stops after `patience` epochs without progress.
    return dict(monitor="loss", min_delta=1000, patience=2, restore_best_weights=True)


def test_early_stopping_stops_and_restores_like_keras():
    theirs_cb = keras.callbacks.EarlyStopping(**stopping_args())
    ours_cb = cb.EarlyStopping(**stopping_args())
    theirs_model, theirs = fit([theirs_cb], epochs=6)
    ours_model, ours = fit([ours_cb], epochs=6)
    assert ours == theirs
    assert ours_cb.stopped_epoch == theirs_cb.stopped_epoch == 2
    assert same_weights(ours_model, theirs_model)


def test_early_stopping_reports_the_stop_and_ends_the_run_stopped(tmp_path, server):
    _, history = fit([cb.EarlyStopping(**stopping_args()), monitor(server, tmp_path)], epochs=6)
    [event] = server.events("early_stop")
    assert event["epoch"] == 2
    assert event["data"] == {
        "stopped_epoch": 2,
        "monitor": "loss",
        "best": history["loss"][0],
        "restored_weights": True,
    }
    assert status(server) == "stopped"


def test_early_stopping_that_never_fires_reports_nothing(tmp_path, server):
    fit([monitor(server, tmp_path), cb.EarlyStopping(monitor="loss", patience=5)])
    assert server.events("early_stop") == []
    assert status(server) == "finished"


# --- learning rate -------------------------------------------------------------------------


def halve_after_first(epoch, lr):
    return lr if epoch == 0 else lr * 0.5


def test_learning_rate_scheduler_sets_the_same_rates_as_keras():
    theirs_model, theirs = fit([keras.callbacks.LearningRateScheduler(halve_after_first)])
    ours_model, ours = fit([cb.LearningRateScheduler(halve_after_first)])
    assert ours == theirs
    assert len(set(ours["learning_rate"])) == EPOCHS
    assert same_weights(ours_model, theirs_model)


def test_learning_rate_scheduler_reports_each_real_change(tmp_path, server):
    fit([monitor(server, tmp_path), cb.LearningRateScheduler(halve_after_first)])
    changes = server.events("lr_changed")
    assert [e["epoch"] for e in changes] == [1, 2, 3]  # epoch 0 keeps the rate: no event
    assert [e["data"] for e in changes] == [
        {"old": 0.05, "new": 0.025},
        {"old": 0.025, "new": 0.0125},
        {"old": 0.0125, "new": 0.00625},
    ]


def plateau_args():
    # mode="max" on a falling loss: every epoch after the first is a plateau.
    return dict(monitor="loss", mode="max", factor=0.5, patience=1, min_lr=0.01)


def test_reduce_lr_on_plateau_reduces_like_keras():
    theirs_model, theirs = fit([keras.callbacks.ReduceLROnPlateau(**plateau_args())], epochs=5)
    ours_model, ours = fit([cb.ReduceLROnPlateau(**plateau_args())], epochs=5)
    assert ours == theirs
    assert same_weights(ours_model, theirs_model)


def test_reduce_lr_on_plateau_reports_reductions_but_not_the_floor(tmp_path, server):
    fit([cb.ReduceLROnPlateau(**plateau_args()), monitor(server, tmp_path)], epochs=5)
    changes = server.events("lr_changed")
    assert [(e["epoch"], e["data"]["old"], e["data"]["new"]) for e in changes] == [
        (1, 0.05, 0.025),
        (2, 0.025, 0.0125),
        (3, 0.0125, 0.01),  # clamped to min_lr; epoch 4 is already at the floor
    ]
    lrs = [e["metrics"]["learning_rate"] for e in server.events("epoch_end")]
    assert len(lrs) == 5 and lrs[-1] == pytest.approx(0.01)


# --- TerminateOnNaN ------------------------------------------------------------------------

BAD_SAMPLE = 44  # in the sixth batch (index 5) of the first epoch


def batches_seen():
    seen = []
    counter = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(batch)
    )
    return seen, counter


def test_terminate_on_nan_stops_at_the_same_batch_as_keras():
    outcomes = []
    for callback in (keras.callbacks.TerminateOnNaN(), cb.TerminateOnNaN()):
        seen, counter = batches_seen()
        _, history = fit([callback, counter], data=dataset(BAD_SAMPLE))
        outcomes.append((seen, history))
    (their_batches, theirs), (our_batches, ours) = outcomes
    assert our_batches == their_batches == [0, 1, 2, 3, 4, 5]
    np.testing.assert_equal(ours, theirs)  # NaN == NaN here


def test_terminate_on_nan_reports_and_fails_the_run(tmp_path, server):
    fit([monitor(server, tmp_path), cb.TerminateOnNaN()], data=dataset(BAD_SAMPLE))
    [event] = server.events("nan")
    assert event["data"] == {"batch": 5, "epoch": 0}
    assert event["epoch"] == 0
    assert status(server) == "failed"


def test_terminate_on_nan_raise_error_raises_like_keras_and_closes_the_run(tmp_path, server):
    messages = []
    for callback in (
        keras.callbacks.TerminateOnNaN(raise_error=True),
        cb.TerminateOnNaN(raise_error=True),
    ):
        with pytest.raises(RuntimeError) as raised:
            fit([monitor(server, tmp_path), callback], data=dataset(BAD_SAMPLE))
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    # Keras calls no on_train_end here, so only our callback's run is closed.
    assert [e["data"]["batch"] for e in server.events("nan")] == [5]
    [end] = server.events("train_end", run_id=2)
    assert end["data"]["status"] == "failed"
    assert "batch 5" in end["data"]["error"]
    assert server.events("train_end", run_id=1) == []


# --- BackupAndRestore ----------------------------------------------------------------------


class Interrupt(keras.callbacks.Callback):
    """Raises at the start of epoch 2, once."""

    def __init__(self):
        super().__init__()
        self.fired = False

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2 and not self.fired:
            self.fired = True
            raise RuntimeError("interrupted")


def interrupted_then_resumed(callbacks):
    """Fit until the interruption, then fit again; return the model and the second history.

    `callbacks()` gives each fit its list (the same BackupAndRestore in both).
    """
    model = make_model()
    model.build((None, 4))
    interrupt = Interrupt()
    with pytest.raises(RuntimeError, match="interrupted"):
        fit([*callbacks(), interrupt], model=model)
    _, history = fit([*callbacks(), interrupt], model=model)
    return model, history


def test_backup_and_restore_resumes_like_keras(tmp_path):
    theirs_backup = keras.callbacks.BackupAndRestore(str(tmp_path / "keras"))
    theirs_model, theirs = interrupted_then_resumed(lambda: [theirs_backup])
    ours_backup = cb.BackupAndRestore(str(tmp_path / "ours"))
    ours_model, ours = interrupted_then_resumed(lambda: [ours_backup])
    assert ours == theirs
    assert len(ours["loss"]) == EPOCHS - 2
    assert same_weights(ours_model, theirs_model)
    assert not (tmp_path / "ours").exists()  # deleted at the end, as Keras does


@pytest.mark.parametrize("backup_first", [False, True], ids=["monitor-first", "backup-first"])
def test_resumed_training_continues_the_same_run(tmp_path, server, backup_first):
    backup = cb.BackupAndRestore(str(tmp_path / "backup"))

    monitors = []

    def callbacks():
        monitors.append(monitor(server, tmp_path))  # a new RemoteMonitor, as after a restart
        return [backup, monitors[-1]] if backup_first else [monitors[-1], backup]

    model, _ = interrupted_then_resumed(callbacks)
    first, second = server.specs[0], server.specs[-1]
    assert second["uid"] == first["uid"]
    # The interrupted Run will not close the continued run as failed at exit.
    assert monitors[0].run not in _exit_guard._open_runs
    [restored] = server.events("restored")
    assert restored["data"] == {"epoch": 2}
    assert restored["epoch"] == 2
    begin = [e for _, e in server.posted if e["kind"] == "train_begin"][-1]
    assert restored["seq"] == begin["seq"] + 1  # the resumed fit's run, right after train_begin
    resumed = [e for _, e in server.posted[server.posted.index((1, restored)) :]]
    assert [e["epoch"] for e in resumed if e["kind"] == "epoch_end"] == [2, 3]
    assert resumed[-1]["data"]["status"] == "finished"

    # The backup is gone once training completed, so the next fit is a new run.
    fit(callbacks(), model=model)
    assert server.specs[-1]["uid"] != first["uid"]
    assert server.events("restored") == [restored]


def test_the_run_uid_is_kept_next_to_the_backup(tmp_path, server):
    backup_dir = tmp_path / "backup"
    check_file = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: uids.append(
            json.loads((backup_dir / "callboard_run.json").read_text())["uid"]
        )
    )
    uids = []
    backup = cb.BackupAndRestore(str(backup_dir), delete_checkpoint=False)
    fit([monitor(server, tmp_path), backup, check_file], epochs=2)
    assert uids == [server.specs[0]["uid"]] * 2
    assert sorted(os.listdir(backup_dir)) == [
        "callboard_run.json",
        "latest.weights.h5",
        "training_metadata.json",
    ]


def test_a_server_that_stores_each_seq_once_keeps_the_resumed_events(tmp_path):
    server = FakeServer()
    backup = cb.BackupAndRestore(str(tmp_path / "backup"))

    def callbacks():
        return [monitor(server, tmp_path), backup]

    interrupted_then_resumed(callbacks)
    stored = server.stored(1)
    assert [e["kind"] for e in stored].count("train_begin") == 2
    assert "restored" in [e["kind"] for e in stored]
    assert [e["epoch"] for e in stored if e["kind"] == "epoch_end"] == [0, 1, 2, 3]
