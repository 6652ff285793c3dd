"""`callboard rules add|list|rm`: the rules a server watches every run with, over HTTP.

The server checks a rule (`RuleIn`, in server/rules/spec.py), so this module does not
import it (nor FastAPI): a field it refuses comes back as one line naming it.
Webhook URLs are shown cut, secrets never.

Example:
    callboard rules add "nan loss" --when nan --metric loss --project vision \\
        --webhook https://hooks.example.org/T0/B0/x --secret s3cret --command stop
"""

import dataclasses
import json
import math
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callboard.client._api import DEFAULT_ROOT, NotFound
from callboard.server.cli.remote import RootOption, TokenOption, fail, server_api
from callboard.server.rules.wording import actions_in_words, condition_in_words

rules_app = typer.Typer(
    help="Rules the server watches every run with: when a condition holds, post a webhook "
    "and/or send the training a command (admin, or control for its project).",
    no_args_is_help=True,
)
console = Console()


def finite(option, value):
    """`value` unless it is NaN or infinite (JSON cannot carry those): then one line, exit 1."""
    if value is not None and not math.isfinite(value):
        fail(f"{option} must be a finite number, got {value}.")
    return value


def given(**fields):
    """The fields given a value (the server fills in its defaults for the others)."""
    return {key: value for key, value in fields.items() if value is not None}


def webhook_actions(urls, secrets):
    """One webhook action per URL; secrets sign them in order, one per webhook or none."""
    if secrets and len(secrets) != len(urls):
        fail(
            "Give one --secret per --webhook, in the same order, or none: "
            f"{len(urls)} --webhook, {len(secrets)} --secret."
        )
    signed = secrets or [None] * len(urls)
    return [
        given(kind="webhook", url=url, secret=secret)
        for url, secret in zip(urls, signed, strict=True)
    ]


def command_action(command, value, factor):
    """The command action, if `--command` was given ([] if not)."""
    if command is None:
        if value is not None or factor is not None:
            fail("--command-value and --factor go with --command set_learning_rate.")
        return []
    return [given(kind="command", command=command, value=value, factor=factor)]


def scope(project):
    return f"project {project}" if project is not None else "every project"


@rules_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The rule's name, shown in its alerts.")],
    when: Annotated[
        str,
        typer.Option(
            help="The condition: nan, above, below, plateau, worse_than_median, status or silent."
        ),
    ],
    metric: Annotated[
        str | None, typer.Option(help="The metric watched (nan, above, below, ...).")
    ] = None,
    value: Annotated[float | None, typer.Option(help="The threshold of above / below.")] = None,
    patience: Annotated[
        int | None, typer.Option(help="plateau: epochs without improvement.")
    ] = None,
    min_delta: Annotated[
        float | None, typer.Option(help="plateau: the least change that counts.")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="plateau, worse_than_median: min if lower is better."),
    ] = None,
    warmup: Annotated[
        int | None, typer.Option(help="worse_than_median: from this epoch on.")
    ] = None,
    min_runs: Annotated[
        int | None, typer.Option(help="worse_than_median: other runs needed at that epoch.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(help="status: the status that fires it: failed, lost, finished or stopped."),
    ] = None,
    seconds: Annotated[float | None, typer.Option(help="silent: seconds without an event.")] = None,
    project: Annotated[
        str | None, typer.Option(help="Only this project's runs (default: every one).")
    ] = None,
    webhook: Annotated[
        list[str] | None, typer.Option(help="POST each alert as JSON to this URL (repeatable).")
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            help="Sign the webhook's posts (X-Callboard-Signature); one per --webhook, in order."
        ),
    ] = None,
    command: Annotated[
        str | None,
        typer.Option(
            help="Send the run's training this command: stop, stop_after_epoch, checkpoint, "
            "pause, resume or set_learning_rate."
        ),
    ] = None,
    command_value: Annotated[
        float | None, typer.Option(help="set_learning_rate: the new learning rate.")
    ] = None,
    factor: Annotated[
        float | None,
        typer.Option(help="set_learning_rate: multiply the run's latest rate by this."),
    ] = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Add a rule: when its condition holds on a run, do its actions (at least one)."""
    condition = given(
        kind=when,
        metric=metric,
        value=finite("--value", value),
        patience=patience,
        min_delta=finite("--min-delta", min_delta),
        mode=mode,
        warmup=warmup,
        min_runs=min_runs,
        status=status,
        seconds=finite("--seconds", seconds),
    )
    actions = webhook_actions(webhook or [], secret or []) + command_action(
        command, finite("--command-value", command_value), finite("--factor", factor)
    )
    if not actions:
        fail("A rule needs an action: --webhook URL and/or --command KIND.")
    body = given(name=name, project=project, condition=condition, actions=actions)
    with server_api(root, token) as api:
        rule = api.add_rule(body)
    console.print(
        f"Rule {rule.id} ({rule.name}) added for {scope(rule.project)}: "
        f"when {condition_in_words(rule.condition)}: {actions_in_words(rule.actions)}.",
        markup=False,
        highlight=False,
        soft_wrap=True,  # one line, whatever the terminal's width
    )


@rules_app.command("list")
def list_rules(
    project: Annotated[str | None, typer.Option(help="Only this project's rules.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the server's answer as JSON.")
    ] = False,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """List the rules this token sees, oldest first (a read token)."""
    with server_api(root, token) as api:
        rules = api.list_rules(project=project)
    if as_json:
        typer.echo(json.dumps({"rules": [dataclasses.asdict(rule) for rule in rules]}, indent=2))
        return
    table = Table("id", "name", "project", "when", "then", "firings")
    for rule in rules:
        cells = (
            rule.id,
            rule.name,
            rule.project or "all",
            condition_in_words(rule.condition),
            actions_in_words(rule.actions),
            rule.firings,
        )
        table.add_row(*(escape(str(cell)) for cell in cells))  # a name may hold "[red]"
    console.print(table)


@rules_app.command("rm")
def remove(
    rule_id: Annotated[int, typer.Argument(metavar="ID", help="The rule's id (`rules list`).")],
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Remove a rule, its alerts and their webhook log (admin, or control for its project)."""
    with server_api(root, token) as api:
        try:
            removed = api.delete_rule(rule_id)
        except NotFound:
            fail(f"No rule {rule_id}.")
    console.print(f"Rule {removed.id} ({removed.name}) removed.", markup=False, highlight=False)
