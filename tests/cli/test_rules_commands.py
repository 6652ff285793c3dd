"""`callboard rules add|list|rm` against a real server, with tokens of each role."""

import doctest
import json

import pytest
from rich.console import Console

from callboard.server.cli import rules as rules_cli
from callboard.server.rules import wording

from .conftest import invoke, secret_of
from .test_remote_commands import one_line_on_stderr

HOOK = "https://hooks.example.org/T0001/B0002/path-that-is-a-secret"
SIGNING_SECRET = "signing-secret-never-shown"


@pytest.fixture(scope="module")
def alpha_control(board):
    """A control token limited to project alpha."""
    database = board.server.database_url
    created = invoke(
        "token", "create", "alpha-ctl", "--role", "control", "--project", "alpha", "--db", database
    )
    return secret_of(created)


@pytest.fixture
def wide_console(monkeypatch):
    """Tables printed wide enough that no cell wraps (a test's terminal is 80 columns)."""
    monkeypatch.setattr(rules_cli, "console", Console(width=250))


def listed(board, *options, role="read"):
    """The rules `rules list --json` prints."""
    result = board.call("rules", "list", "--json", *options, role=role)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["rules"]


def table_rows(text):
    """The cells of each body row of the table a command printed."""
    rows = ([cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines())
    return [cells for cells in rows if cells and cells[0].isdigit()]


def added_id(result):
    """The id in "Rule N (...) added ..."."""
    assert result.exit_code == 0, result.output
    return int(result.stdout.split()[1])


def test_a_signed_webhook_and_a_command_are_added_and_listed_without_the_secret(
    board, wide_console
):
    added = board.call(
        "rules", "add", "nan loss", "--when", "nan", "--metric", "loss", "--project", "signed",
        "--webhook", HOOK, "--secret", SIGNING_SECRET,
        "--command", "set_learning_rate", "--factor", "0.5",
    )  # fmt: skip
    rule_id = added_id(added)
    assert added.stdout == (
        f"Rule {rule_id} (nan loss) added for project signed: when loss is NaN or infinite: "
        "webhook https://hooks.example.org/… (signed), command set_learning_rate ×0.5.\n"
    )
    [rule] = listed(board, "--project", "signed")
    assert (rule["id"], rule["condition"]) == (rule_id, {"kind": "nan", "metric": "loss"})
    assert rule["actions"] == [
        {"kind": "webhook", "url": "https://hooks.example.org/…", "has_secret": True},
        {"kind": "command", "command": "set_learning_rate", "value": None, "factor": 0.5},
    ]
    table = board.call("rules", "list", "--project", "signed", role="read")
    assert table.exit_code == 0, table.output
    assert table_rows(table.stdout) == [
        [
            str(rule_id),
            "nan loss",
            "signed",
            "loss is NaN or infinite",
            "webhook https://hooks.example.org/… (signed), command set_learning_rate ×0.5",
            "0",
        ]
    ]
    for shown in (added.stdout, table.stdout, json.dumps(listed(board, role="read"))):
        assert "path-that-is-a-secret" not in shown and SIGNING_SECRET not in shown


def test_list_shows_rules_of_every_project_as_all_and_filters_by_project(board, wide_console):
    everywhere = added_id(
        board.call("rules", "add", "died", "--when", "status", "--status", "failed",
                   "--command", "checkpoint")
    )  # fmt: skip
    plateau = added_id(
        board.call("rules", "add", "stuck", "--when", "plateau", "--metric", "val_loss",
                   "--patience", "3", "--min-delta", "0.001", "--project", "listing",
                   "--command", "stop_after_epoch")
    )  # fmt: skip
    rows = {int(cells[0]): cells for cells in table_rows(board.call("rules", "list").stdout)}
    assert rows[everywhere][2:4] == ["all", "run status becomes failed"]
    assert rows[plateau][2:5] == [
        "listing",
        "val_loss has not improved by 0.001 for 3 epochs",
        "command stop_after_epoch",
    ]
    assert [rule["id"] for rule in listed(board, "--project", "listing")] == [plateau]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (["--when", "above", "--metric", "loss", "--command", "stop"], "condition.above.value"),
        (["--when", "sometimes", "--metric", "loss", "--command", "stop"], "condition"),
        (["--when", "nan", "--metric", "loss", "--webhook", "ftp://hooks.example.org/x"], "url"),
        (["--when", "silent", "--seconds", "60", "--command", "pause", "--factor", "2"], "factor"),
    ],
    ids=["missing value", "unknown kind", "not http", "factor of pause"],
)
def test_a_rule_the_server_refuses_is_one_line_naming_the_field(board, options, field):
    refused = one_line_on_stderr(
        board.call("rules", "add", "refused", "--project", "bad", *options)
    )
    assert refused.startswith(f"The server at {board.root} refused:"), refused
    assert field in refused, refused
    assert listed(board, "--project", "bad") == []


def test_a_webhook_at_the_server_itself_is_refused(board):
    own = f"{board.root}/api/v1/runs"
    options = ["--when", "nan", "--metric", "loss", "--webhook", own, "--project", "loop"]
    refused = one_line_on_stderr(board.call("rules", "add", "loop", *options))
    assert "actions.0.url" in refused and "this Callboard server itself" in refused, refused
    assert listed(board, "--project", "loop") == []


def test_rm_removes_the_rule_and_a_missing_one_is_one_line(board):
    options = ["--when", "silent", "--seconds", "60", "--project", "removing", "--command", "stop"]
    rule_id = added_id(board.call("rules", "add", "quiet", *options))
    removed = board.call("rules", "rm", str(rule_id), role="admin")
    assert removed.exit_code == 0 and removed.stdout == f"Rule {rule_id} (quiet) removed.\n"
    assert listed(board, "--project", "removing") == []
    again = one_line_on_stderr(board.call("rules", "rm", str(rule_id)))
    assert again == f"No rule {rule_id}."


def test_a_control_token_manages_rules_of_its_project_only(board, alpha_control):
    def as_alpha_control(*words):
        return invoke(*words, "--root", board.root, "--token", alpha_control)

    options = ["--when", "above", "--metric", "loss", "--value", "2.5", "--command", "stop"]
    ours = added_id(as_alpha_control("rules", "add", "ours", *options, "--project", "alpha"))
    refused = one_line_on_stderr(
        as_alpha_control("rules", "add", "theirs", *options, "--project", "beta")
    )
    assert refused == "Not allowed: this token is limited to project 'alpha'."
    everywhere = one_line_on_stderr(as_alpha_control("rules", "add", "all", *options))
    assert everywhere == "Not allowed: only an admin token manages rules of every project."
    assert listed(board, "--project", "beta") == []
    theirs = added_id(board.call("rules", "add", "theirs", *options, "--project", "beta"))
    unseen = one_line_on_stderr(as_alpha_control("rules", "rm", str(theirs)))
    assert unseen == f"No rule {theirs}."
    assert [rule["id"] for rule in listed(board, "--project", "beta")] == [theirs]
    assert as_alpha_control("rules", "rm", str(ours)).exit_code == 0
    assert listed(board, "--project", "alpha") == []


def test_a_read_token_may_list_but_not_add_or_remove(board):
    options = ["--when", "nan", "--metric", "loss", "--project", "reading", "--command", "stop"]
    rule_id = added_id(board.call("rules", "add", "watched", *options))
    assert [rule["id"] for rule in listed(board, "--project", "reading")] == [rule_id]
    refused = one_line_on_stderr(board.call("rules", "add", "mine", *options, role="read"))
    assert refused.startswith("Not allowed: role 'read' cannot do this"), refused
    refused = one_line_on_stderr(board.call("rules", "rm", str(rule_id), role="read"))
    assert refused.startswith("Not allowed: role 'read' cannot do this"), refused
    assert [rule["id"] for rule in listed(board, "--project", "reading")] == [rule_id]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ([], "A rule needs an action: --webhook URL and/or --command KIND."),
        (["--factor", "0.5"], "--command-value and --factor go with --command set_learning_rate."),
        (
            ["--webhook", HOOK, "--webhook", HOOK, "--secret", "s"],
            "Give one --secret per --webhook, in the same order, or none: 2 --webhook, 1 --secret.",
        ),
        (["--command", "stop", "--value", "nan"], "--value must be a finite number, got nan."),
    ],
    ids=["no action", "factor without command", "secrets short", "nan value"],
)
def test_a_rule_that_cannot_be_sent_is_one_line_and_adds_nothing(board, options, said):
    condition = ["--when", "above", "--metric", "loss", "--project", "unsent"]
    refused = one_line_on_stderr(board.call("rules", "add", "unsent", *condition, *options))
    assert refused == said
    assert listed(board, "--project", "unsent") == []


def test_the_wording_examples_hold():
    outcome = doctest.testmod(wording)
    assert outcome.attempted >= 10 and outcome.failed == 0
