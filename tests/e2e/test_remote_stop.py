"""RemoteStop beside the stock Keras RemoteMonitor, on a server with tokens.

The stock callback never learns its run's id, so RemoteStop finds the run by
name, with the same ingest token the stock callback posts with.
"""

import threading
import time
import warnings

import httpx
import keras
import pytest

from callboard.client import RemoteStop
from tests.server.test_auth import make_token

from .test_training import unique
from .training import slow_batches, tiny_data, tiny_model


@pytest.fixture(scope="module")
def tokens_server(tmp_path_factory):
    """A real server with tokens: `(server, {"admin", "ingest", "control", "elsewhere"})`."""
    from tests.server_process import ServerProcess

    url = f"sqlite:///{tmp_path_factory.mktemp('stop') / 'stop.db'}"
    admin = make_token(url, "admin", "admin")
    server = ServerProcess(url).start()
    tokens = {"admin": admin}
    for name, role, project in [
        ("ingest", "ingest", "lab"),
        ("control", "control", None),
        ("elsewhere", "ingest", "other"),
    ]:
        made = httpx.post(
            f"{server.root}/api/v1/tokens",
            headers=bearer(admin),
            json={"name": name, "role": role, "project": project},
        )
        assert made.status_code == 201, made.text
        tokens[name] = made.json()["token"]
    yield server, tokens
    server.stop()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def stock_monitor(root, name, token):
    return keras.callbacks.RemoteMonitor(
        root=root, path=f"/publish/epoch/end/?run={name}&project=lab", headers=bearer(token)
    )


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)
    return value


def test_remote_stop_with_an_ingest_token_stops_a_stock_monitored_fit(tokens_server):
    server, tokens = tokens_server
    name = unique("stock-stop")
    runs = f"{server.root}/api/v1/runs"
    control = bearer(tokens["control"])

    def press_stop():  # someone with a control token, on another machine
        found = wait_for(
            lambda: httpx.get(runs, params={"name": name}, headers=control).json()["runs"],
            "the stock run",
        )
        stop = httpx.post(f"{runs}/{found[0]['id']}/stop", json={"reason": "e2e"}, headers=control)
        assert stop.status_code == 200, stop.text

    presser = threading.Thread(target=press_stop, daemon=True)
    presser.start()
    stopper = RemoteStop(
        root=server.root, run=name, project="lab", token=tokens["ingest"], interval=0.1
    )
    x, y = tiny_data()
    epochs = 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = tiny_model().fit(
            x,
            y,
            epochs=epochs,
            batch_size=16,
            verbose=0,
            callbacks=[
                stock_monitor(server.root, name, tokens["ingest"]),
                stopper,
                slow_batches(0.01),
            ],
        )
    presser.join(30)
    assert stopper.stopped_remotely and len(history.history["loss"]) < epochs
    assert not [w for w in caught if "Callboard" in str(w.message)]
    [run] = httpx.get(runs, params={"name": name}, headers=control).json()["runs"]
    state = httpx.get(f"{runs}/{run['id']}/control", headers=control).json()
    assert state["state"] == "acknowledged" and state["reason"] == "e2e"


def test_remote_stop_with_a_token_for_another_project_warns_and_training_goes_on(tokens_server):
    server, tokens = tokens_server
    name = unique("refused")
    stopper = RemoteStop(
        root=server.root, run=name, project="lab", token=tokens["elsewhere"], interval=0.05
    )
    x, y = tiny_data()

    def until_warned(epoch, logs):
        wait_for(lambda: [w for w in caught if "remote stop" in str(w.message)], "a warning")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = tiny_model().fit(
            x,
            y,
            epochs=3,
            verbose=0,
            callbacks=[
                stock_monitor(server.root, name, tokens["ingest"]),
                stopper,
                keras.callbacks.LambdaCallback(on_epoch_end=until_warned),
            ],
        )
    assert len(history.history["loss"]) == 3 and not stopper.stopped_remotely
    [warning] = [w for w in caught if "remote stop" in str(w.message)]
    message = str(warning.message)
    assert "server answered 403" in message and "limited to project 'other'" in message
