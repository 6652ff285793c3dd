"""`callboard runs rename|tag|note|archive|restore|delete RUN`: manage runs over HTTP.

Each goes through `PATCH` / `DELETE /api/v1/runs/{id}`: a control token edits, only an
admin token deletes. Every change shows live on every open dashboard page, and each
edit is an event on the run naming the token that made it.

Example:
    callboard runs rename 12 resnet-lr3e-4
    callboard runs tag 12 --add baseline --remove draft
    callboard runs note 12 --file notes.md
    callboard runs archive 12
    callboard runs delete 12 --yes
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from callboard.client._api import DEFAULT_ROOT
from callboard.server.cli.remote import NameInProject, RootOption, TokenOption, fail, server_api

console = Console()
runs_app = typer.Typer(
    help="List runs (a read token); rename, tag, note, archive, restore or delete one.",
    no_args_is_help=False,
)

AnyRun = Annotated[
    str,
    typer.Argument(help="Run id or name (the newest run of that name, archived ones too)."),
]
TagOption = Annotated[list[str] | None, typer.Option(help="A tag (repeat the option for more).")]


def say(text):
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def managed_run(api, run, project=None):
    """The run `run` names: an id, or a name (the newest run of it, archived or not)."""
    found = [api.find_run(run, project=project, archived=archived) for archived in (False, True)]
    newest = max(filter(None, found), key=lambda it: (it.created_at, it.id), default=None)
    if newest is None:
        where = f" in project {project!r}" if project else ""
        fail(f"No run {run!r}{where} (give an id or a name; see `callboard runs`).")
    return newest


def edit(run, project, root, token, **changes):
    """`changes` to the run `run` names: `(the run before, the run after)`."""
    with server_api(root, token) as api:
        before = managed_run(api, run, project)
        return before, api.edit_run(before.id, **changes)


@runs_app.command()
def rename(
    run: AnyRun,
    new_name: Annotated[str, typer.Argument(help="The run's new name.")],
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Rename a run (a control token)."""
    before, after = edit(run, project, root, token, name=new_name)
    say(f"Run {after.id} renamed: {before.name} -> {after.name}.")


@runs_app.command()
def tag(
    run: AnyRun,
    add: TagOption = None,
    remove: TagOption = None,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Add tags to a run, or remove some (a control token)."""
    if not add and not remove:
        fail("Nothing to change: give --add TAG or --remove TAG (or both).")
    with server_api(root, token) as api:
        found = managed_run(api, run, project)
        kept = [each for each in found.tags if each not in (remove or [])]
        tags = kept + [each for each in dict.fromkeys(add or []) if each not in kept]
        after = api.edit_run(found.id, tags=tags)
    say(f"Run {after.id} ({after.name}) tags: {', '.join(after.tags) or 'none'}.")


@runs_app.command()
def note(
    run: AnyRun,
    text: Annotated[str | None, typer.Argument(help="The note (Markdown); '' removes it.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Read the note from this file.")
    ] = None,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Write a run's note, in Markdown, as TEXT or from --file F (a control token)."""
    if (text is None) == (file is None):
        fail("Give the note as TEXT or --file F (one of them).")
    if file is not None:
        try:
            text = file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"Could not read {file}: {getattr(exc, 'strerror', None) or exc}.")
    _, after = edit(run, project, root, token, note=text or None)
    what = "saved" if after.note else "removed"
    say(f"Note {what} on run {after.id} ({after.name}).")


@runs_app.command()
def archive(
    run: AnyRun,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Archive a run: hidden from the runs list, kept, restorable (a control token)."""
    _, after = edit(run, project, root, token, archived=True)
    say(f"Run {after.id} ({after.name}) archived: `callboard runs restore {after.id}` undoes it.")


@runs_app.command()
def restore(
    run: AnyRun,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Bring an archived run back to the runs list (a control token)."""
    _, after = edit(run, project, root, token, archived=False)
    say(f"Run {after.id} ({after.name}) restored to the runs list.")


@runs_app.command()
def delete(
    run: AnyRun,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: the run and all its data go for good.")
    ] = False,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Delete a run and all its data, for good (an admin token; needs --yes)."""
    if not yes:
        fail(f"Not deleted: deleting run {run!r} removes all its data for good; add --yes.")
    with server_api(root, token) as api:
        gone = api.delete_run(managed_run(api, run, project).id)
    say(f"Deleted run {gone.id} ({gone.name}) and all its data.")
