"""How RemoteMonitor and RemoteStop plug into Keras's callback dispatch."""

import keras
import pytest
from keras.src.callbacks.callback_list import CallbackList
from keras.src.utils.python_utils import is_default

from callboard.client import RemoteMonitor, RemoteStop

from .fake_server import FakeServer


def test_epoch_level_monitoring_adds_no_batch_hook():
    monitor = RemoteMonitor(root="http://callboard.test")
    assert is_default(monitor.on_train_batch_end) and is_default(monitor.on_batch_end)
    assert is_default(RemoteStop().on_train_batch_end)


def test_batch_monitoring_hooks_batches_and_stays_async_safe(monkeypatch):
    monitor = RemoteMonitor(root="http://callboard.test", batch_frequency=10)
    assert not is_default(monitor.on_train_batch_end)
    assert monitor.async_safe and RemoteStop.async_safe
    # On thread-safe backends (JAX, torch) Keras keeps dispatching batch hooks
    # asynchronously because both callbacks declare themselves async-safe.
    monkeypatch.setattr("keras.src.backend.IS_THREAD_SAFE", True)
    callbacks = CallbackList([monitor, RemoteStop()], model=None)
    assert callbacks._async_train
    plain = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)
    assert not CallbackList([plain], model=None)._async_train


def test_batch_frequency_must_be_positive():
    with pytest.raises(ValueError, match="batch_frequency"):
        RemoteMonitor(batch_frequency=0)


def test_batch_events_every_n_steps_with_learning_rate_per_epoch(tmp_path):
    server = FakeServer()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    x = keras.random.normal((40, 2))
    model.fit(
        x,
        x[:, :1],
        epochs=2,
        batch_size=4,
        verbose=0,
        callbacks=[
            RemoteMonitor(root="http://callboard.test", batch_frequency=3, client=server.client())
        ],
    )
    events = server.stored()
    steps = [e["step"] for e in events if e["kind"] == "batch_end"]
    assert steps == list(range(3, 21, 3))
    assert all(set(e["metrics"]) == {"batch/loss"} for e in events if e["kind"] == "batch_end")
    epochs = [e for e in events if e["kind"] == "epoch_end"]
    assert [e["metrics"]["learning_rate"] for e in epochs] == pytest.approx([0.05, 0.05])
    assert events[0]["data"]["epochs"] == 2 and events[0]["data"]["steps"] == 10
