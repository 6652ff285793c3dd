"""The client against a server that is down, killed, hung, failing or slow: nothing lost."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import keras

from callboard.client import RemoteMonitor
from callboard.client._spool import read_spool_file, spool_files
from tests.server_process import ServerProcess, free_port

from .test_training import find_run, unique
from .training import tiny_data, tiny_model


def slow_epochs(seconds, hold_at=None, resume=None):
    """Sleep `seconds` after each epoch; after epoch `hold_at`, wait until `resume` is set."""

    def on_epoch_end(epoch, logs):
        time.sleep(seconds)
        if epoch == hold_at and not resume.wait(60):
            raise AssertionError("the test never let training resume")

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def train_in_thread(root, name, epochs, epoch_seconds, hold_at=None, **monitor_args):
    """Train in a thread; with `hold_at`, the fit waits after that epoch until `resume.set()`.

    Returns `(thread, result, resume)`: holding the fit while the server is down makes
    the run's end arrive after the server is back, however slowly the server restarts.
    """
    result = {}
    resume = threading.Event()

    def train():
        x, y = tiny_data(64)
        result["history"] = tiny_model().fit(
            x,
            y,
            epochs=epochs,
            verbose=0,
            callbacks=[
                RemoteMonitor(root=root, run=name, **monitor_args),
                slow_epochs(epoch_seconds, hold_at, resume),
            ],
        )

    thread = threading.Thread(target=train)
    thread.start()
    return thread, result, resume


def stored_epochs(root, run_id):
    events = httpx.get(f"{root}/api/v1/runs/{run_id}/events", params={"kind": "epoch_end"})
    return [event["epoch"] for event in events.json()["events"]]


def wait_for_epochs(root, name, count, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = httpx.get(f"{root}/api/v1/runs", params={"name": name}).json()["runs"]
        if runs and runs[0]["epochs_done"] >= count:
            return runs[0]
        time.sleep(0.1)
    raise AssertionError(f"run {name!r} never reached {count} epochs")


def test_server_down_at_start_then_up_stores_every_epoch_once(tmp_path):
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    name = unique("down-then-up")
    thread, _, resume = train_in_thread(root, name, epochs=10, epoch_seconds=0.4, hold_at=4)
    time.sleep(1.0)
    server = ServerProcess(f"sqlite:///{tmp_path / 'late.db'}", port=port).start()
    resume.set()
    try:
        thread.join(60)
        run = wait_for_epochs(root, name, 10)
        assert stored_epochs(root, run["id"]) == list(range(10))
        assert httpx.get(f"{root}/api/v1/runs/{run['id']}").json()["status"] == "finished"
    finally:
        server.stop()


def test_server_killed_mid_run_and_restarted_loses_nothing(server_factory):
    server = server_factory()
    name = unique("killed-server")
    thread, _, resume = train_in_thread(server.root, name, epochs=12, epoch_seconds=0.3, hold_at=6)
    wait_for_epochs(server.root, name, 3)
    server.kill()
    time.sleep(1.0)
    server.start()
    resume.set()
    thread.join(60)
    run = wait_for_epochs(server.root, name, 12)
    assert stored_epochs(server.root, run["id"]) == list(range(12))


class HungServer:
    """Accepts TCP connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(100)
        self.root = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self):
        self.sock.close()
        for connection in self.connections:
            connection.close()


def test_hung_server_neither_blocks_fit_nor_loses_epochs(_spool_dir):
    hung = HungServer()
    try:
        x, y = tiny_data(64)
        started = time.monotonic()
        tiny_model().fit(
            x,
            y,
            epochs=5,
            verbose=0,
            callbacks=[RemoteMonitor(root=hung.root, run="hung", batch_frequency=1)],
        )
        # The stock RemoteMonitor would block here forever (requests sets no timeout).
        assert time.monotonic() - started < 30
    finally:
        hung.close()
    [path] = spool_files(_spool_dir)
    _, events = read_spool_file(path)
    # A request that failed late may spool its events a second time: the server dedupes.
    epochs = {event["epoch"] for event in events if event["kind"] == "epoch_end"}
    assert epochs == set(range(5))
    assert "train_end" in {event["kind"] for event in events}


class FlakyTransport(httpx.BaseTransport):
    """Every other request answers 500; every third waits before reaching the real server."""

    def __init__(self):
        self.real = httpx.HTTPTransport()
        self.count = 0

    def handle_request(self, request):
        self.count += 1
        if self.count % 2 == 0:
            return httpx.Response(500, json={"detail": "injected failure"})
        if self.count % 3 == 0:
            time.sleep(0.3)
        return self.real.handle_request(request)


def test_failing_and_slow_answers_still_store_everything_once(live_server):
    name = unique("flaky")
    transport = FlakyTransport()
    x, y = tiny_data(64)
    tiny_model().fit(
        x,
        y,
        epochs=6,
        batch_size=8,
        verbose=0,
        callbacks=[
            RemoteMonitor(
                root=live_server.root,
                run=name,
                batch_frequency=1,
                client=httpx.Client(transport=transport),
            ),
            slow_epochs(0.2),
        ],
    )
    run = wait_for_epochs(live_server.root, name, 6)
    assert stored_epochs(live_server.root, run["id"]) == list(range(6))
    batches = httpx.get(f"{live_server.root}/api/v1/runs/{run['id']}/metrics/batch/loss").json()
    assert [p["step"] for p in batches["points"]] == list(range(1, 6 * 8 + 1))
    assert transport.count > 4


TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys, time, keras
    from callboard.client import RemoteMonitor
    from tests.e2e.training import tiny_data, tiny_model

    x, y = tiny_data(64)
    raise_at = int(sys.argv[3])

    def on_epoch_end(epoch, logs):
        time.sleep(0.3)
        if epoch == raise_at:
            raise ValueError("exploded on purpose")

    tiny_model().fit(x, y, epochs=200, verbose=0, callbacks=[
        RemoteMonitor(root=sys.argv[1], run=sys.argv[2]),
        keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end),
    ])
    """
)


def start_training_process(root, name, raise_at=-1, env=None):
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, root, name, str(raise_at)],
        cwd=os.getcwd(),
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_training_killed_while_server_down_then_callboard_sync(tmp_path, _spool_dir):
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    name = unique("killed-training")
    process = start_training_process(root, name)
    deadline = time.monotonic() + 60
    spooled = []
    while time.monotonic() < deadline and len(spooled) < 3:
        time.sleep(0.2)
        files = spool_files(_spool_dir)
        if files:
            spooled = [e for e in read_spool_file(files[0])[1] if e["kind"] == "epoch_end"]
    process.send_signal(signal.SIGKILL)
    process.wait()
    _, events = read_spool_file(spool_files(_spool_dir)[0])
    epochs = [e["epoch"] for e in events if e["kind"] == "epoch_end"]
    assert len(epochs) >= 3

    server = ServerProcess(f"sqlite:///{tmp_path / 'sync.db'}", port=port).start()
    try:
        synced = subprocess.run(
            [sys.executable, "-m", "callboard.server", "sync"],
            capture_output=True,
            text=True,
            env=os.environ,
        )
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert f"sent {len(events)} events" in synced.stdout
        run = find_run(root, name)
        assert stored_epochs(root, run["id"]) == epochs
        assert not spool_files(_spool_dir)
    finally:
        server.stop()


def test_an_exception_escaping_fit_marks_the_run_failed(live_server):
    name = unique("raises")
    process = start_training_process(live_server.root, name, raise_at=1)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and b"exploded on purpose" in stderr
    run = find_run(live_server.root, name)
    detail = httpx.get(f"{live_server.root}/api/v1/runs/{run['id']}").json()
    assert detail["status"] == "failed"
    assert detail["error"] == "ValueError: exploded on purpose"
    assert detail["epochs_done"] == 2
    end = httpx.get(
        f"{live_server.root}/api/v1/runs/{run['id']}/events", params={"kind": "train_end"}
    ).json()["events"]
    assert json.dumps(end[0]["data"]).count("exploded") == 1
