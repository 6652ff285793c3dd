"""Latency: a remote Stop until `fit()` returns, and a posted event until its server-sent event.

Stop: a real Keras `fit()` runs in a thread with Callboard's `RemoteMonitor` and
`RemoteStop(interval=...)`; once batches are flowing, the benchmark POSTs
`/runs/{id}/stop` at a random moment and times until `fit()` has returned
(the stop is polled, so it lands uniformly within one poll interval).
Stock Keras and MLflow have no remote stop; the target is the design's:
p95 ≤ poll interval + one batch.

Live: a subscriber reads `GET /runs/{id}/stream`; the benchmark POSTs one event
at a time and times until the matching message arrives. MLflow has no push
stream (its UI polls), so there is no peer figure.
"""

import json
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


def _model_and_data():
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64 * 64, 256)).astype("float32")
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


def stop_latencies(root, stops, model, x, y):
    """`(seconds from POST stop to fit() returning, ... to the training loop ending)` lists."""
    from callboard.client import RemoteMonitor, RemoteStop

    control = httpx.Client(base_url=root, timeout=30)
    latencies, loop_ends, not_stopped = [], [], []
    try:
        for index in range(stops):
            monitor = RemoteMonitor(root=root, run=f"stop-{index}", project="bench-stop")
            stopper = RemoteStop(interval=STOP_INTERVAL)
            returned = {}
            callbacks = [_loop_end_clock(returned), monitor, stopper]

            def train(callbacks=callbacks, returned=returned):
                model.fit(x, y, epochs=10_000, batch_size=64, verbose=0, callbacks=callbacks)
                returned["at"] = time.perf_counter()

            thread = threading.Thread(target=train, daemon=True)
            thread.start()
            deadline = time.monotonic() + 60
            while (monitor.run is None or monitor.run.id is None) and time.monotonic() < deadline:
                time.sleep(0.01)
            if monitor.run is None or monitor.run.id is None:
                raise RuntimeError("the run never reached the server")
            time.sleep(0.2 + STOP_PHASES.uniform(0, STOP_INTERVAL))  # a random poll phase
            requested = time.perf_counter()
            control.post(f"/api/v1/runs/{monitor.run.id}/stop").raise_for_status()
            thread.join(60)
            if "at" not in returned:
                raise RuntimeError("fit() did not return within 60 s of the stop")
            latencies.append(returned["at"] - requested)
            loop_ends.append(returned["loop ended"] - requested)
            time.sleep(0.5)  # let a retried train_end land
            state = control.get(f"/api/v1/runs/{monitor.run.id}").json()
            if state["status"] != "stopped":
                not_stopped.append(state["status"])
    finally:
        control.close()
    return latencies, loop_ends, not_stopped


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
        finally:
            server.stop()
    train_end = [total - loop for total, loop in zip(stop, loop_end, strict=True)]
    stop_target = STOP_INTERVAL + batch
    live_p95 = percentile(live, 95) * 1000
    rows = [
        {
            "measure": f"stop → fit() returns ({stops} stops, poll every {STOP_INTERVAL} s)",
            "p50 ms": percentile(stop, 50) * 1000,
            "p95 ms": percentile(stop, 95) * 1000,
            "max ms": max(stop) * 1000,
            "target p95": f"≤ {stop_target * 1000:.0f} ms (poll + one {batch * 1000:.0f} ms batch)",
            "holds": "yes" if percentile(stop, 95) <= stop_target else "no",
            "peer": "stock Keras / MLflow: no remote stop",
        },
        {
            "measure": f"POST event → server-sent event ({posts} posts)",
            "p50 ms": percentile(live, 50) * 1000,
            "p95 ms": live_p95,
            "max ms": max(live) * 1000,
            "target p95": f"≤ {LIVE_TARGET_MS:.0f} ms",
            "holds": "yes" if live_p95 <= LIVE_TARGET_MS else "no",
            "peer": "MLflow: no push stream (its UI polls)",
        },
    ]
    return Report(
        title="Latency: remote stop and live stream (Callboard, loopback)",
        rows=rows,
        notes=[
            "Stop: a real Keras fit (TensorFlow CPU, 3 dense layers, batch 64) with "
            "RemoteMonitor + RemoteStop in a thread; the stop is posted at a random moment, "
            "so it waits on average half a poll interval; the time includes the last batch "
            "and on_train_end (where the client delivers the run's last events).",
            f"Stop, split: POST stop → training loop ended p50 "
            f"{percentile(loop_end, 50) * 1000:.0f} ms, p95 {percentile(loop_end, 95) * 1000:.0f} "
            f"ms (the poll and the last batch); loop ended → fit() returned (on_train_end: the "
            f"run's last events delivered) p50 "
            f"{percentile(train_end, 50) * 1000:.0f} ms, p95 "
            f"{percentile(train_end, 95) * 1000:.0f} ms.",
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
