"""Commands sent to a `Run`: how each kind takes effect on the training thread, and
how its outcome reaches the server (tests/client/test_command_channel.py: the channel)."""

import threading
import time
import warnings

import pytest

from callboard.client import CommandRefused, Run
from callboard.client._api import ServerApi

from .fake_server import FakeServer

ROOT = "http://callboard.test"


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()  # long-polls still held answer now


def started_run(server, **kwargs):
    """A started run, registered on `server` (its channel asking for commands)."""
    run = Run(root=ROOT, name="commands", client=server.client(), **kwargs).start()
    assert run.flush(5) and run.id == 1
    return run


def wait_for(condition, what, deadline=10.0):
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def received(run, command):
    """Wait until `command` is in the run's inbox (delivered, not yet applied)."""
    queue = run.commands.inbox.queue
    wait_for(lambda: command["id"] in [c.id for c in queue], "the command to arrive")


def outcome_of(server, command):
    """The outcome posted for `command` (waits for it): (state, detail, epoch, step)."""
    wait_for(lambda: any(o[0] == command["id"] for o in server.outcomes), "its outcome")
    [outcome] = [o[1:] for o in server.outcomes if o[0] == command["id"]]
    return outcome


def test_a_command_issued_while_the_channel_waits_arrives_without_a_poll_interval(server):
    run = started_run(server, stop_poll_interval=3600)  # a poll would come in an hour
    wait_for(lambda: server.pending_asked, "the channel's first long-poll")
    pause = server.issue("pause")
    wait_for(lambda: run.paused, "the pause")
    assert [wait for _after, wait in server.pending_asked] == [25.0] * len(server.pending_asked)
    assert outcome_of(server, pause) == ("applied", None, None, None)
    assert server.commands[pause["id"]]["state"] == "applied"
    run.finish()


def test_stop_turns_should_stop_true_acknowledges_once_and_ends_the_run_stopped(server):
    run = started_run(server)
    run.log({"loss": 1.0}, epoch=4)
    stop = server.issue("stop", reason="diverging")
    wait_for(lambda: run.should_stop, "the stop")
    run.log({"loss": 2.0}, epoch=5)
    run.finish()
    assert outcome_of(server, stop) == ("applied", None, 4, None)
    sent = server.posted_kinds()
    assert sent.count("ack") == 1
    assert sent.index("ack") < next(i for i, kinds in enumerate(sent) if "train_end" in kinds)
    assert server.stored()[-1]["data"] == {"status": "stopped"}


def test_outcomes_say_where_handle_commands_was_told_the_training_is(server):
    run = started_run(server)
    run.log({"loss": 1.0}, epoch=1)
    stop = server.issue("stop")
    received(run, stop)
    run.handle_commands(epoch=2, step=37)  # e.g. a callback between batches
    assert run.should_stop
    assert outcome_of(server, stop) == ("applied", None, 2, 37)
    run.finish()


def test_stop_after_epoch_stops_only_once_the_epoch_ends(server):
    run = started_run(server)
    command = server.issue("stop_after_epoch")
    received(run, command)
    run.log({"batch/loss": 1.0}, step=17)
    assert run.should_stop is False  # taken, waiting for the epoch's end
    run.log({"loss": 1.0}, epoch=2)  # the epoch_end event ends epoch 2
    assert run.should_stop is True
    assert outcome_of(server, command) == ("applied", None, 2, 17)
    run.finish()
    assert server.stored()[-1]["data"] == {"status": "stopped"}
    assert "ack" not in server.posted_kinds()  # no stop was requested on the server's side


def test_end_of_epoch_applies_a_stop_after_epoch_that_just_came(server):
    run = started_run(server)
    assert run.should_stop is False  # this loop handles commands
    command = server.issue("stop_after_epoch")
    received(run, command)
    run.end_of_epoch(7)  # it came after the last look: end_of_epoch takes it itself
    assert run.should_stop
    assert outcome_of(server, command) == ("applied", None, 7, None)
    run.finish()


def test_a_training_that_never_handles_commands_is_never_said_to_apply_one(server):
    # e.g. a Keras fit with RemoteMonitor alone: its epoch_end events must not apply a
    # pause, or a stop, that nothing in the training honours.
    run = started_run(server)
    pause, stop = server.issue("pause"), server.issue("stop")
    received(run, stop)
    run.log({"loss": 1.0}, epoch=0)
    run.log({"loss": 0.5}, epoch=1)
    assert [c.id for c in run.commands.inbox.queue] == [pause["id"], stop["id"]]  # none applied
    run.finish()
    for command in (pause, stop):
        assert outcome_of(server, command) == (
            "refused",
            "the run ended before its training handled it",
            1,
            None,
        )
    assert "ack" not in server.posted_kinds()
    assert server.stored()[-1]["data"] == {"status": "finished"}


def test_wait_while_paused_returns_on_resume(server):
    run = started_run(server)
    pause = server.issue("pause")
    wait_for(lambda: run.paused, "the pause")
    returned = threading.Event()
    waiter = threading.Thread(target=lambda: (run.wait_while_paused(), returned.set()))
    waiter.start()
    assert not returned.wait(0.3)  # paused: it waits
    resume = server.issue("resume")
    assert returned.wait(10)
    assert not run.paused and not run.should_stop
    assert outcome_of(server, pause)[0] == outcome_of(server, resume)[0] == "applied"
    run.finish()


def test_stop_while_paused_ends_the_wait_and_the_pause(server):
    run = started_run(server)
    server.issue("pause")
    wait_for(lambda: run.paused, "the pause")
    returned = threading.Event()
    waiter = threading.Thread(target=lambda: (run.wait_while_paused(), returned.set()))
    waiter.start()
    server.issue("stop")
    assert returned.wait(10)
    assert run.should_stop and not run.paused
    run.finish()


def test_resume_when_not_paused_and_pause_twice_say_so(server):
    run = started_run(server)
    resume = server.issue("resume")
    received(run, resume)
    run.handle_commands()
    assert outcome_of(server, resume) == ("applied", "was not paused", None, None)
    first, second = server.issue("pause"), server.issue("pause")
    received(run, second)
    run.handle_commands()
    assert outcome_of(server, first)[:2] == ("applied", None)
    assert outcome_of(server, second)[:2] == ("applied", "already paused")
    run.finish()


def test_a_handler_applies_its_kind_on_the_thread_that_handles_commands(server):
    run = started_run(server)
    called = []

    def save_now(command):
        called.append((command.kind, threading.current_thread().name))
        return "saved to /tmp/ckpt-3.keras"

    assert run.on_command("checkpoint", save_now) is save_now
    run.log({"loss": 1.0}, epoch=3)
    command = server.issue("checkpoint")
    received(run, command)
    assert called == []  # nothing runs on the channel's thread
    run.handle_commands()
    assert called == [("checkpoint", threading.current_thread().name)]
    assert outcome_of(server, command) == ("applied", "saved to /tmp/ckpt-3.keras", 3, None)
    run.finish()


def test_a_handler_refuses_with_command_refused_or_by_raising(server):
    run = started_run(server)

    def set_lr(command):
        if command.value > 1:
            raise CommandRefused("a learning rate above 1 diverges here")
        raise ZeroDivisionError("bug in the handler")

    run.on_command("set_learning_rate", set_lr)
    too_high = server.issue("set_learning_rate", value=5.0)
    buggy = server.issue("set_learning_rate", value=0.1)
    received(run, buggy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.handle_commands()
    assert outcome_of(server, too_high) == (
        "refused",
        "a learning rate above 1 diverges here",
        None,
        None,
    )
    assert outcome_of(server, buggy)[:2] == ("refused", "ZeroDivisionError('bug in the handler')")
    [said] = [str(w.message) for w in caught]
    assert "'set_learning_rate'" in said and "bug in the handler" in said
    assert "CommandRefused" in said
    run.finish()


def test_a_kind_without_handler_is_refused_as_not_supported(server):
    run = started_run(server)
    command = server.issue("checkpoint")
    received(run, command)
    assert run.should_stop is False
    assert outcome_of(server, command) == ("refused", "not supported by this client", None, None)
    run.finish()


@pytest.mark.parametrize("kind", ["stop", "stop_after_epoch", "pause", "resume"])
def test_built_in_kinds_cannot_be_taken_over(kind):
    run = Run(root=ROOT, client=FakeServer().client())
    with pytest.raises(ValueError, match="built in"):
        run.on_command(kind, lambda command: None)


def test_a_re_delivered_command_is_applied_once(server):
    server.ignore_after = True  # every answer holds it again, whatever `after` says
    run = started_run(server, stop_poll_interval=0.02)
    called = []
    run.on_command("checkpoint", called.append)
    command = server.issue("checkpoint")
    received(run, command)
    asked = len(server.pending_asked)
    wait_for(lambda: len(server.pending_asked) >= asked + 3, "three re-deliveries")
    assert [c.id for c in run.commands.inbox.queue] == [command["id"]]
    run.handle_commands()
    outcome_of(server, command)
    run.handle_commands()
    assert [c.id for c in called] == [command["id"]]
    assert [o[0] for o in server.outcomes] == [command["id"]]
    run.finish()


def test_the_training_thread_never_waits_on_a_hung_server(server):
    run = started_run(server)
    command = server.issue("pause")
    received(run, command)
    server.hang_commands = threading.Event()  # every commands request hangs from now on
    seen = {}

    def training_step():
        run.handle_commands()
        seen["paused"], seen["stop"] = run.paused, run.should_stop

    step = threading.Thread(target=training_step, daemon=True)
    step.start()
    step.join(5)
    assert not step.is_alive() and seen == {"paused": True, "stop": False}
    assert server.outcomes == []  # its outcome waits on the hung server, in the background
    server.hang_commands.set()
    assert outcome_of(server, command)[0] == "applied"
    run.finish()


def test_finish_waits_for_outcomes_the_server_failed_to_take(server):
    run = started_run(server)
    command = server.issue("pause")
    received(run, command)
    server.failing_outcomes = 2  # 503, 503, then taken
    run.handle_commands()
    run.finish()
    assert server.commands[command["id"]]["state"] == "applied"
    kinds = server.posted_kinds()
    assert "train_end" in kinds[-1]


def test_commands_left_unhandled_at_finish_end_refused_and_a_taken_stop_applied(server):
    run = started_run(server)
    pause, stop = server.issue("pause"), server.issue("stop")
    received(run, stop)
    run.acknowledge_stop()  # as RemoteStop does, from the stop it polled
    run.finish()  # the loop never handled its commands
    assert server.commands[pause["id"]]["state"] == "refused"
    assert server.commands[pause["id"]]["detail"] == "the run ended before its training handled it"
    assert server.commands[stop["id"]]["state"] == "applied"
    assert server.posted_kinds().count("ack") == 1
    assert server.stored()[-1]["data"] == {"status": "stopped"}


def test_a_server_without_commands_still_stops_the_run_through_its_control_state(server):
    server.no_commands_api = True  # an older server: GET .../commands/pending is 404
    run = started_run(server, stop_poll_interval=0.02)
    wait_for(lambda: run.commands.channel.ended, "the channel to give up")
    server.stop_requested = True
    wait_for(lambda: run.should_stop, "the stop")
    run.finish()
    assert server.acknowledged and server.stored()[-1]["data"] == {"status": "stopped"}


def test_commands_reach_a_real_servers_run_and_come_back_settled(server_factory, database_url):
    live = server_factory(database_url)
    controller = ServerApi(live.root)
    with Run(root=live.root, name="steered", stop_poll_interval=3600) as run:  # push, no polls
        run.log({"loss": 1.0}, epoch=0)
        assert run.flush(10) and run.id is not None
        run.on_command("set_learning_rate", lambda command: f"lr {command.value}")
        rate = controller.issue_command(run.id, "set_learning_rate", 0.01, reason="plateau")
        pause = controller.issue_command(run.id, "pause")
        wait_for(lambda: run.paused, "the pause, pushed")
        wait_for(lambda: controller.read_run(run.id).status == "paused", "the run paused")
        unknown = controller.issue_command(run.id, "checkpoint")
        resume = controller.issue_command(run.id, "resume")
        waiter = threading.Thread(target=run.wait_while_paused, daemon=True)
        waiter.start()
        waiter.join(20)
        assert not waiter.is_alive() and not run.paused
        stop = controller.issue_command(run.id, "stop", reason="enough")
        wait_for(lambda: run.should_stop, "the stop, pushed")
    settled = {c.id: (c.state, c.detail, c.epoch) for c in controller.list_commands(run.id)}
    assert settled == {
        rate.id: ("applied", "lr 0.01", 0),
        pause.id: ("applied", None, 0),
        unknown.id: ("refused", "not supported by this client", 0),
        resume.id: ("applied", None, 0),
        stop.id: ("applied", None, 0),  # acknowledged on sight, then where it was taken
    }
    assert controller.read_run(run.id).status == "stopped"
