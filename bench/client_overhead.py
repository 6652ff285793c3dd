"""Client overhead: fit time with no callbacks vs stock RemoteMonitor vs Callboard's.

Each variant trains the same warmed-up model for one 1000-step epoch; variants
are interleaved, their order rotating from round to round, and repeated. Other
work on a small machine slows whole fits down (on 2 cores, often to twice the
time), so three figures are compared to no callbacks: the best fit of each
variant (the least disturbed one: the ratio the targets apply to), the median
fit, and the process's CPU time during the fit (threads included, so a client
thread stealing CPU shows there even when another core hides it from the wall clock).
"""

import os
import socket
import statistics
import tempfile
import threading
import time
import timeit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .report import Report  # noqa: E402


class HungServer:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.root = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for connection in self.held:
            connection.close()


def _model_and_data(steps):
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(steps * 8, 16)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # trace once before timing
    return model, x, y


def _variants(server_root, hung_root):
    import keras

    from callboard.client import RemoteMonitor

    return {
        "no callbacks": lambda: [],
        "stock keras RemoteMonitor": lambda: [
            keras.callbacks.RemoteMonitor(root=server_root, path="/publish/epoch/end/?run=stock")
        ],
        "callboard epoch-level": lambda: [RemoteMonitor(root=server_root, run="epoch")],
        "callboard every 10 batches": lambda: [
            RemoteMonitor(root=server_root, run="batches", batch_frequency=10)
        ],
        "callboard, hung server": lambda: [RemoteMonitor(root=hung_root, run="hung")],
    }


TARGETS = {
    "callboard epoch-level": 1.01,
    "callboard every 10 batches": 1.03,
    "callboard, hung server": 1.03,
}


def hook_cost_microseconds(server_root, calls=20_000):
    """Time of one `log_event` call on the training thread (queue append only)."""
    from callboard.client import Run

    run = Run(root=server_root, name="hook-cost").start()
    metrics = {"batch/loss": 0.5, "batch/accuracy": 0.9}
    seconds = timeit.timeit(
        lambda: run.log_event("batch_end", epoch=0, step=1, metrics=metrics), number=calls
    )
    run.finish()
    return seconds / calls * 1e6


def run(quick=False):
    from tests.server_process import ServerProcess

    steps, repeats = (200, 3) if quick else (1000, 11)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        os.environ["CALLBOARD_SPOOL_DIR"] = os.path.join(tmp, "spool")
        server = ServerProcess(f"sqlite:///{tmp}/bench.db").start()
        hung = HungServer()
        try:
            model, x, y = _model_and_data(steps)
            variants = _variants(server.root, hung.root)
            names = list(variants)
            times = {name: [] for name in variants}
            cpu = {name: [] for name in variants}
            for round_ in range(repeats):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    started, cpu_started = time.perf_counter(), time.process_time()
                    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=variants[name]())
                    times[name].append(time.perf_counter() - started)
                    cpu[name].append(time.process_time() - cpu_started)
            hook_us = hook_cost_microseconds(server.root)
        finally:
            hung.close()
            server.stop()
    return Report(
        title=f"Client overhead ({steps}-step epoch, {repeats} rounds)",
        rows=_rows(times, cpu),
        notes=[
            "ratio: best fit of the variant / best fit with no callbacks; median ratio: the same "
            "with medians; CPU ratio: median process CPU time (all threads) / no callbacks'.",
            f"hook cost on the training thread: {hook_us:.1f} µs per event (queue append)",
        ],
    )


def _rows(times, cpu):
    best = min(times["no callbacks"])
    median = statistics.median(times["no callbacks"])
    median_cpu = statistics.median(cpu["no callbacks"])
    rows = [
        {
            "variant": name,
            "best fit s": min(samples),
            "ratio": min(samples) / best,
            "median fit s": statistics.median(samples),
            "median ratio": statistics.median(samples) / median,
            "CPU ratio": statistics.median(cpu[name]) / median_cpu,
            "target": f"≤ {TARGETS[name]}" if name in TARGETS else "",
        }
        for name, samples in times.items()
    ]
    rows.append(
        {
            "variant": "stock keras RemoteMonitor, hung server",
            "ratio": "∞ (blocks fit forever: requests sets no timeout)",
        }
    )
    return rows
