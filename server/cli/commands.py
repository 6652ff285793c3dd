"""`callboard stop|pause|resume|checkpoint RUN`, `callboard set-lr RUN VALUE`: steer a training.

Each sends the run a command over HTTP (a control token), which the training
applies between batches (`RemoteControl`, or `run.on_command` in a plain loop)
and reports as applied or refused, on the run page and in
`GET /api/v1/runs/{id}/commands`.
"""

import math
from typing import Annotated

import typer
from rich.console import Console

from callboard.client._api import DEFAULT_ROOT
from callboard.server.cli.remote import NameInProject, RootOption, TokenOption, fail, server_api

console = Console()

LiveRun = Annotated[
    str, typer.Argument(help="Run id or name (the newest live run of that name, if any).")
]
Reason = Annotated[str | None, typer.Option(help="Why, shown on the run.")]


def found_run(api, run, project=None, live_first=False):
    """The run `run` names (an id or a name), else one line and exit 1."""
    found = api.find_run(run, project=project, live_first=live_first)
    if found is None:
        where = f" in project {project!r}" if project else ""
        fail(f"No run {run!r}{where} (give an id or a name; see `callboard runs`).")
    return found


def send_command(run, kind, what, value=None, reason=None, project=None, root=None, token=None):
    """Send `kind` to the run `run` names and say so: "`what` requested for run 3 (name)."""
    with server_api(root, token) as api:
        target = found_run(api, run, project, live_first=True)
        command = api.issue_command(target.id, kind, value=value, reason=reason)
    console.print(
        f"{what} requested for run {target.id} ({target.name}): command {command.id}.",
        markup=False,
        highlight=False,
        soft_wrap=True,  # one line, whatever the terminal's width
    )


def stop(
    run: LiveRun,
    reason: Reason = None,
    after_epoch: Annotated[
        bool, typer.Option("--after-epoch", help="Finish the current epoch first.")
    ] = False,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Ask a running training to stop at its next batch (a control token)."""
    if after_epoch:
        what = "Stop after this epoch"
        send_command(run, "stop_after_epoch", what, None, reason, project, root, token)
        return
    with server_api(root, token) as api:
        target = found_run(api, run, project, live_first=True)
        api.stop_run(target.id, reason)
    console.print(f"Stop requested for run {target.id} ({target.name}).", markup=False)


def pause(
    run: LiveRun,
    reason: Reason = None,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Pause a running training before its next batch, until `resume` (a control token)."""
    send_command(run, "pause", "Pause", None, reason, project, root, token)


def resume(
    run: LiveRun,
    reason: Reason = None,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Resume a paused training (a control token)."""
    send_command(run, "resume", "Resume", None, reason, project, root, token)


def checkpoint(
    run: LiveRun,
    reason: Reason = None,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Ask a running training to save a checkpoint now, between batches (a control token)."""
    send_command(run, "checkpoint", "Checkpoint", None, reason, project, root, token)


def set_lr(
    run: LiveRun,
    value: Annotated[float, typer.Argument(help="The new learning rate (a number > 0).")],
    reason: Reason = None,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Set a running training's learning rate before its next batch (a control token)."""
    if not math.isfinite(value):  # JSON cannot carry it; the server checks the rest
        fail(f"The learning rate must be a finite number, got {value}.")
    what = f"Learning rate {value:g}"
    send_command(run, "set_learning_rate", what, value, reason, project, root, token)


def register(app):
    """Add these commands to the `callboard` app."""
    for name, command in [
        ("stop", stop),
        ("pause", pause),
        ("resume", resume),
        ("checkpoint", checkpoint),
        ("set-lr", set_lr),
    ]:
        app.command(name)(command)
