"""The `callboard token` commands: create, list and revoke API tokens.

`create` writes to the database (the first token has no server to ask yet);
`list` and `revoke` ask a server over HTTP with an admin token.
"""

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callboard.client._api import DEFAULT_ROOT
from callboard.server.cli.db import DbOption, database_url, open_database
from callboard.server.cli.remote import RootOption, TokenOption, fail, server_api

token_app = typer.Typer(help="API tokens (ingest, read, control, admin).", no_args_is_help=True)
console = Console(soft_wrap=True)


def write_secret_file(path, secret):
    """Write `secret` to `path`, readable by its owner only (0600), replacing any old file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    descriptor = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secret + "\n")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token, e.g. the machine using it.")],
    role: Annotated[str, typer.Option(help="ingest, read, control or admin.")] = "ingest",
    project: Annotated[str | None, typer.Option(help="Limit the token to this project.")] = None,
    if_none: Annotated[
        bool,
        typer.Option("--if-none", help="Only if no live token exists (a first start)."),
    ] = False,
    secret_file: Annotated[
        Path | None,
        typer.Option(help="Write the secret to this new file (mode 0600) instead of printing it."),
    ] = None,
    db: DbOption = None,
):
    """Create an API token and print it (shown once; it is stored hashed)."""
    from sqlalchemy.exc import IntegrityError

    from callboard.server.auth import ROLES, TokenStore, create_token

    if role not in ROLES:
        console.print(f"[red]--role must be one of {', '.join(ROLES)}[/red]")
        raise typer.Exit(2)
    database = open_database(database_url(db, creates=True))
    if if_none and TokenStore(database).any_tokens():
        typer.echo("A live token exists already; none created.")
        return
    with database.writer() as session:
        if if_none:  # a first start again, after every token was revoked: keep the old rows
            name = _unused_name(session, name)
        try:
            _, secret = create_token(session, name, role, project)
        except IntegrityError:
            console.print(f"[red]A token named {name!r} exists already.[/red]")
            raise typer.Exit(1) from None
        if secret_file is not None:  # written before the commit: no token nobody can read
            try:
                write_secret_file(secret_file, secret)
            except OSError as exc:
                console.print(f"[red]Cannot write {secret_file}: {exc.strerror}.[/red]")
                raise typer.Exit(1) from None
        session.commit()
    scope = f" for project {project!r}" if project else ""
    if secret_file is None:
        typer.echo(f"Created {role} token {name!r}{scope}. It is shown only now: {secret}")
        return
    typer.echo(
        f"Created {role} token {name!r}{scope}. Its secret is in {secret_file} "
        "(readable by its owner only): copy it somewhere safe, then delete the file."
    )


@token_app.command("list")
def token_list(root: RootOption = DEFAULT_ROOT, token: TokenOption = None):
    """List tokens (ids, names, roles, projects; never the secrets), asking the server (admin)."""
    with server_api(root, token) as api:
        listed = api.list_tokens()
    table = Table("id", "name", "role", "project", "starts with", "revoked")
    for found in listed:
        revoked = "yes" if found.revoked_at else ""
        cells = (
            found.id,
            found.name,
            found.role,
            found.project or "all",
            found.prefix + "…",
            revoked,
        )
        table.add_row(*(escape(str(cell)) for cell in cells))  # a project may hold "[red]"
    console.print(table)


def _unused_name(session, name):
    """`name`, or `name-2`, `name-3`, ... if a (revoked) token holds it already."""
    from sqlalchemy import select

    from callboard.server.store.models import ApiToken

    similar = select(ApiToken.name).where(ApiToken.name.startswith(name, autoescape=True))
    taken = set(session.scalars(similar))
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}-{number}"
    return candidate


def _find_token(tokens, id_or_name):
    """The token with this id, else the one with this name; exits with a clear line if none."""
    matches = [t for t in tokens if str(t.id) == id_or_name] or [
        t for t in tokens if t.name == id_or_name
    ]
    if not matches:
        fail(f"No token with id or name {id_or_name!r} (see `callboard token list`).")
    return matches[0]


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[
        str, typer.Argument(metavar="TOKEN", help="The token's id (see `token list`), or its name.")
    ],
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Revoke a token, asking the server (admin); servers stop accepting it within seconds."""
    with server_api(root, token) as api:
        found = _find_token(api.list_tokens(), token_id)
        if found.revoked_at is None:
            found = api.revoke_token(found.id)
            console.print(f"Revoked token {found.id} ({found.name!r}, {found.role}).", markup=False)
        else:
            said = f"Token {found.id} ({found.name!r}, {found.role}) was revoked already."
            console.print(said, markup=False)
