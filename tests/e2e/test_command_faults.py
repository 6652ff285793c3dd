"""Remote commands when things go wrong: a server killed and restarted, a dropped channel,
a client that takes a command and never says how it ended.

Each command must still end applied, and applied once: the training's push
channel reconnects, the outcome poster retries, and the server keeps state.
"""

import contextlib
import socket
import threading

import httpx
import keras
import pytest

from callboard.client import ModelCheckpoint, RemoteControl, RemoteMonitor
from tests.server_process import free_port

from .test_remote_control import Steering, fit_steered, wait_for
from .test_training import unique

OUTAGE_DEADLINE = 120  # seconds: a restart on a busy machine plus the retries' backoff


class Gate(keras.callbacks.Callback):
    """Placed before RemoteControl: while closed, the fit waits at the next batch's start."""

    def __init__(self):
        super().__init__()
        self.opened = threading.Event()
        self.opened.set()
        self.holding = threading.Event()

    def close(self):
        self.holding.clear()
        self.opened.clear()

    def on_train_batch_begin(self, batch, logs=None):
        if not self.opened.is_set():
            self.holding.set()
            assert self.opened.wait(OUTAGE_DEADLINE), "the test never reopened the gate"


def reconnect(steering, root):
    """A fresh HTTP client for the steering: the old one's connections died with the server."""
    steering.http.close()
    steering.http = httpx.Client(base_url=f"{root}/api/v1", timeout=30)


def settled(steering, command_id, timeout=OUTAGE_DEADLINE):
    return wait_for(
        lambda: (c := steering.commands()[command_id])["state"] in ("applied", "refused") and c,
        f"command {command_id} settling",
        timeout,
    )


def applied_events(steering):
    """command_id -> how many `command_applied` events the run has for it."""
    counts = {}
    for event in steering.events("command_applied"):
        key = event["data"]["command_id"]
        counts[key] = counts.get(key, 0) + 1
    return counts


def current_rate(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def test_commands_survive_a_server_killed_and_restarted(server_factory, tmp_path):
    server = server_factory()
    steering = Steering(server.root, unique("cmd-killed"))
    folder = tmp_path / "checkpoints"
    pattern = str(folder / "ckpt-{epoch:03d}-{batch:02d}.weights.h5")
    gate, sent = Gate(), {}

    def steer(steering):
        wait_for(
            lambda: steering.http.get(f"/runs/{steering.run_id}").json()["epochs_done"], "1 epoch"
        )
        # 1. Killed and restarted: a command issued afterwards still arrives, once.
        server.kill()
        server.start()
        reconnect(steering, server.root)
        sent["lr"] = steering.send("set_learning_rate", 0.0005)
        assert settled(steering, sent["lr"])["state"] == "applied"
        # 2. Delivered, then the server dies before the outcome is posted.
        gate.close()
        assert gate.holding.wait(OUTAGE_DEADLINE), "the fit never reached the gate"
        sent["checkpoint"] = steering.send("checkpoint")
        wait_for(
            lambda: steering.commands()[sent["checkpoint"]]["state"] == "delivered",
            "the checkpoint command's delivery",
        )
        server.kill()
        gate.opened.set()  # the training saves now; its outcome can't be posted yet
        wait_for(lambda: list(folder.glob("*.weights.h5")), "the checkpoint file")
        server.start()
        reconnect(steering, server.root)
        sent["checkpoint_outcome"] = settled(steering, sent["checkpoint"])
        sent["stop"] = steering.send("stop")
        assert settled(steering, sent["stop"])["state"] == "applied"

    monitor = RemoteMonitor(root=server.root, run=steering.name, project="e2e")
    checkpoint = ModelCheckpoint(pattern, save_weights_only=True, save_freq=10**9)
    model, _ = fit_steered(steering, steer, [monitor, checkpoint, gate, RemoteControl()])

    assert sent["checkpoint_outcome"]["state"] == "applied", sent["checkpoint_outcome"]
    commands = steering.commands()
    assert [commands[sent[kind]]["state"] for kind in ("lr", "checkpoint", "stop")] == [
        "applied"
    ] * 3
    assert current_rate(model) == pytest.approx(5e-4)
    [saved_file] = folder.glob("*.weights.h5")  # one file, not two
    [saved] = steering.events("checkpoint_saved")
    assert saved["data"]["path"] == str(saved_file)
    counts = applied_events(steering)
    assert [counts.get(sent[kind]) for kind in ("lr", "checkpoint", "stop")] == [1, 1, 1]
    assert steering.status_once_not("running") == "stopped"


class CuttableProxy:
    """A TCP proxy to `upstream` whose connections the test can cut, then refuse for a while.

    While refusing, it reads each new connection's request, notes its first line
    in `refused`, and closes it unanswered, as a dropped network would.
    """

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.refusing = False
        self.refused = []
        self.forwarded = []  # first lines of requests passed on
        self._sockets = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        with self._lock:  # a connection is either refused or registered, so cut() reaches it
            refused = self.refusing
            if not refused:
                self._sockets.append(client)
        if refused:
            client.settimeout(10)
            with contextlib.suppress(OSError):
                self.refused.append(client.recv(65536).split(b"\r\n", 1)[0].decode())
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()
            return
        with self._lock:
            cut_meanwhile = self.refusing
            if not cut_meanwhile:
                self._sockets.append(upstream)
        if cut_meanwhile:
            client.close()
            upstream.close()
            return
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source, target, requests):
        try:
            while data := source.recv(65536):
                if requests:
                    self.forwarded.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self):
        """Refuse new connections and drop every open one."""
        with self._lock:
            self.refusing = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self):
        self.refusing = False

    def close(self):
        self._listener.close()
        self.cut()


def test_a_dropped_channel_reconnects_and_the_command_issued_meanwhile_arrives(live_server):
    proxy = CuttableProxy(live_server.port)
    steering = Steering(live_server.root, unique("cmd-dropped"))
    sent = {}

    def long_polls(lines):
        return [line for line in lines if "/commands/pending" in line]

    def steer(steering):
        wait_for(lambda: long_polls(proxy.forwarded), "the channel's first long-poll")
        proxy.cut()  # mid-wait: the long-poll's connection dies under it
        sent["lr"] = steering.send("set_learning_rate", 0.0005)  # straight to the server
        wait_for(lambda: long_polls(proxy.refused), "the channel asking again")
        proxy.restore()
        sent["outcome"] = settled(steering, sent["lr"])
        sent["stop"] = settled(steering, steering.send("stop"))

    try:
        monitor = RemoteMonitor(root=proxy.root, run=steering.name, project="e2e")
        model, _ = fit_steered(steering, steer, [monitor, RemoteControl()])
    finally:
        proxy.close()
    assert sent["outcome"]["state"] == "applied", sent["outcome"]
    assert sent["stop"]["state"] == "applied"
    assert current_rate(model) == pytest.approx(5e-4)
    assert applied_events(steering)[sent["lr"]] == 1


def test_a_client_that_never_reports_leaves_the_command_delivered_and_cancellable(
    server_factory, database_url
):
    server = server_factory(database_url)
    with httpx.Client(base_url=f"{server.root}/api/v1", timeout=30) as http:
        created = http.post("/runs", json={"name": "silent", "project": "e2e", "uid": unique("u")})
        assert created.status_code == 201, created.text
        run = created.json()["id"]
        issued = http.post(
            f"/runs/{run}/commands", json={"kind": "set_learning_rate", "value": 0.1}
        )
        assert issued.status_code == 201, issued.text
        command = issued.json()["id"]

        taken = http.get(f"/runs/{run}/commands/pending", params={"wait": 0})
        assert [c["id"] for c in taken.json()["commands"]] == [command]
        [listed] = http.get(f"/runs/{run}/commands").json()["commands"]
        assert listed["state"] == "delivered" and listed["delivered_at"] is not None
        # Still delivered, so a reconnecting client is given it again.
        again = http.get(f"/runs/{run}/commands/pending", params={"wait": 0}).json()["commands"]
        assert [(c["id"], c["state"]) for c in again] == [(command, "delivered")]

        cancelled = http.post(f"/runs/{run}/commands/{command}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        late = http.post(f"/runs/{run}/commands/{command}/outcome", json={"state": "applied"})
        assert late.status_code == 409, late.text
        assert "detail" in late.json()
        [listed] = http.get(f"/runs/{run}/commands").json()["commands"]
        assert listed["state"] == "cancelled"
        assert http.get(f"/runs/{run}/commands/pending", params={"wait": 0}).json() == {
            "commands": []
        }
