"""An answer the client did not expect never crashes the training: it warns and goes on.

A newer server may add fields, and may leave out the ones it sends as null; the
client reads both as usual. An answer of another shape (a proxy, another service
at that URL) is not taken as done: the events wait in the spool, with one warning.
"""

import json
import time
import warnings

import httpx
import keras
import pytest

from callboard.client import RemoteMonitor, RemoteStop, Run
from callboard.client._api import ServerApi
from callboard.client._spool import read_spool_file, spool_files
from callboard.client._stop_poller import StopPoller

from .fake_server import FakeServer

ROOT = "http://callboard.test"
ODD = "answered in a shape this client does not know"


def with_a_field_added_later(answer):
    return {**answer, "added_later": {"anything": [1, 2]}}


def without_nulls(answer):
    """`answer` without the fields it sends as null, in records inside it too."""
    if not isinstance(answer, dict):
        return answer
    return {key: without_nulls(value) for key, value in answer.items() if value is not None}


def reshaped(server, reshape, paths=("",)):
    """A client of `server` whose JSON answers to paths ending in one of `paths` go
    through `reshape` (its error answers as they are)."""

    def handle(request):
        response = server.handle(request)
        if response.status_code >= 400 or not request.url.path.endswith(paths):
            return response
        return httpx.Response(response.status_code, json=reshape(response.json()))

    return httpx.Client(transport=httpx.MockTransport(handle))


def callboard_warnings(caught):
    return [str(w.message) for w in caught if "Callboard" in str(w.message)]


@pytest.mark.parametrize("reshape", [with_a_field_added_later, without_nulls])
def test_a_newer_servers_answers_change_nothing_for_the_training(reshape):
    server = FakeServer()
    run = Run(root=ROOT, name="newer", client=reshaped(server, reshape), stop_poll_interval=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with run:
            run.log({"loss": 0.5}, epoch=0)
            assert run.flush(5) and run.id == 1
            server.stop_requested = True
            deadline = time.monotonic() + 10
            while not run.should_stop and time.monotonic() < deadline:
                time.sleep(0.02)
            assert run.should_stop
    assert callboard_warnings(caught) == []
    kinds = [event["kind"] for event in server.stored()]
    assert kinds == ["train_begin", "epoch_end", "train_end"] and server.acknowledged
    assert server.stored()[-1]["data"]["status"] == "stopped"


def with_the_id_as_text(answer):
    return {**answer, "id": str(answer.get("id"))}


@pytest.mark.parametrize(
    "reshape",
    [lambda answer: {"id": 1}, lambda answer: ["not", "an", "object"], with_the_id_as_text],
    ids=["fields-missing", "not-an-object", "wrong-type"],
)
def test_an_answer_of_another_shape_warns_once_and_the_events_wait_in_the_spool(
    reshape, _spool_dir
):
    server = FakeServer()
    client = reshaped(server, reshape)
    run = Run(root=ROOT, name="odd", client=client, flush_timeout=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with run:
            for epoch in range(3):
                run.log({"loss": 1.0 / (epoch + 1)}, epoch=epoch)
            assert not run.should_stop  # nothing to poll before the run is known
    said = callboard_warnings(caught)
    assert len([line for line in said if ODD in line]) == 1
    assert not [line for line in said if "error" in line.lower()]  # not an internal error
    [path] = spool_files(_spool_dir)
    _header, events = read_spool_file(path)
    assert [event["kind"] for event in events].count("epoch_end") == 3
    assert server.runs and not server.stored()  # asked, and nothing taken as done


@pytest.mark.parametrize("odd_answer", [{"run_id": 1}, {"stop_requested": "true"}, "stop"])
def test_an_odd_control_answer_warns_once_and_never_stops_the_training(odd_answer):
    server = FakeServer()
    server.stop_requested = True
    api = ServerApi(ROOT, client=reshaped(server, lambda answer: odd_answer, ("/control",)))
    stops = []
    poller = StopPoller(api, lambda: 1, stops.append, interval=3600)
    with pytest.warns(RuntimeWarning) as warned:
        assert [poller.poll_once() for _ in range(3)] == [False, False, False]
    [warning] = callboard_warnings(warned)
    assert "remote stop" in warning and ODD in warning and "Training goes on" in warning
    assert stops == [] and not server.acknowledged
    assert len(server.requests) == 3  # still polling: the server may be fixed


def test_keras_trains_every_epoch_when_no_answer_is_one_it_knows():
    server = FakeServer()
    server.stop_requested = True  # asked, but the answers saying so can't be read
    client = reshaped(server, lambda answer: {"unexpected": True})
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    x = keras.random.normal((16, 2))
    monitor = RemoteMonitor(root=ROOT, client=client, flush_timeout=1)
    stopper = RemoteStop(interval=0.02)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(
            x, x[:, :1], epochs=3, batch_size=4, verbose=0, callbacks=[monitor, stopper]
        )
    assert len(history.history["loss"]) == 3 and not model.stop_training
    assert not stopper.stopped_remotely
    assert any(ODD in line for line in callboard_warnings(caught))
    sent = [json.loads(r.content)["name"] for r in server.requests if r.url.path == "/api/v1/runs"]
    assert sent  # it did ask
