"""The push channel: one long-poll at a time, backoff, the fallback to polling, refusals;
and the `ServerApi` calls of the commands API."""

import dataclasses
import time
import warnings

import httpx
import pytest

from callboard.client import _api, _commands
from callboard.client._answers import CommandList, CommandRecord
from callboard.client._api import ServerApi
from callboard.client._commands import CommandChannel, CommandInbox
from callboard.client._errors import Rejected, UnexpectedAnswer

from .fake_server import FakeServer

ROOT = "http://callboard.test"


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture
def api(server):
    api = ServerApi(ROOT, client=server.client())
    assert api.create_run({"uid": "u1", "name": "channel", "project": "default"}).id == 1
    return api


@pytest.fixture
def channels():
    made = []
    yield made
    for channel in made:
        channel.close()


def open_channel(api, channels, run_id=1, **kwargs):
    inbox = CommandInbox()
    channel = CommandChannel(api, lambda: run_id, inbox, **kwargs)
    channels.append(channel)
    channel.start()
    return channel, inbox


def wait_for(condition, what, deadline=20.0):
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def pending_requests(server):
    return [r for r in server.requests if r.url.path.endswith("/commands/pending")]


def queued_ids(inbox):
    return [command.id for command in inbox.queue]


@pytest.mark.parametrize("cut", ["timeout", "reset"])
def test_long_polls_cut_off_three_times_fall_back_to_polling_and_commands_still_arrive(
    server, api, channels, monkeypatch, cut
):
    monkeypatch.setattr(_api, "LONG_POLL_MARGIN", 0.05)  # the read timeout: wait + 0.05 s
    monkeypatch.setattr(_commands, "LONG_POLL_RETRY", 3600.0)
    server.cut_long_polls = cut  # e.g. a proxy that cuts requests waiting for an answer
    channel, inbox = open_channel(api, channels, poll_interval=0.02, wait=0.2)
    wait_for(lambda: channel.polling, "the fallback to polling")
    assert [wait for _after, wait in server.pending_asked][:3] == [0.2, 0.2, 0.2]
    command = server.issue("pause")
    wait_for(lambda: queued_ids(inbox) == [command["id"]], "the command, by polling")
    assert server.pending_asked[-1][1] == 0.0
    assert server.commands[command["id"]]["state"] == "delivered"


def test_polling_tries_the_long_poll_again_and_keeps_it_once_it_holds(
    server, api, channels, monkeypatch
):
    monkeypatch.setattr(_api, "LONG_POLL_MARGIN", 0.05)
    monkeypatch.setattr(_commands, "LONG_POLL_RETRY", 0.2)
    server.cut_long_polls = "reset"
    channel, inbox = open_channel(api, channels, poll_interval=0.02, wait=0.2)
    wait_for(lambda: channel.polling, "the fallback to polling")
    server.cut_long_polls = None  # the proxy went away
    wait_for(lambda: not channel.polling, "the long-poll again")
    asked = len(server.pending_asked)
    command = server.issue("resume")
    wait_for(lambda: queued_ids(inbox) == [command["id"]], "the command")
    assert all(wait == 0.2 for _after, wait in server.pending_asked[asked:])


def test_a_refused_token_warns_once_and_the_channel_keeps_asking(server, api, channels):
    server.refuse_commands = 401
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        channel, _inbox = open_channel(api, channels, poll_interval=0.02)
        wait_for(lambda: len(pending_requests(server)) >= 3, "three tries, backing off")
    said = [str(w.message) for w in caught if "remote commands" in str(w.message)]
    assert len(said) == 1
    assert "server answered 401" in said[0] and "Training goes on" in said[0]
    assert not channel.ended


def test_a_run_the_server_no_longer_has_ends_the_channel(channels):
    asked = []

    def run_gone(request):
        asked.append(request.url.path)
        return httpx.Response(404, json={"detail": "run 7 not found"})

    api = ServerApi(ROOT, client=httpx.Client(transport=httpx.MockTransport(run_gone)))
    told = []
    channel, _inbox = open_channel(api, channels, run_id=7, on_no_commands=lambda: told.append(1))
    channel._thread.join(10)
    assert not channel._thread.is_alive() and channel.ended
    assert told == []  # the run is gone, not the commands API
    assert asked == ["/api/v1/runs/7/commands/pending", "/api/v1/runs/7/control"]


def test_each_command_is_queued_once_in_order_and_after_follows_the_highest_id(
    server, api, channels
):
    channel, inbox = open_channel(api, channels, poll_interval=0.02)
    first, second = server.issue("pause"), server.issue("checkpoint")
    wait_for(lambda: queued_ids(inbox) == [first["id"], second["id"]], "both commands")
    wait_for(lambda: server.pending_asked[-1][0] == second["id"], "a long-poll after them")
    assert not inbox.put(CommandRecord.from_answer(first))  # seen: not queued again


def test_the_channel_starts_asking_once_the_run_has_an_id(server, api, channels):
    run_id = None
    channel = CommandChannel(api, lambda: run_id, CommandInbox(), poll_interval=0.02)
    channels.append(channel)
    channel.start()
    server.issue("pause")
    run_id = 1
    wait_for(lambda: pending_requests(server), "the first long-poll once the id is known")


def test_a_long_poll_does_not_count_as_a_slow_answer(server, api):
    # finish() takes a request pending longer than a few slowest answers for a hung one.
    assert api.pending_commands(1, wait=0.5) == []
    assert api.slowest_answer < 0.5


def test_the_commands_api_calls(server, api):
    issued = api.issue_command(1, "set_learning_rate", value=0.01, reason="plateau")
    assert (issued.kind, issued.value, issued.reason, issued.state) == (
        "set_learning_rate",
        0.01,
        "plateau",
        "requested",
    )
    [pending] = api.pending_commands(1, after=0, wait=0)
    assert pending.id == issued.id and pending.state == "delivered"
    assert api.pending_commands(1, after=issued.id, wait=0) == []
    applied = api.report_outcome(1, issued.id, "applied", "lr 0.01", epoch=3, step=120)
    assert (applied.state, applied.detail, applied.epoch, applied.step) == (
        "applied",
        "lr 0.01",
        3,
        120,
    )
    assert api.report_outcome(1, issued.id, "applied", "lr 0.01", epoch=3, step=120) == applied
    with pytest.raises(Rejected) as refused:
        api.report_outcome(1, issued.id, "refused", "too late")
    assert refused.value.status == 409
    other = api.issue_command(1, "pause")
    assert api.cancel_command(1, other.id).state == "cancelled"
    assert [c.id for c in api.list_commands(1)] == [issued.id, other.id]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), [1.0, float("nan")]])
def test_a_command_value_json_cannot_carry_is_rejected_before_sending(server, api, value):
    # It raised the JSON encoder's ValueError from inside httpx.
    sent = len(server.requests)
    with pytest.raises(Rejected) as refused:
        api.issue_command(1, "set_learning_rate", value=value)
    message = str(refused.value)
    assert message == (
        f"can't send 'set_learning_rate' with value {value!r}: JSON has no NaN or infinity"
    )
    assert "\n" not in message and len(server.requests) == sent


def test_a_command_answer_of_another_shape_is_unexpected():
    answer = FakeServer().issue("pause")
    assert CommandRecord.from_answer(answer).kind == "pause"
    for odd in ({**answer, "id": "1"}, {**answer, "state": None}, {"id": 1}):
        with pytest.raises(UnexpectedAnswer):
            CommandRecord.from_answer(odd)


def test_the_channel_talks_real_http_too(server, channels):
    from .fake_server import listening

    with listening(server) as root:
        api = ServerApi(root)
        assert api.create_run({"uid": "u2", "name": "http"}).id == 1
        channel, inbox = open_channel(api, channels)
        wait_for(lambda: server.pending_asked, "the long-poll")
        command = server.issue("stop")
        wait_for(lambda: queued_ids(inbox) == [command["id"]], "the stop")


@pytest.mark.parametrize(
    ("record", "model"), [(CommandRecord, "Command"), (CommandList, "CommandList")]
)
def test_the_command_records_mirror_the_servers_models(tmp_path, record, model):
    # As tests/cli/test_answers.py does for the other records (which share their model's name).
    from fastapi.testclient import TestClient

    from callboard.server.main import create_app
    from callboard.server.settings import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'openapi.db'}"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        documented = client.get("/openapi.json").json()["components"]["schemas"][model]
    fields = dataclasses.fields(record)
    assert {field.name for field in fields} == set(documented["required"])
    nullable = {
        name
        for name, field in documented["properties"].items()
        if {"type": "null"} in field.get("anyOf", [])
    }
    assert {field.name for field in fields if field.default is None} == nullable
