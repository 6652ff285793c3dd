"""RemoteControl applies each command to a real tiny Keras `fit()`.

The run is a stand-in holding the contract's command interface in memory
(`handle_commands`, `should_stop`, `paused`, `wait_while_paused`, `on_command`,
`end_of_epoch`): a command is "issued" from a callback or another thread, as the
run's background channel would queue it, and applied when RemoteControl asks.
"""

import dataclasses
import json
import math
import threading
import time

import keras
import numpy as np
import pytest
from keras.src.utils.python_utils import is_default

import callboard.client as cb
from callboard.client._active import active_checkpoint, attach_run
from callboard.client._commands import CommandRefused
from callboard.client.remote_control import NO_CHECKPOINT

from .fake_server import FakeServer

BATCHES = 8  # 64 samples, batch size 8
DEADLINE = 60  # seconds a condition may take before the test fails


@dataclasses.dataclass
class Command:
    id: int
    kind: str
    value: float | None = None


class StandInRun:
    """A `Run`'s command interface in memory; `outcomes[id]` is `(state, detail, epoch)`."""

    def __init__(self):
        self.finished = False
        self.final_status = None
        self.events = []  # (kind, data, epoch, step, metrics)
        self.outcomes = {}
        self.told_at = {}  # command id -> (epoch, step) handle_commands() was given
        self.waiting = threading.Event()  # set while wait_while_paused blocks
        self._changed = threading.Condition()
        self._queue = []
        self._handlers = {}
        self._stop = self._paused = False
        self._stop_after_epoch = None
        self._ids = iter(range(1, 10_000))

    def issue(self, kind, value=None):
        """Queue a command, from any thread; return its id."""
        with self._changed:
            command = Command(next(self._ids), kind, value)
            self._queue.append(command)
            self._changed.notify_all()
        return command.id

    def on_command(self, kind, fn):
        self._handlers[kind] = fn

    def handle_commands(self, epoch=None, step=None):
        with self._changed:
            queued, self._queue = self._queue, []
        for command in queued:
            self.told_at[command.id] = (epoch, step)
            self._apply(command)

    def _apply(self, command):
        kind = command.kind
        if kind == "stop":
            self._stop = True
        elif kind == "pause":
            self._paused = True
        elif kind == "resume":
            self._paused = False
        elif kind == "stop_after_epoch":
            self._stop_after_epoch = command
            return
        elif kind in self._handlers:
            try:
                detail = self._handlers[kind](command)
            except CommandRefused as exc:
                self.outcomes[command.id] = ("refused", str(exc), None)
                return
            except Exception as exc:
                self.outcomes[command.id] = ("refused", repr(exc), None)
                return
            self.outcomes[command.id] = ("applied", detail, None)
            return
        else:
            self.outcomes[command.id] = ("refused", "not supported by this client", None)
            return
        self.outcomes[command.id] = ("applied", None, None)

    @property
    def should_stop(self):
        return self._stop

    @property
    def paused(self):
        return self._paused

    def wait_while_paused(self):
        self.waiting.set()
        try:
            while self._paused and not self._stop:
                with self._changed:
                    self._changed.wait_for(lambda: self._queue, timeout=DEADLINE)
                self.handle_commands()
        finally:
            self.waiting.clear()

    def end_of_epoch(self, epoch):
        command, self._stop_after_epoch = self._stop_after_epoch, None
        if command is not None:
            self._stop = True
            self.outcomes[command.id] = ("applied", None, epoch)

    def log_event(self, kind, data=None, epoch=None, step=None, metrics=None, urgent=True):
        self.events.append((kind, data or {}, epoch, step, metrics or {}))


def dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def tiny_model(optimizer=None):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer or keras.optimizers.SGD(0.01), loss="mse")
    return model


class Trace(keras.callbacks.Callback):
    """Records each batch begun (epoch, batch) and each epoch ended, after RemoteControl acted."""

    def __init__(self):
        super().__init__()
        self.batches = []
        self.epochs_ended = []
        self.learning_rates = []
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.batches.append((self._epoch, batch))
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        self.learning_rates.append(float(rate))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_ended.append(epoch)


def issue_at(run, epoch, batch, kind, value=None):
    """A callback that issues a command once batch `batch` of `epoch` has ended."""
    issued = []

    def after_batch(done, logs):
        if not issued and trace_epoch[0] == epoch and done == batch:
            issued.append(run.issue(kind, value))

    trace_epoch = [None]
    callback = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: trace_epoch.__setitem__(0, e),
        on_train_batch_end=after_batch,
    )
    callback.issued = issued
    return callback


def fit(run, callbacks, model=None, epochs=4, **kwargs):
    model = model or tiny_model()
    attach_run(model, run)
    x, y = dataset()
    history = model.fit(
        x, y, epochs=epochs, batch_size=8, shuffle=False, verbose=0, callbacks=callbacks, **kwargs
    )
    return model, history.history


def wait_for(condition, what):
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.01)


# --- the callback itself ---------------------------------------------------------------------


def test_remote_control_has_no_batch_end_hook_so_it_never_turns_off_async_dispatch():
    control = cb.RemoteControl()
    assert control.async_safe
    for hook in ("on_batch_end", "on_train_batch_end", "on_test_batch_end"):
        assert is_default(getattr(control, hook)), hook


@pytest.mark.parametrize("path", ["model.ckpt", "weights.h5x", "dir/"])
def test_a_checkpoint_path_keras_cannot_save_to_is_refused_at_once(path):
    with pytest.raises(ValueError, match="checkpoint_path must end in"):
        cb.RemoteControl(checkpoint_path=path)


# --- stop, stop_after_epoch ------------------------------------------------------------------


def test_stop_ends_training_with_the_next_batch():
    run, trace = StandInRun(), Trace()
    issuer = issue_at(run, epoch=1, batch=2, kind="stop")
    model, history = fit(run, [issuer, cb.RemoteControl(), trace])
    [stop] = issuer.issued
    assert run.outcomes[stop][0] == "applied" and run.told_at[stop] == (1, BATCHES + 3)
    # Issued after batch 2 of epoch 1: batch 3 was about to start and is the last.
    assert trace.batches[-1] == (1, 3) and len(trace.batches) == BATCHES + 4
    assert len(history["loss"]) == 2 and model.stop_training
    assert trace.epochs_ended == [0, 1]  # on_epoch_end still ran


def test_stop_after_epoch_finishes_the_epoch_with_its_validation_then_stops():
    run, trace = StandInRun(), Trace()
    issuer = issue_at(run, epoch=1, batch=2, kind="stop_after_epoch")
    _, history = fit(run, [issuer, cb.RemoteControl(), trace], validation_split=0.25)
    [command] = issuer.issued
    assert run.outcomes[command] == ("applied", None, 1)
    per_epoch = 6  # 48 training samples
    assert trace.batches[-1] == (1, per_epoch - 1) and len(trace.batches) == 2 * per_epoch
    assert trace.epochs_ended == [0, 1]
    assert len(history["val_loss"]) == 2 and all(math.isfinite(v) for v in history["val_loss"])


# --- pause, resume ---------------------------------------------------------------------------


def test_pause_waits_before_the_next_batch_and_resume_from_another_thread_continues():
    run, trace = StandInRun(), Trace()
    issuer = issue_at(run, epoch=0, batch=3, kind="pause")
    seen_while_paused = []

    def resume_once_paused():
        wait_for(run.waiting.is_set, "the pause")
        seen_while_paused.append(list(trace.batches))
        run.issue("resume")

    resumer = threading.Thread(target=resume_once_paused, daemon=True)
    resumer.start()
    _, history = fit(run, [issuer, cb.RemoteControl(), trace], epochs=2)
    resumer.join(DEADLINE)
    # Paused before batch 4 began (Trace runs after RemoteControl): batches 0..3 only.
    assert seen_while_paused == [[(0, 0), (0, 1), (0, 2), (0, 3)]]
    assert len(trace.batches) == 2 * BATCHES and len(history["loss"]) == 2
    assert [state for state, _, _ in run.outcomes.values()] == ["applied", "applied"]


def test_stop_while_paused_stops():
    run, trace = StandInRun(), Trace()
    issuer = issue_at(run, epoch=0, batch=1, kind="pause")

    def stop_once_paused():
        wait_for(run.waiting.is_set, "the pause")
        run.issue("stop")

    stopper = threading.Thread(target=stop_once_paused, daemon=True)
    stopper.start()
    model, history = fit(run, [issuer, cb.RemoteControl(), trace])
    stopper.join(DEADLINE)
    assert model.stop_training and len(history["loss"]) == 1
    assert trace.batches == [(0, 0), (0, 1), (0, 2)]  # the batch waiting was the last


# --- set_learning_rate -----------------------------------------------------------------------


def test_set_learning_rate_changes_the_optimizer_before_the_next_batch_and_reports_it():
    run, trace = StandInRun(), Trace()
    issuer = issue_at(run, epoch=1, batch=1, kind="set_learning_rate", value=0.003)
    fit(run, [issuer, cb.RemoteControl(), trace], epochs=2)
    [command] = issuer.issued
    assert run.outcomes[command] == ("applied", "learning rate 0.01 -> 0.003", None)
    assert run.told_at[command] == (1, BATCHES + 2)
    rates = dict(zip(trace.batches, trace.learning_rates, strict=True))
    assert rates[(1, 1)] == pytest.approx(0.01) and rates[(1, 2)] == pytest.approx(0.003)
    assert rates[(1, BATCHES - 1)] == pytest.approx(0.003)
    [(_, data, epoch, step, _)] = [e for e in run.events if e[0] == "lr_changed"]
    assert data == {"old": 0.01, "new": 0.003, "command_id": command}
    assert (epoch, step) == (1, BATCHES + 2)
    # The metric sits at the epoch, on the axis of RemoteMonitor's per-epoch learning_rate.
    [(_, _, epoch, step, metrics)] = [e for e in run.events if e[0] == "metrics"]
    assert (epoch, step, metrics) == (1, None, {"learning_rate": 0.003})


@pytest.mark.parametrize("value", [0.0, -0.1, math.nan, math.inf, None])
def test_a_learning_rate_that_is_not_finite_and_positive_is_refused_and_nothing_changes(value):
    run, trace = StandInRun(), Trace()
    issuer = issue_at(run, epoch=0, batch=0, kind="set_learning_rate", value=value)
    fit(run, [issuer, cb.RemoteControl(), trace], epochs=1)
    [command] = issuer.issued
    state, detail, _ = run.outcomes[command]
    assert state == "refused" and detail.startswith("a learning rate must be a finite number > 0")
    assert trace.learning_rates == [pytest.approx(0.01)] * BATCHES
    assert not [e for e in run.events if e[0] == "lr_changed"]


def test_a_learning_rate_schedule_is_refused_with_its_name():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=4, decay_rate=0.5)
    model = tiny_model(keras.optimizers.SGD(schedule))
    run = StandInRun()
    issuer = issue_at(run, epoch=0, batch=2, kind="set_learning_rate", value=0.5)
    fit(run, [issuer, cb.RemoteControl()], model=model, epochs=1)
    [command] = issuer.issued
    assert run.outcomes[command] == (
        "refused",
        "the optimizer's learning rate is a schedule (ExponentialDecay), not a variable",
        None,
    )
    assert float(model.optimizer.learning_rate) < 0.01  # still the schedule's


# --- checkpoint ------------------------------------------------------------------------------


class WeightsAt(keras.callbacks.Callback):
    """Keeps the model's weights as they are when batch `batch` of `epoch` begins."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.weights = None
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self._epoch, batch) == self.at:
            self.weights = [np.array(w) for w in self.model.get_weights()]


def test_checkpoint_saves_now_through_the_fits_model_checkpoint(tmp_path):
    pattern = str(tmp_path / "ckpt" / "remote-{epoch:02d}-{batch:02d}.weights.h5")
    checkpoint = cb.ModelCheckpoint(pattern, save_weights_only=True, save_freq=10**6)
    run, weights = StandInRun(), WeightsAt(epoch=1, batch=5)
    issuer = issue_at(run, epoch=1, batch=4, kind="checkpoint")
    model, _ = fit(run, [issuer, checkpoint, cb.RemoteControl(), weights], epochs=2)
    [command] = issuer.issued
    path = tmp_path / "ckpt" / "remote-02-05.weights.h5"  # epoch 2 (1-based), 5 batches done
    assert run.outcomes[command] == ("applied", f"saved {path}", None)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [path.name]
    saved = tiny_model()
    saved.load_weights(path)
    pairs = zip(saved.get_weights(), weights.weights, strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
    [(_, data, epoch, step, _)] = [e for e in run.events if e[0] == "checkpoint_saved"]
    assert data == {"path": str(path), "epoch": 1, "command_id": command}
    assert (epoch, step) == (1, BATCHES + 5)
    assert active_checkpoint(model) is None  # forgotten once the fit ended


def test_checkpoint_without_a_model_checkpoint_saves_the_model_to_checkpoint_path(tmp_path):
    run = StandInRun()
    issuer = issue_at(run, epoch=0, batch=2, kind="checkpoint")
    control = cb.RemoteControl(checkpoint_path=tmp_path / "now-{epoch}-{batch}.keras")
    fit(run, [issuer, control], epochs=1)
    [command] = issuer.issued
    path = tmp_path / "now-1-3.keras"
    assert run.outcomes[command] == ("applied", f"saved {path}", None)
    restored = keras.models.load_model(path)
    assert restored.optimizer is not None and len(restored.get_weights()) == 2
    assert [e[1]["path"] for e in run.events if e[0] == "checkpoint_saved"] == [str(path)]


def test_checkpoint_with_neither_is_refused_with_the_reason():
    run = StandInRun()
    issuer = issue_at(run, epoch=0, batch=2, kind="checkpoint")
    fit(run, [issuer, cb.RemoteControl()], epochs=1)
    [command] = issuer.issued
    assert run.outcomes[command] == ("refused", NO_CHECKPOINT, None)
    assert not [e for e in run.events if e[0] == "checkpoint_saved"]


def test_a_model_checkpoint_of_an_earlier_fit_is_not_used_by_a_later_one(tmp_path):
    model = tiny_model()
    fit(StandInRun(), [cb.ModelCheckpoint(str(tmp_path / "m.keras"))], model=model, epochs=1)
    run = StandInRun()
    issuer = issue_at(run, epoch=0, batch=1, kind="checkpoint")
    fit(run, [issuer, cb.RemoteControl()], model=model, epochs=1)
    assert run.outcomes[issuer.issued[0]] == ("refused", NO_CHECKPOINT, None)


def test_a_path_placeholder_with_no_value_between_batches_refuses_the_checkpoint(tmp_path):
    run = StandInRun()
    issuer = issue_at(run, epoch=0, batch=1, kind="checkpoint")
    control = cb.RemoteControl(checkpoint_path=tmp_path / "best-{val_loss:.3f}.keras")
    fit(run, [issuer, control], epochs=1)
    state, detail, _ = run.outcomes[issuer.issued[0]]
    assert state == "refused" and "'val_loss'" in detail
    assert detail.startswith("cannot name the checkpoint now")
    assert not list(tmp_path.iterdir())


def test_a_kind_without_a_handler_is_refused_by_the_run():
    run = StandInRun()
    issuer = issue_at(run, epoch=0, batch=1, kind="dance")
    fit(run, [issuer, cb.RemoteControl()], epochs=1)
    assert run.outcomes[issuer.issued[0]] == ("refused", "not supported by this client", None)


# --- with the real Run: its own run, commands from a (fake) server -------------------------


def test_without_a_monitor_it_opens_its_own_run_and_applies_commands_from_the_server():
    fake = FakeServer()
    sent = {}

    def steer(batch, logs):  # as a person would, while the training runs
        if "lr" not in sent:
            sent["lr"] = fake.issue("set_learning_rate", 0.003)["id"]
        elif "stop" not in sent and any(o[0] == sent["lr"] for o in fake.outcomes):
            sent["stop"] = fake.issue("stop")["id"]

    control = cb.RemoteControl(
        root="http://callboard.test", run="own", project="unit", client=fake.client()
    )
    model = tiny_model()
    x, y = dataset()
    try:
        history = model.fit(
            x, y, epochs=500, batch_size=8, verbose=0,
            callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=steer), control],
        )  # fmt: skip
    finally:
        fake.close()
    assert len(history.history["loss"]) < 500 and model.stop_training
    states = {command_id: state for command_id, state, *_ in fake.outcomes}
    assert states == {sent["lr"]: "applied", sent["stop"]: "applied"}
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.003)
    [spec] = [json.loads(r.content) for r in fake.requests if r.url.path == "/api/v1/runs"]
    assert (spec["name"], spec["project"]) == ("own", "unit")
    kinds = [event["kind"] for event in fake.stored()]
    assert kinds[0] == "train_begin" and "lr_changed" in kinds
    assert fake.stored()[-1]["data"]["status"] == "stopped"
