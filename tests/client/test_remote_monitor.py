"""How RemoteMonitor and RemoteStop plug into Keras's callback dispatch."""

import threading
import time

import httpx
import keras
import pytest
from keras.src.callbacks.callback_list import CallbackList
from keras.src.utils.python_utils import is_default

from callboard.client import RemoteMonitor, RemoteStop
from callboard.server.api.answers import Problem

from .fake_server import FakeServer, control_answer

BATCH_HOOKS = [
    f"on_{kind}batch_{when}"
    for kind in ("", "train_", "test_", "predict_")
    for when in ("begin", "end")
]


@pytest.mark.parametrize("hook", BATCH_HOOKS)
def test_epoch_level_monitoring_and_remote_stop_add_no_batch_hook(hook):
    assert is_default(getattr(RemoteMonitor(root="http://callboard.test"), hook))
    assert is_default(getattr(RemoteStop(), hook))
    if hook != "on_train_batch_end":
        assert is_default(getattr(RemoteMonitor(batch_frequency=5), hook))


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


def test_batch_steps_count_steps_per_execution():
    server = FakeServer()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse", steps_per_execution=2)
    x = keras.random.normal((40, 2))
    monitor = RemoteMonitor(root="http://callboard.test", batch_frequency=3, client=server.client())
    model.fit(x, x[:, :1], epochs=2, batch_size=4, verbose=0, callbacks=[monitor])
    events = server.stored()
    # Keras reports steps 2, 4, ..., 10 in each 10-step epoch: a report when a
    # multiple of 3 was passed, at the step where Keras saw it.
    assert [e["step"] for e in events if e["kind"] == "batch_end"] == [4, 6, 10, 12, 16, 18]
    assert [e["step"] for e in events if e["kind"] == "epoch_end"] == [10, 20]


def test_batch_hooks_called_out_of_order_from_threads_keep_their_steps():
    run = RecordingRun()
    monitor = RemoteMonitor(root="http://callboard.test", batch_frequency=2)
    monitor.run = run
    monitor.on_epoch_begin(0)
    threads = [
        threading.Thread(target=monitor.on_train_batch_end, args=(batch, {"loss": batch}))
        for batch in reversed(range(8))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every second step reports, with its own batch's logs, whatever the call order.
    reports = sorted((e["step"], e["metrics"]["batch/loss"]) for e in run.events)
    assert reports == [(2, 1.0), (4, 3.0), (6, 5.0), (8, 7.0)]
    monitor.on_epoch_end(0, {"loss": 1.0})
    assert run.events[-1]["step"] == 8


class RecordingRun:
    def __init__(self):
        self.events = []

    def log_event(self, kind, **fields):
        self.events.append({"kind": kind, **fields})


def fit_stopped_remotely(server, stopper, monitor):
    """Fit up to 100 epochs while `server` asks for a stop at the 4th batch; return History."""
    x = keras.random.normal((64, 2))

    def request_stop(batch, logs):
        if batch == 3:
            server.stop_requested = True
        time.sleep(0.01)

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model.fit(
        x,
        x[:, :1],
        epochs=100,
        batch_size=4,
        verbose=0,
        callbacks=[
            monitor,
            stopper,
            keras.callbacks.LambdaCallback(on_train_batch_end=request_stop),
        ],
    )


def test_a_remote_stop_ends_fit_from_the_polling_thread_and_acknowledges_first():
    server = FakeServer()
    stopper = RemoteStop(interval=0.05)
    monitor = RemoteMonitor(root="http://callboard.test", client=server.client())
    history = fit_stopped_remotely(server, stopper, monitor)
    assert len(history.history["loss"]) < 100 and stopper.stopped_remotely
    sent = server.posted_kinds()
    assert sent.count("ack") == 1
    assert sent.index("ack") < next(i for i, kinds in enumerate(sent) if "train_end" in kinds)
    assert server.stored()[-1]["data"] == {"status": "stopped"}


def test_callbacks_read_the_model_only_on_the_training_thread(monkeypatch):
    # On JAX, `Callback.model` syncs the trainer's state into the model; read from
    # another thread it races the step that donates those buffers, and fit() dies
    # with "Buffer has been deleted or donated". So no thread of ours may read it.
    readers = set()
    model_of = keras.callbacks.Callback.model.fget

    def recording_model(callback):
        readers.add(threading.current_thread().name)
        return model_of(callback)

    monkeypatch.setattr(keras.callbacks.Callback, "model", property(recording_model))
    server = FakeServer()
    stopper = RemoteStop(interval=0.02)
    monitor = RemoteMonitor(root="http://callboard.test", client=server.client(), batch_frequency=2)
    fit_stopped_remotely(server, stopper, monitor)
    assert stopper.stopped_remotely and "ack" in server.posted_kinds()
    assert readers == {threading.main_thread().name}


def control_answers(*answers):
    """An httpx client whose `GET /api/v1/control` gives `answers` in turn (then the last)."""
    requests = []

    def handle(request):
        requests.append(request)
        if request.url.path.endswith("/ack"):
            run_id = int(request.url.path.split("/")[4])
            return httpx.Response(200, json=control_answer(run_id, True, "acknowledged"))
        status, body = answers[min(len(requests) - 1, len(answers) - 1)]
        return httpx.Response(status, json=body)

    client = httpx.Client(transport=httpx.MockTransport(handle))
    client.requests = requests
    return client


def named_stopper(client, model):
    """A RemoteStop following run "job" by name, whose polls the test makes itself."""
    stopper = RemoteStop(run="job", project="lab", token="cb_ingest", interval=3600, client=client)
    stopper.set_model(model)
    stopper.on_train_begin()
    return stopper


def control(run_id, stop_requested):
    return 200, control_answer(run_id, stop_requested)


def test_remote_stop_by_name_asks_the_name_look_up_with_its_token_and_acknowledges():
    missing = (404, Problem(detail="no live run").model_dump())
    client = control_answers(missing, control(7, False), control(7, True))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    stopper = named_stopper(client, model)
    try:
        assert [stopper._poller.poll_once() for _ in range(3)] == [False, False, True]
    finally:
        stopper.on_train_end()
    assert model.stop_training and stopper.stopped_remotely
    look_up, *_, ack = client.requests
    assert look_up.url.path == "/api/v1/control"
    assert dict(look_up.url.params) == {"name": "job", "project": "lab"}
    assert look_up.headers["Authorization"] == "Bearer cb_ingest"
    assert ack.method == "POST" and ack.url.path == "/api/v1/runs/7/control/ack"


def test_remote_stop_by_name_ignores_a_stop_left_from_an_earlier_training():
    # The first look-up finds run 3 already asked to stop (an earlier training of that
    # name, not yet marked ended): not for this fit(). A newer run of the name is.
    client = control_answers(control(3, True), control(3, True), control(4, True))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    stopper = named_stopper(client, model)
    try:
        assert [stopper._poller.poll_once() for _ in range(3)] == [False, False, True]
    finally:
        stopper.on_train_end()
    assert model.stop_training
    assert client.requests[-1].url.path == "/api/v1/runs/4/control/ack"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_stop_poll_warns_once_and_training_goes_on(status):
    detail = "role 'read' cannot do this (needs ingest)"
    client = control_answers((status, Problem(detail=detail).model_dump()))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    stopper = named_stopper(client, model)
    try:
        with pytest.warns(RuntimeWarning) as warned:
            assert not any(stopper._poller.poll_once() for _ in range(3))
    finally:
        stopper.on_train_end()
    assert len(client.requests) == 3  # still polling: the token may be granted the right
    [warning] = [w for w in warned if "remote stop" in str(w.message)]
    message = str(warning.message)
    assert f"server answered {status}" in message and detail in message
    assert "refused the token" in message and "Training goes on" in message
    assert not getattr(model, "stop_training", False)
