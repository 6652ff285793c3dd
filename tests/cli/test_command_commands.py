"""`callboard pause|resume|checkpoint|stop --after-epoch RUN`, `callboard set-lr RUN VALUE`.

Each sends the run a command through a real server; the run's command list
(`GET /api/v1/runs/{id}/commands`) shows it, requested by the token's name.
"""

import pytest

from tests.server.helpers import create_run

from .test_remote_commands import end_run, one_line_on_stderr

COMMANDS = [
    # (CLI words after the run, kind, value, what the command prints)
    (["pause"], "pause", None, "Pause"),
    (["resume"], "resume", None, "Resume"),
    (["checkpoint"], "checkpoint", None, "Checkpoint"),
    (["set-lr", "0.0003"], "set_learning_rate", 0.0003, "Learning rate 0.0003"),
    (["stop", "--after-epoch"], "stop_after_epoch", None, "Stop after this epoch"),
]

KINDS = [kind for _, kind, _, _ in COMMANDS]


def call_on(board, words, run, *options, role="control"):
    """`callboard WORD RUN [VALUE] OPTIONS` (the run goes after the command's name)."""
    return board.call(words[0], run, *words[1:], *options, role=role)


def commands_of(board, run_id):
    with board.client("read") as reader:
        answer = reader.get(f"/api/v1/runs/{run_id}/commands")
    assert answer.status_code == 200, answer.text
    return answer.json()["commands"]


@pytest.mark.parametrize(("words", "kind", "value", "what"), COMMANDS, ids=KINDS)
def test_each_command_is_stored_for_the_live_run_of_that_name(board, words, kind, value, what):
    name = f"steered-{kind}"
    with board.client() as client:
        ended = create_run(client, name, project="steering")
        end_run(client, ended)
        live = create_run(client, name, project="steering")
        create_run(client, name, project="elsewhere")  # newer, but in another project
    sent = call_on(board, words, name, "--project", "steering", "--reason", "from cli")
    assert sent.exit_code == 0, sent.output
    [command] = commands_of(board, live)
    assert sent.stdout == f"{what} requested for run {live} ({name}): command {command['id']}.\n"
    assert (command["kind"], command["value"], command["reason"]) == (kind, value, "from cli")
    assert command["state"] == "requested" and command["requested_by"] == "control"
    assert commands_of(board, ended) == []


def test_a_run_id_works_as_well_as_a_name(board):
    with board.client() as client:
        run_id = create_run(client, "by-id", project="steering")
    sent = board.call("checkpoint", str(run_id), role="admin")
    assert sent.exit_code == 0, sent.output
    [command] = commands_of(board, run_id)
    assert command["kind"] == "checkpoint" and command["requested_by"] == "admin"


def test_plain_stop_is_a_stop_command_too(board):
    with board.client() as client:
        run_id = create_run(client, "plain-stop", project="steering")
    stopped = board.call("stop", "plain-stop", "--reason", "enough", role="control")
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout == f"Stop requested for run {run_id} (plain-stop).\n"
    [command] = commands_of(board, run_id)
    assert (command["kind"], command["reason"]) == ("stop", "enough")


@pytest.mark.parametrize(("words", "kind", "value", "what"), COMMANDS, ids=KINDS)
def test_an_unknown_run_is_one_line(board, words, kind, value, what):
    missing = one_line_on_stderr(call_on(board, words, "no-such-run"))
    assert missing == "No run 'no-such-run' (give an id or a name; see `callboard runs`)."


@pytest.mark.parametrize(("words", "kind", "value", "what"), COMMANDS, ids=KINDS)
def test_a_run_that_has_ended_is_one_line_and_gets_no_command(board, words, kind, value, what):
    with board.client() as client:
        run_id = create_run(client, f"ended-{kind}", project="steering")
        end_run(client, run_id)
    refused = one_line_on_stderr(call_on(board, words, str(run_id)))
    assert refused.startswith(f"The server at {board.root} refused:"), refused
    assert "finished" in refused, refused
    assert commands_of(board, run_id) == []


@pytest.mark.parametrize("value", ["0", "1e-400"])
def test_a_learning_rate_the_server_refuses_is_one_line_naming_the_value(board, value):
    with board.client() as client:
        run_id = create_run(client, f"bad-lr-{value}", project="steering")
    refused = one_line_on_stderr(board.call("set-lr", str(run_id), value, role="control"))
    assert refused.startswith(f"The server at {board.root} refused:"), refused
    assert "value" in refused, refused
    assert commands_of(board, run_id) == []


@pytest.mark.parametrize("value", ["nan", "inf", "1e999"])
def test_a_learning_rate_json_cannot_carry_is_one_line_and_sends_nothing(board, value):
    # Sending it raised ValueError from the JSON encoder: a traceback.
    with board.client() as client:
        run_id = create_run(client, f"odd-lr-{value}", project="steering")
    refused = one_line_on_stderr(board.call("set-lr", str(run_id), value, role="control"))
    assert refused == f"The learning rate must be a finite number, got {float(value)}."
    assert commands_of(board, run_id) == []


def test_a_learning_rate_that_is_not_a_number_is_a_usage_error(board):
    refused = board.call("set-lr", "1", "fast", role="control")
    assert refused.exit_code == 2 and "Invalid value for 'value'" in refused.output


@pytest.mark.parametrize("role", ["read", "ingest"])
def test_a_token_without_control_cannot_send_commands(board, role):
    with board.client() as client:
        run_id = create_run(client, f"guarded-{role}", project="steering")
    refused = one_line_on_stderr(board.call("pause", str(run_id), role=role))
    assert refused.startswith(f"Not allowed: role '{role}' cannot do this"), refused
    assert commands_of(board, run_id) == []
