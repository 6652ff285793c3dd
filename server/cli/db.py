"""Which database a command uses, said on stderr, and the `callboard db` commands."""

from typing import Annotated

import typer
from rich.console import Console

from callboard.server.settings import Settings
from callboard.server.store.db import describe_database, sqlite_file

db_app = typer.Typer(help="Database schema migrations and copies.", no_args_is_help=True)
console = Console(soft_wrap=True)
notes = Console(stderr=True, soft_wrap=True)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (else CALLBOARD_DATABASE_URL, else ./callboard.db)."),
]


def settings_for(db):
    return Settings(database_url=db) if db else Settings()


def announce_database(url, creates=False, label="database"):
    """Say on stderr which database a command uses; return `url`.

    A SQLite file that does not exist is refused (exit 1) unless the command `creates`
    databases, so a command run in the wrong folder never leaves a new empty one there.
    """
    path = sqlite_file(url)
    if path is not None and not path.exists():
        if not creates:
            notes.print(
                f"[red]No database at {path.resolve()}.[/red] Pass --db URL or set "
                "CALLBOARD_DATABASE_URL (`callboard serve` or `callboard db upgrade` "
                "creates a new one)."
            )
            raise typer.Exit(1)
        notes.print(f"{label}: {describe_database(url)} (new)")
    else:
        notes.print(f"{label}: {describe_database(url)}")
    return url


def database_url(db, creates=False):
    """The URL a command uses (`--db`, else CALLBOARD_DATABASE_URL, else the default), said."""
    return announce_database(settings_for(db).database_url, creates)


def open_database(url):
    """The `Database` at `url`, its schema brought to head first (unless skipped)."""
    from callboard.server.store import migrate
    from callboard.server.store.db import Database

    if not settings_for(url).skip_migrations:
        migrate.upgrade(url)
    return Database(url)


@db_app.command("upgrade")
def db_upgrade(
    db: DbOption = None,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
):
    """Bring the database schema up to date (creating a new SQLite file if need be)."""
    from callboard.server.store import migrate

    url = database_url(db, creates=True)
    migrate.upgrade(url, revision)
    console.print(f"Database at revision {migrate.current_revision(url)}.")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' empties it).")],
    db: DbOption = None,
):
    """Take the database schema back to an older revision."""
    from callboard.server.store import migrate

    url = database_url(db)
    migrate.downgrade(url, revision)
    console.print(f"Database at revision {migrate.current_revision(url)}.")


@db_app.command("copy")
def db_copy(
    source: Annotated[
        str, typer.Option("--from", help="Database to copy from, e.g. sqlite:///callboard.db.")
    ],
    target: Annotated[
        str, typer.Option("--to", help="Empty database to copy into, e.g. postgresql://u@h/db.")
    ],
):
    """Copy every run, event, metric point and token into an empty database (moving up)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from callboard.server.store.db_copy import (
        CopyMismatch,
        CopyRefused,
        copy_database,
        refuse_missing_source,
    )

    started = time.monotonic()
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), "rows", TimeElapsedColumn())
    try:
        announce_database(refuse_missing_source(source), label="from")
        announce_database(target, creates=True, label="to")
        with Progress(*columns, console=console) as progress:
            copied = copy_database(source, target, progress=progress)
    except (CopyRefused, CopyMismatch) as exc:
        console.print(f"[red]Nothing copied: {exc}[/red]")
        raise typer.Exit(1) from None
    summary = ", ".join(f"{count} {table}" for table, count in copied.items())
    console.print(f"Copied {summary} in {time.monotonic() - started:.1f} s; row counts verified.")
