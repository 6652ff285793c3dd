"""Latency: a remote command until `fit()` obeys, and a posted event until its server-sent event.

Stop: a real Keras `fit()` runs in a thread with Callboard's `RemoteMonitor` and
either `RemoteStop(interval=...)`, which polls, or `RemoteControl`, which holds
the run's push channel; once batches are flowing, the benchmark asks for a stop
at a random moment and times until `fit()` has returned. Polled, the stop lands
uniformly within one poll interval (target p95 ≤ poll interval + one batch);
pushed, the target is p95 ≤ one batch + 100 ms. Set learning rate: the same
fit with `RemoteControl`, a `set_learning_rate` command until the first batch
that starts with the new rate (target p95 ≤ one batch + 100 ms). Stock Keras
and MLflow have no remote control.

Live: a subscriber reads `GET /runs/{id}/stream`; the benchmark POSTs one event
at a time and times until the matching message arrives. MLflow has no push
stream (its UI polls), so there is no peer figure.
"""

import json
import math
import os
import random
import tempfile
import threading
import time

import httpx

from .common import CallboardApi, epoch_event, percentile
from .report import Report

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STOP_INTERVAL = 1.0  # RemoteStop's default poll interval
# The stop's moment needs a generator of its own: `keras.utils.set_random_seed(0)` in
# `_model_and_data` reseeds `random`, which made the "random" phases one fixed sequence
# (two of its 20 stops landed just after a poll, in every run).
STOP_PHASES = random.Random()
LIVE_TARGET_MS = 20.0
PUSH_MARGIN = 0.1  # a pushed command's target: one batch + this many seconds


def _model_and_data():
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # 512 batches an epoch: the epoch boundary (TensorFlow builds the next epoch's data
    # iterator, 50-370 ms here, in which no callback runs) is rare among the moments a
    # command may arrive; with 64 an epoch it was one in seven.
    x = rng.normal(size=(64 * 512, 256)).astype("float32")
    y = x[:, :1] * 2
    model = keras.Sequential(
        [
            keras.Input((256,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # trace before timing
    return model, x, y


def _batch_seconds(model, x, y):
    """Median wall time of one training batch, from a fit without callbacks."""
    import keras

    times = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.started)

    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[Clock()])
    times.sort()
    return times[len(times) // 2]


def _loop_end_clock(returned):
    """A callback, first in the list, noting when the training loop has ended."""
    import keras

    class LoopEnd(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            returned["loop ended"] = time.perf_counter()

    return LoopEnd()


def _fit_in_thread(model, x, y, callbacks, returned):
    def train():
        model.fit(x, y, epochs=10_000, batch_size=64, verbose=0, callbacks=callbacks)
        returned["at"] = time.perf_counter()

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    return thread


def _started_run(monitor):
    """The id of `monitor`'s run once the server has it, and batches flow."""
    deadline = time.monotonic() + 60
    while (monitor.run is None or monitor.run.id is None) and time.monotonic() < deadline:
        time.sleep(0.01)
    if monitor.run is None or monitor.run.id is None:
        raise RuntimeError("the run never reached the server")
    return monitor.run.id


def stop_latencies(root, stops, model, x, y, pushed=False):
    """`(seconds from the stop's request to fit() returning, ... to the training loop
    ending, statuses other than stopped)`: polled by `RemoteStop`, or `pushed` as a
    command to `RemoteControl`."""
    from callboard.client import RemoteControl, RemoteMonitor, RemoteStop

    control = httpx.Client(base_url=root, timeout=30)
    latencies, loop_ends, not_stopped = [], [], []
    try:
        for index in range(stops):
            monitor = RemoteMonitor(root=root, run=f"stop-{index}", project="bench-stop")
            stopper = RemoteControl() if pushed else RemoteStop(interval=STOP_INTERVAL)
            returned = {}
            thread = _fit_in_thread(
                model, x, y, [_loop_end_clock(returned), monitor, stopper], returned
            )
            run_id = _started_run(monitor)
            time.sleep(0.2 + STOP_PHASES.uniform(0, STOP_INTERVAL))  # a random poll phase
            requested = time.perf_counter()
            if pushed:
                control.post(f"/api/v1/runs/{run_id}/commands", json={"kind": "stop"})
            else:
                control.post(f"/api/v1/runs/{run_id}/stop").raise_for_status()
            thread.join(60)
            if "at" not in returned:
                raise RuntimeError("fit() did not return within 60 s of the stop")
            latencies.append(returned["at"] - requested)
            loop_ends.append(returned["loop ended"] - requested)
            time.sleep(0.5)  # let a retried train_end land
            state = control.get(f"/api/v1/runs/{run_id}").json()
            if state["status"] != "stopped":
                not_stopped.append(state["status"])
    finally:
        control.close()
    return latencies, loop_ends, not_stopped


def learning_rate_latencies(root, count, model, x, y):
    """Seconds from a `set_learning_rate` command to the first batch starting with that rate."""
    import keras

    from callboard.client import RemoteControl, RemoteMonitor

    changes = []  # (rate, when the first batch started with it)

    class RateWatch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            if not changes or not math.isclose(rate, changes[-1][0], rel_tol=1e-6):
                changes.append((rate, time.perf_counter()))

    def first_batch_at(rate):
        return next((at for seen, at in changes if math.isclose(seen, rate, rel_tol=1e-6)), None)

    control = httpx.Client(base_url=root, timeout=30)
    latencies = []
    monitor = RemoteMonitor(root=root, run="learning-rate", project="bench-stop")
    returned = {}
    # RemoteControl first: the rate it sets before a batch is what RateWatch sees.
    callbacks = [monitor, RemoteControl(), RateWatch()]
    thread = _fit_in_thread(model, x, y, callbacks, returned)
    try:
        run_id = _started_run(monitor)
        for index in range(count):
            rate = 1e-3 * (index + 2)
            time.sleep(0.2 + STOP_PHASES.uniform(0, STOP_INTERVAL))
            requested = time.perf_counter()
            command = {"kind": "set_learning_rate", "value": rate}
            control.post(f"/api/v1/runs/{run_id}/commands", json=command).raise_for_status()
            deadline = time.monotonic() + 30
            while first_batch_at(rate) is None and time.monotonic() < deadline:
                time.sleep(0.001)
            if first_batch_at(rate) is None:
                raise RuntimeError(f"the learning rate never became {rate}")
            latencies.append(first_batch_at(rate) - requested)
        control.post(f"/api/v1/runs/{run_id}/commands", json={"kind": "stop"})
        thread.join(60)
    finally:
        control.close()
    return latencies


class StreamReader:
    """Reads a run's SSE stream in a thread; `arrivals[seq]` is when each event came."""

    def __init__(self, root, run_id):
        self.url = f"{root}/api/v1/runs/{run_id}/stream"
        self.arrivals = {}
        self.ready = threading.Event()
        self.arrived = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self):
        self._thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the stream did not open")
        return self

    def _read(self):
        with (
            httpx.Client(timeout=httpx.Timeout(30, read=None)) as client,
            client.stream("GET", self.url) as response,
        ):
            self.ready.set()
            event, data = None, None
            for line in response.iter_lines():
                if self._closed:
                    return
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif not line and data is not None:
                    if event is None:
                        seq = json.loads(data).get("seq")
                        with self.arrived:
                            self.arrivals[seq] = time.perf_counter()
                            self.arrived.notify_all()
                    event, data = None, None

    def wait_for(self, seq, timeout=5):
        with self.arrived:
            self.arrived.wait_for(lambda: seq in self.arrivals, timeout)
        return self.arrivals.get(seq)

    def close(self):
        self._closed = True


def live_latencies(root, posts):
    """Seconds from POSTing one event to its message arriving on the stream."""
    api = CallboardApi(root)
    run_id = api.create_run("live")
    reader = StreamReader(root, run_id).start()
    latencies = []
    try:
        for epoch in range(posts + 5):
            seq = api.next_seq(run_id)
            posted = time.perf_counter()
            api.post_events(run_id, [epoch_event(seq, epoch)])
            arrived = reader.wait_for(seq)
            if arrived is None:
                raise RuntimeError(f"event {seq} never arrived on the stream")
            if epoch >= 5:  # the first few warm up the connection and the code paths
                latencies.append(arrived - posted)
            time.sleep(0.005)
    finally:
        reader.close()
        api.close()
    return latencies


def run(quick=False):
    from tests.server_process import ServerProcess

    stops, posts = (3, 30) if quick else (20, 200)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        os.environ["CALLBOARD_SPOOL_DIR"] = os.path.join(tmp, "spool")
        server = ServerProcess(f"sqlite:///{tmp}/callboard.db").start()
        try:
            live = live_latencies(server.root, posts)
            model, x, y = _model_and_data()
            batch = _batch_seconds(model, x, y)
            stop, loop_end, not_stopped = stop_latencies(server.root, stops, model, x, y)
            pushed, _, pushed_not_stopped = stop_latencies(
                server.root, stops, model, x, y, pushed=True
            )
            rates = learning_rate_latencies(server.root, stops, model, x, y)
        finally:
            server.stop()
    not_stopped += pushed_not_stopped
    train_end = [total - loop for total, loop in zip(stop, loop_end, strict=True)]
    one_batch = f"one {batch * 1000:.0f} ms batch"
    push_target = f"≤ {(batch + PUSH_MARGIN) * 1000:.0f} ms ({one_batch} + 100 ms)"
    rows = [
        _latency_row(
            f"stop → fit() returns, polled ({stops} stops, RemoteStop every {STOP_INTERVAL} s)",
            stop,
            STOP_INTERVAL + batch,
            f"≤ {(STOP_INTERVAL + batch) * 1000:.0f} ms (poll + {one_batch})",
            "stock Keras / MLflow: no remote stop",
        ),
        _latency_row(
            f"stop command → fit() returns, pushed ({stops} stops, RemoteControl)",
            pushed,
            batch + PUSH_MARGIN,
            push_target,
            "W&B: polls every 15 s; MLflow, Aim: none",
        ),
        _latency_row(
            f"set_learning_rate → first batch at the new rate ({stops} changes)",
            rates,
            batch + PUSH_MARGIN,
            push_target,
            "none of them",
        ),
        _latency_row(
            f"POST event → server-sent event ({posts} posts)",
            live,
            LIVE_TARGET_MS / 1000,
            f"≤ {LIVE_TARGET_MS:.0f} ms",
            "MLflow: no push stream (its UI polls)",
        ),
    ]
    return Report(
        title="Latency: remote stop and live stream (Callboard, loopback)",
        rows=rows,
        notes=[
            "Stop: a real Keras fit (TensorFlow CPU, 3 dense layers, batch 64) with "
            "RemoteMonitor + RemoteStop (polled: `POST /stop` waits on average half a poll "
            "interval) or + RemoteControl (pushed: `POST /commands` reaches the run's held "
            "channel at once); asked at a random moment; the time includes the last batch "
            "and on_train_end (where the client delivers the run's last events).",
            f"Polled stop, split: POST stop → training loop ended p50 "
            f"{percentile(loop_end, 50) * 1000:.0f} ms, p95 {percentile(loop_end, 95) * 1000:.0f} "
            f"ms (the poll and the last batch); loop ended → fit() returned (on_train_end: the "
            f"run's last events delivered) p50 "
            f"{percentile(train_end, 50) * 1000:.0f} ms, p95 "
            f"{percentile(train_end, 95) * 1000:.0f} ms.",
            "Pushed commands: the fit runs 512 batches an epoch; between epochs TensorFlow "
            "builds the next data iterator (50-370 ms here) and no callback runs, so a command "
            "that arrives then waits for it (what the max column shows).",
            "Live: the time includes the POST's commit; one event in flight at a time.",
            *(
                [
                    f"{len(not_stopped)} of {stops} runs did not end `stopped` on the server "
                    f"({', '.join(not_stopped)}): the client gives a request in flight at train "
                    "end 0.5 s before it spools the last events for later."
                ]
                if not_stopped
                else []
            ),
        ],
    )


def _latency_row(measure, seconds, target, target_text, peer):
    p95 = percentile(seconds, 95)
    return {
        "measure": measure,
        "p50 ms": percentile(seconds, 50) * 1000,
        "p95 ms": p95 * 1000,
        "max ms": max(seconds) * 1000,
        "target p95": target_text,
        "holds": "yes" if p95 <= target else "no",
        "peer": peer,
    }
