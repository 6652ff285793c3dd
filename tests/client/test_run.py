import json
import math
import threading
import time
import warnings
from types import SimpleNamespace

import pytest

from callboard.client import Run, _sender
from callboard.client._api import DeliveryFailed
from callboard.client._sender import EventSender
from callboard.client._spool import Spool, read_spool_file, spool_files
from callboard.client.sync import sync

from .fake_server import FakeServer
from .scripts import run_script


@pytest.fixture
def server():
    return FakeServer()


def make_run(server, **kwargs):
    return Run(root="http://callboard.test", name="unit", client=server.client(), **kwargs)


def test_events_arrive_once_in_order_with_non_finite_values_named(server):
    with make_run(server, config={"lr": 0.1}) as run:
        run.log({"loss": 0.5}, epoch=0)
        run.log({"loss": math.nan, "grad": math.inf}, epoch=1)
    events = server.stored()
    assert [e["kind"] for e in events] == ["train_begin", "epoch_end", "epoch_end", "train_end"]
    first = events[0]["seq"]
    assert [e["seq"] for e in events] == [first, first + 1, first + 2, first + 3]
    assert events[2]["metrics"] == {"loss": "NaN", "grad": "Infinity"}
    assert events[-1]["data"] == {"status": "finished"}
    assert server.runs[1]["config"] == {"lr": 0.1}
    assert server.runs[1]["name"] == "unit"


def test_an_exception_in_the_block_ends_the_run_failed(server):
    with pytest.raises(ZeroDivisionError), make_run(server):
        raise ZeroDivisionError("boom")
    assert server.stored()[-1]["data"]["status"] == "failed"
    assert "ZeroDivisionError" in server.stored()[-1]["data"]["error"]


def test_ctrl_c_ends_the_run_stopped_not_failed(server):
    # Ctrl-C is how the README says to end the demo: it marked the run 'failed'.
    with pytest.raises(KeyboardInterrupt), make_run(server):
        raise KeyboardInterrupt
    assert server.stored()[-1]["data"]["status"] == "stopped"
    assert "Ctrl-C" in server.stored()[-1]["data"]["error"]


def test_logging_without_start_starts_the_run(server):
    # Run(...).log() without start() or `with` queued events that were never sent.
    run = make_run(server)
    run.log({"loss": 0.5}, epoch=0)
    run.finish()
    assert [e["kind"] for e in server.stored()] == ["train_begin", "epoch_end", "train_end"]


def test_server_errors_are_retried_and_nothing_is_lost_or_duplicated(server):
    server.fail_next(3, status=503)
    with make_run(server) as run:
        for epoch in range(20):
            run.log({"loss": float(epoch)}, epoch=epoch)
    epochs = [e["epoch"] for e in server.stored() if e["kind"] == "epoch_end"]
    assert epochs == list(range(20))


def test_retry_after_is_honoured(server):
    server.fail_next(1, status=429, headers={"Retry-After": "0.6"})
    run = make_run(server).start()
    run.flush(5)
    first_failure = time.monotonic()
    run.log({"loss": 1.0}, epoch=0)
    run.flush(5)
    assert not server.stored()
    while len(server.stored()) < 2 and time.monotonic() - first_failure < 5:
        run.log({"loss": 2.0}, epoch=1)
        run.flush(5)
        time.sleep(0.05)
    assert time.monotonic() - first_failure >= 0.5
    run.finish()
    assert [e["epoch"] for e in server.stored() if e["kind"] == "epoch_end"][:2] == [0, 1]


def test_unreachable_server_spools_to_disk_and_sync_delivers_later(server, _spool_dir):
    server.down = True
    run = make_run(server, flush_timeout=2)
    started = time.monotonic()
    with run:
        for epoch in range(5):
            run.log({"loss": 1.0 / (epoch + 1)}, epoch=epoch)
    assert time.monotonic() - started < 3
    [path] = spool_files(_spool_dir)
    header, events = read_spool_file(path)
    assert header["run"]["uid"] == run.uid
    assert len(events) == 7
    server.down = False
    results = sync(_spool_dir, client=server.client())
    assert results == {path: 7}
    assert [e["seq"] for e in server.stored()] == [e["seq"] for e in events]
    assert not spool_files(_spool_dir)


def test_a_rejected_event_is_dropped_alone(server):
    server.reject_kinds = {"bad_kind"}
    with make_run(server) as run:
        run.log_event("bad_kind")
        run.log({"loss": 1.0}, epoch=0)
    kinds = [e["kind"] for e in server.stored()]
    assert kinds == ["train_begin", "epoch_end", "train_end"]


def test_should_stop_follows_the_server_and_acknowledges(server):
    run = make_run(server, stop_poll_interval=0.05).start()
    assert run.should_stop is False
    server.stop_requested = True
    deadline = time.monotonic() + 5
    while not run.should_stop and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.should_stop
    assert server.acknowledged
    run.finish()
    assert server.stored()[-1]["data"]["status"] == "stopped"


def test_non_urgent_events_arrive_within_the_batch_window_sharing_requests(server):
    run = make_run(server).start()
    run.flush(5)
    for step in range(20):
        run.log_event("batch_end", step=step, metrics={"batch/loss": 1.0}, urgent=False)
    deadline = time.monotonic() + 5
    while len(server.stored()) < 21 and time.monotonic() < deadline:
        time.sleep(0.02)
    # Delivered without any urgent event to carry them, in one or two requests.
    assert [e["step"] for e in server.stored()[1:]] == list(range(20))
    assert 1 <= len(server.posted_kinds()) - 1 <= 2
    run.finish()


def test_flush_waits_for_an_event_submitted_just_as_the_sender_went_idle(server):
    # The sender found its queue empty, then marked itself idle: an event submitted and a
    # flush begun in between found it idle, and flush() returned with the event unsent.
    run = make_run(server).start()
    assert run.flush(5)
    sender = run._sender
    reached = threading.Event()  # the other thread waits in flush(), or for the sender's lock
    seen = {}

    def log_and_flush():
        run.log({"loss": 1.0}, epoch=0)
        seen["flushed"] = run.flush(5)
        seen["stored"] = [e["kind"] for e in server.stored()]

    other = threading.Thread(target=log_and_flush)

    class IdleLate(threading.Event):
        """The sender's idle flag: its first set() lets `other` run up to a wait first."""

        def set(self):
            if not other.ident:  # the sender thread, having found its queue empty
                other.start()
                assert reached.wait(5)
                super().set()
                if seen.get("waiting"):
                    other.join(5)  # flush() returned: before the sender could go on
                return
            super().set()

        def wait(self, timeout=None):
            seen["waiting"] = True
            reached.set()
            return super().wait(timeout)

    class SaysWhenWaitedFor:
        def __init__(self):
            self.lock = threading.Lock()

        def __enter__(self):
            if not self.lock.acquire(blocking=False):
                reached.set()
                self.lock.acquire()

        def __exit__(self, *exc):
            self.lock.release()

    sender._idle_lock = SaysWhenWaitedFor()
    sender._idle = IdleLate()
    sender._wake.set()  # a step with nothing to do: it ends by marking the sender idle
    assert reached.wait(10)  # set once `other` runs
    other.join(10)
    assert seen["flushed"]
    assert seen["stored"][-1] == "epoch_end"
    run.finish()


def test_an_unreachable_server_gets_one_spool_write_per_window_not_per_event(server, monkeypatch):
    server.down = True
    run = make_run(server).start()
    writes = []
    append = run._sender.spool.append
    monkeypatch.setattr(run._sender.spool, "append", lambda events: writes.append(len(events)))
    for step in range(50):
        run.log_event("batch_end", step=step, urgent=False)
        time.sleep(0.01)
    run.flush(5)
    monkeypatch.setattr(run._sender.spool, "append", append)
    assert sum(writes) >= 50
    assert len(writes) <= 5  # ~0.5 s of events, a 0.5 s window: not one write each
    run.finish()


def test_finish_does_not_keep_retrying_a_server_that_cannot_be_reached(server):
    server.down = True
    run = make_run(server).start()
    run.flush(5)
    tried = len(server.requests)
    run.finish()
    assert len(server.requests) == tried + 1  # one try at close, then the spool keeps it
    time.sleep(1.0)
    assert len(server.requests) == tried + 1


def test_finish_retries_a_server_answering_errors(server):
    run = make_run(server).start()
    run.flush(5)
    server.fail_next(2, status=503)
    run.finish()
    assert server.stored()[-1]["kind"] == "train_end"


def test_a_request_stalled_at_finish_still_delivers_once_it_answers(server, _spool_dir):
    server.hold_kind = "train_end"
    run = make_run(server).start()
    run.flush(5)
    run.finish()  # gives up waiting on the held request: the spool keeps train_end
    assert "train_end" not in [e["kind"] for e in server.stored()]
    server.release.set()
    deadline = time.monotonic() + 5
    while spool_files(_spool_dir) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.stored()[-1]["data"] == {"status": "finished"}
    assert not spool_files(_spool_dir)


def test_a_stalled_request_failing_after_finish_gave_up_is_spooled_once(server, _spool_dir):
    # finish() spools the events of a request it stopped waiting for; when that request
    # then failed, the sender spooled them a second time (the spool replayed duplicates).
    server.hold_kind = "train_end"
    server.held_status = 503
    run = make_run(server).start()
    run.flush(5)
    run.finish()  # gives up waiting on the held request: the spool keeps train_end
    server.down = True  # so the spool stays to be read
    server.release.set()
    run._sender._thread.join(10)  # the held request failed, the sender gave up
    assert not run._sender._thread.is_alive()
    [path] = spool_files(_spool_dir)
    _, events = read_spool_file(path)
    seqs = [event["seq"] for event in events]
    assert "train_end" in [event["kind"] for event in events]
    assert len(seqs) == len(set(seqs)), seqs


def test_finish_waits_for_many_prompt_answers_that_together_take_long(server, _spool_dir):
    # finish() timed one whole delivery, all its requests together, as if it were one
    # request: past 0.25 s it took the run's last events for a hung request and left them
    # in the spool, though the server answered each request at once.
    run = make_run(server).start()
    assert run.flush(5)
    server.max_values = 1  # e.g. a strict proxy: one metric value per request, after 413s
    server.delay = 0.05  # each answer is prompt; the ~25 requests below take over a second
    for step in range(10):
        run.log_event("batch_end", step=step, metrics={"loss": 1.0}, urgent=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. "the run ended with events..."
        run.finish()
    assert [e["step"] for e in server.stored() if e["kind"] == "batch_end"] == list(range(10))
    assert server.stored()[-1]["kind"] == "train_end"
    assert not spool_files(_spool_dir)


def test_a_stop_is_acknowledged_before_the_events_that_follow_it(server):
    run = make_run(server, stop_poll_interval=0.05).start()
    assert run.should_stop is False
    server.stop_requested = True
    deadline = time.monotonic() + 5
    while not run.should_stop and time.monotonic() < deadline:
        time.sleep(0.01)
    run.log({"loss": 1.0}, epoch=0)
    run.finish()
    sent = server.posted_kinds()
    assert sent.count("ack") == 1
    assert sent.index("ack") < next(i for i, kinds in enumerate(sent) if "train_end" in kinds)


EXIT_SCRIPT = """
import atexit, threading
from tests.client.fake_server import FakeServer

server = FakeServer()
server.hold_kind = "train_end"
atexit.register(lambda: print("stored", [e["kind"] for e in server.stored()]))  # runs last
from callboard.client import Run

run = Run(root="http://callboard.test", client=server.client()).start()
run.flush(5)
release = threading.Timer(0.6, server.release.set)
release.daemon = True
release.start()
run.finish()  # gives up on the held request; the sender goes on in the background
print("finished", [e["kind"] for e in server.stored()])
"""


def test_a_process_exiting_right_after_finish_still_delivers_a_slow_last_request(tmp_path):
    done = run_script(EXIT_SCRIPT, tmp_path)
    assert "finished ['train_begin']" in done.stdout
    assert "stored ['train_begin', 'train_end']" in done.stdout


def test_an_unwritable_spool_loses_nothing_while_the_process_lives(server, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    server.down = True
    run = make_run(server, spool_dir=blocked).start()
    with pytest.warns(RuntimeWarning, match="could not write its spool"):
        for epoch in range(5):
            run.log({"loss": float(epoch)}, epoch=epoch)
        run.flush(5)
    server.down = False
    run.finish()
    assert [e["epoch"] for e in server.stored() if e["kind"] == "epoch_end"] == list(range(5))


BAD_NAMES = ("val_" + "x" * 197, "bad\nname")  # 201 characters; a newline


def test_a_bad_metric_name_is_dropped_alone_with_one_warning_naming_it(api):
    run = Run(root="http://testserver", name="bad-names", client=api)
    with pytest.warns(RuntimeWarning, match="dropped metrics") as caught, run:
        for epoch in range(3):
            run.log({"loss": 1.0 / (epoch + 1), **dict.fromkeys(BAD_NAMES, 2.0)}, epoch=epoch)
    dropped = [str(w.message) for w in caught if "dropped metrics" in str(w.message)]
    assert len(dropped) == 1
    assert BAD_NAMES[0][:40] in dropped[0] and repr(BAD_NAMES[1]) in dropped[0]
    deadline = time.monotonic() + 10  # a slow answer at finish is delivered in the background
    while len(points := stored_points(api, run, "loss")) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [point["value"] for point in points] == [1.0, 0.5, 1.0 / 3]


def stored_points(api, run, key):
    """The points of `run`'s metric `key` stored on the server so far."""
    answer = api.get(f"/api/v1/runs/{run.id}/metrics/{key}")
    return answer.json()["points"] if answer.status_code == 200 else []


def test_metric_names_follow_the_servers_rule_exactly():
    from callboard.client._values import MAX_NAME_LENGTH, name_problem
    from callboard.server.api.schemas import MAX_KEY_LENGTH, EventIn

    assert MAX_NAME_LENGTH == MAX_KEY_LENGTH
    for name in ["loss", "x" * 200, "x" * 201, "", "a\tb", "a\x1fb", "a\x7fb", "ü/µ"]:
        try:
            EventIn(seq=1, kind="epoch_end", metrics={name: 1.0})
            server_takes = True
        except ValueError:
            server_takes = False
        assert (name_problem(name) is None) == server_takes, name


def test_no_request_carries_more_than_10000_metric_values(server):
    run = make_run(server).start()
    run.flush(5)
    wide = {f"m{i}": float(i) for i in range(1000)}
    for step in range(25):
        run.log_event("batch_end", step=step, metrics=wide, urgent=False)
    run.finish()
    sizes = [
        sum(len(e["metrics"]) for e in json.loads(r.content)["events"])
        for r in server.requests
        if r.url.path.endswith("/events")
    ]
    assert max(sizes) <= 10_000
    assert [e["step"] for e in server.stored() if e["kind"] == "batch_end"] == list(range(25))


def test_a_request_refused_as_too_large_is_split_and_later_ones_stay_small(
    server, _spool_dir, monkeypatch
):
    # On a loaded CI machine finish() took this test's many quick requests for a hung one
    # (it timed them together) and left events in the spool; a flush() could also return
    # before the sender had taken the events submitted just before it.
    monkeypatch.setattr(_sender, "STALLED_AFTER", 60.0)  # stalls are not tested here
    server.max_values = 2_500  # e.g. a proxy stricter than Callboard
    run = make_run(server).start()
    assert run.flush(5)
    wide = {f"m{i}": float(i) for i in range(1000)}
    for step in range(25):
        run.log_event("batch_end", step=step, metrics=wide, urgent=False)
    assert run.flush(5)  # how far the sender got before the outage must not depend on timing
    assert len(server.stored()) == 26
    server.down = True  # what is spooled meanwhile goes through the same split
    run.log_event("batch_end", step=25, metrics=wide)
    assert run.flush(5)
    server.down = False
    run.finish()
    assert [e["step"] for e in server.stored() if e["kind"] == "batch_end"] == list(range(26))
    assert server.stored()[-1]["kind"] == "train_end"
    assert not spool_files(_spool_dir)
    posts = [r for r in server.requests if r.url.path.endswith("/events")]
    assert len(posts) < 26  # not one request per event once it knows what fits


def test_at_finish_the_warning_says_where_undelivered_events_wait(server, _spool_dir):
    run = make_run(server).start()
    run.flush(5)
    server.down = True
    with pytest.warns(RuntimeWarning) as caught:
        run.log({"loss": 1.0}, epoch=0)
        run.finish()
    [path] = spool_files(_spool_dir)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "sent when it answers" in m]
    [left] = [m for m in messages if str(path) in m]
    assert "callboard sync --root http://callboard.test" in left


EXIT_UNREACHABLE_SCRIPT = """
from callboard.client import Run
from tests.client.fake_server import FakeServer

server = FakeServer()
run = Run(root="http://callboard.test", client=server.client(), flush_timeout=1).start()
run.flush(5)
server.down = True
run.log({"loss": 1.0}, epoch=0)
# the process ends here without run.finish()
"""


def test_a_process_exiting_with_the_server_down_says_where_its_events_wait(tmp_path):
    done = run_script(EXIT_UNREACHABLE_SCRIPT, tmp_path)
    [path] = spool_files(tmp_path)
    assert str(path) in done.stderr
    assert "callboard sync --root http://callboard.test" in done.stderr


def test_config_and_event_data_the_server_cannot_take_as_given_are_sent_plain(api):
    # A NumPy value in the config made the sender fail on every try: the run was never
    # created and nothing of the training reached the server.
    import numpy as np

    deep = {"level": 0}
    for level in range(1, 12):
        deep = {"level": level, "inner": deep}
    config = {
        "lr": np.float32(0.5),
        "sizes": (np.int64(1), 2),
        "mask": np.array([True, False]),
        "x" * 201: 1,
        "deep": deep,
        "optimizer": object(),
    }
    with pytest.warns(RuntimeWarning, match="could not send everything as given") as caught:
        run = Run(root="http://testserver", name="plain-config", config=config, client=api)
        with run:
            run.log_event("note", data={"best": np.float64(0.25), "when": np.int32(3)})
            run.log({"loss": 1.0}, epoch=0)
    [warning] = [str(w.message) for w in caught if "as given" in str(w.message)]
    assert "over 200 characters dropped" in warning and "config.optimizer (object)" in warning
    deadline = time.monotonic() + 10
    while not stored_points(api, run, "loss"):
        assert time.monotonic() < deadline, "the run never reached the server"
        time.sleep(0.05)
    stored = api.get(f"/api/v1/runs/{run.id}").json()["config"]
    assert stored["lr"] == 0.5 and stored["sizes"] == [1, 2] and stored["mask"] == [True, False]
    assert "x" * 201 not in stored and stored["optimizer"].startswith("<object object")
    events = api.get(f"/api/v1/runs/{run.id}/events", params={"kind": "note"}).json()["events"]
    assert events[0]["data"] == {"best": 0.25, "when": 3}


@pytest.mark.parametrize(("field", "value"), [("name", "x" * 201), ("project", "a\nb")])
def test_a_run_name_the_server_would_refuse_is_said_before_training(server, field, value):
    # The server refused such a run with 422 on every try: the training ran unrecorded.
    from callboard.client import RemoteMonitor

    refused = f"run {field} .* (longer than 200|control character)"
    with pytest.raises(ValueError, match=refused):
        Run(root="http://callboard.test", client=server.client(), **{field: value})
    with pytest.raises(ValueError, match=refused):  # at construction, before fit() starts
        RemoteMonitor(client=server.client(), **{"run" if field == "name" else field: value})


@pytest.mark.parametrize(
    ("token", "said", "not_said"),
    [
        # A revoked or wrong token was reported as "server ... is unreachable".
        ("cb_not-a-token", "refused this run's token", "unreachable"),
        # A run that sent no token was told the server "refused this run's token".
        (None, "needs a token", "refused this run's token"),
    ],
)
def test_a_refused_run_is_told_why(api, token, said, not_said):
    assert api.post("/api/v1/tokens", json={"name": "admin", "role": "admin"}).status_code == 201
    run = Run(root="http://testserver", name="refused", token=token, client=api)
    with pytest.warns(RuntimeWarning, match=said) as caught, run:
        run.log({"loss": 1.0}, epoch=0)
        deadline = time.monotonic() + 10
        while not [w for w in caught if said in str(w.message)]:
            assert time.monotonic() < deadline, f"no warning saying {said!r}"
            time.sleep(0.05)
    assert not [w for w in caught if not_said in str(w.message)]


def test_a_failed_heartbeat_waits_a_whole_interval_before_the_next(tmp_path):
    # An idle run whose server was down retried its heartbeat at once, in a busy loop
    # (about 1,000 requests a second) until the server answered or an event came.
    tried = []

    def heartbeat(run_id):
        tried.append(run_id)
        raise DeliveryFailed("connection refused")

    api = SimpleNamespace(root="http://callboard.invalid", headers={}, heartbeat=heartbeat)
    sender = EventSender(api, {"uid": "u"}, Spool(tmp_path, "u", {}), heartbeat_interval=60)
    sender.run_record = SimpleNamespace(id=7)
    assert sender._seconds_to_next_action() == 0  # idle for long: a heartbeat is due
    sender._heartbeat()
    assert tried == [7]
    assert sender._seconds_to_next_action() > 59
