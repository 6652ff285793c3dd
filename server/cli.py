"""The `callboard` command line: serve, inspect and stop runs, run the demo, migrate."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .settings import Settings

app = typer.Typer(
    help="Callboard: live dashboard and remote control for Keras training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
token_app = typer.Typer(help="API tokens (ingest, read, control, admin).", no_args_is_help=True)
app.add_typer(token_app, name="token")
console = Console()

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (else CALLBOARD_DATABASE_URL, else ./callboard.db)."),
]


def settings_for(db):
    return Settings(database_url=db) if db else Settings()


def is_loopback(host):
    """True for addresses only this machine can reach."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _any_tokens(settings):
    from .auth import TokenStore

    database = _open_database(settings.database_url)
    try:
        return TokenStore(database).any_tokens()
    finally:
        database.dispose()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    db: DbOption = None,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback address with no token: anyone can Stop.")
    ] = False,
    access_log: Annotated[
        bool,
        typer.Option(help="Log every request (off: training posts every epoch or batch)."),
    ] = False,
):
    """Run the server (dashboard at /, API docs at /docs)."""
    import gc

    import uvicorn

    from .main import create_app
    from .serving import uvicorn_options

    settings = settings_for(db)
    if not is_loopback(host) and not _any_tokens(settings):
        if not insecure:
            console.print(
                f"[red]Refusing to serve on {host} with no API token: anyone who reaches it "
                "could read every run and stop any training.[/red]\n"
                "Create one first (`callboard token create admin --role admin`), "
                "or pass --insecure if this network is trusted."
            )
            raise typer.Exit(2)
        console.print(
            f"[bold red]WARNING: serving on {host} with no API token (--insecure). "
            "Anyone who can reach this port can read all runs and stop any training.[/bold red]"
        )
    # A public bind without --insecure never serves open mode, even once every token is revoked.
    settings.require_tokens = settings.require_tokens or not (insecure or is_loopback(host))
    console.print(f"Callboard on http://{host}:{port}  (database: {settings.database_url})")
    web_app = create_app(settings)
    # What exists now (modules, the app) lives as long as the process: leaving it out
    # of the collector's full passes keeps them short under load.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        web_app,
        host=host,
        port=port,
        timeout_graceful_shutdown=3,
        access_log=access_log,
        **uvicorn_options(settings),
    )


def _open_database(db):
    from . import migrate
    from .db import Database

    settings = settings_for(db)
    if not settings.skip_migrations:
        migrate.upgrade(settings.database_url)
    return Database(settings.database_url)


def _find_run(session, run):
    from sqlalchemy import select

    from .models import Run

    found = session.get(Run, int(run)) if run.isdigit() else None
    if found is None:
        found = session.scalars(
            select(Run).where(Run.name == run).order_by(Run.id.desc()).limit(1)
        ).first()
    if found is None:
        console.print(f"[red]No run {run!r}[/red] (give an id or a name; see `callboard runs`).")
        raise typer.Exit(1)
    return found


@app.command()
def runs(
    db: DbOption = None,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="Most runs to show.")] = 30,
):
    """List runs, newest first."""
    from sqlalchemy import select

    from .models import Project, Run
    from .views import last_values

    database = _open_database(db)
    with database.reader() as session:
        query = select(Run).join(Project).order_by(Run.created_at.desc(), Run.id.desc())
        if project:
            query = query.where(Project.name == project)
        if status:
            query = query.where(Run.status == status)
        table = Table("id", "name", "project", "status", "epochs", "last values")
        for run in session.scalars(query.limit(limit)):
            values = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in last_values(run).items()
            )
            table.add_row(
                str(run.id), run.name, run.project.name, run.status, str(run.epochs_done), values
            )
    console.print(table)


@app.command()
def stop(
    run: Annotated[str, typer.Argument(help="Run id or name (the newest run of that name).")],
    reason: Annotated[str | None, typer.Option(help="Why, shown on the run.")] = None,
    db: DbOption = None,
):
    """Ask a running training to stop at its next batch."""
    from .control import StopRefused, request_stop
    from .ingest import lock_run

    database = _open_database(db)
    with database.writer() as session:
        target = lock_run(session, _find_run(session, run).id)
        try:
            request_stop(session, target, reason)
        except StopRefused as exc:
            console.print(f"[yellow]{exc}[/yellow]")
            raise typer.Exit(1) from None
        session.commit()
        console.print(f"Stop requested for run {target.id} ({target.name}).")


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="Run id or name.")],
    csv: Annotated[bool, typer.Option("--csv", help="CSV, as Keras's CSVLogger writes.")] = True,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write.")] = None,
    db: DbOption = None,
):
    """Export a run's epochs (CSV) to a file or standard output."""
    from .export import epochs_csv

    database = _open_database(db)
    with database.reader() as session:
        text = epochs_csv(session, _find_run(session, run).id)
    if output:
        output.write_text(text)
        console.print(f"Wrote {output}")
    else:
        typer.echo(text, nl=False)


@app.command()
def sync(
    root: Annotated[
        str | None,
        typer.Option(
            envvar="CALLBOARD_ROOT",
            help="Send only the runs spooled for this server (else each to its own, no token).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="CALLBOARD_TOKEN", help="API token of the --root server."),
    ] = None,
):
    """Send events that clients on this machine spooled while the server was unreachable."""
    from callboard.client.sync import SpooledForAnotherServer, TokenWithoutRoot
    from callboard.client.sync import sync as replay

    try:
        results = replay(root=root, token=token)
    except TokenWithoutRoot as exc:
        console.print(f"[red]--token (or CALLBOARD_TOKEN) without --root: {exc}.[/red]")
        raise typer.Exit(2) from None
    if not results:
        console.print("Nothing to send: the spool is empty.")
    failed = False
    for path, outcome in results.items():
        if isinstance(outcome, SpooledForAnotherServer):
            console.print(f"{path.name}: left, {outcome}", highlight=False, soft_wrap=True)
        elif isinstance(outcome, Exception):
            failed = True
            console.print(f"[red]{path.name}: {outcome}[/red]")
        else:
            console.print(f"{path.name}: sent {outcome} events")
    if failed:
        raise typer.Exit(1)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of the demo server.")] = 8000,
    epochs: Annotated[int, typer.Option(help="Epochs to train.")] = 30,
    db: DbOption = None,
    root: Annotated[
        str | None, typer.Option(help="Train against this running server instead of starting one.")
    ] = None,
    keep_serving: Annotated[
        bool, typer.Option("--keep-serving/--exit", help="Keep the server up after training.")
    ] = True,
):
    """Start a server and train a small real Keras model against it, live."""
    from .demo import run_demo

    run_demo(settings_for(db), port=port, epochs=epochs, root=root, keep_serving=keep_serving)


@db_app.command("upgrade")
def db_upgrade(
    db: DbOption = None,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
):
    """Bring the database schema up to date."""
    from . import migrate

    url = settings_for(db).database_url
    migrate.upgrade(url, revision)
    console.print(f"Database at revision {migrate.current_revision(url)}.")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' empties it).")],
    db: DbOption = None,
):
    """Take the database schema back to an older revision."""
    from . import migrate

    url = settings_for(db).database_url
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

    from .db_copy import CopyMismatch, CopyRefused, copy_database

    started = time.monotonic()
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), "rows", TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            copied = copy_database(source, target, progress=progress)
    except (CopyRefused, CopyMismatch) as exc:
        console.print(f"[red]Nothing copied: {exc}[/red]")
        raise typer.Exit(1) from None
    summary = ", ".join(f"{count} {table}" for table, count in copied.items())
    console.print(f"Copied {summary} in {time.monotonic() - started:.1f} s; row counts verified.")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token, e.g. the machine using it.")],
    role: Annotated[str, typer.Option(help="ingest, read, control or admin.")] = "ingest",
    project: Annotated[str | None, typer.Option(help="Limit the token to this project.")] = None,
    if_none: Annotated[
        bool, typer.Option("--if-none", help="Only if no token exists yet (a first start).")
    ] = False,
    db: DbOption = None,
):
    """Create an API token and print it (shown once; it is stored hashed)."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import IntegrityError

    from .auth import ROLES, create_token
    from .models import ApiToken

    if role not in ROLES:
        console.print(f"[red]--role must be one of {', '.join(ROLES)}[/red]")
        raise typer.Exit(2)
    database = _open_database(db)
    with database.writer() as session:
        if if_none and session.scalar(select(func.count()).select_from(ApiToken)):
            typer.echo("Tokens exist already; none created.")
            return
        try:
            _, secret = create_token(session, name, role, project)
            session.commit()
        except IntegrityError:
            console.print(f"[red]A token named {name!r} exists already.[/red]")
            raise typer.Exit(1) from None
    scope = f" for project {project!r}" if project else ""
    typer.echo(f"Created {role} token {name!r}{scope}. It is shown only now: {secret}")


@token_app.command("list")
def token_list(db: DbOption = None):
    """List tokens (names, roles, projects; never the secrets)."""
    from sqlalchemy import select

    from .models import ApiToken

    database = _open_database(db)
    table = Table("id", "name", "role", "project", "starts with", "revoked")
    with database.reader() as session:
        for token in session.scalars(select(ApiToken).order_by(ApiToken.id)):
            table.add_row(
                str(token.id),
                token.name,
                token.role,
                token.project or "all",
                token.prefix + "…",
                "yes" if token.revoked_at else "",
            )
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")], db: DbOption = None
):
    """Revoke a token; servers stop accepting it within seconds."""
    import time

    from sqlalchemy import select

    from .models import ApiToken

    database = _open_database(db)
    with database.writer() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()
        if token is None:
            console.print(f"[red]No token named {name!r}.[/red]")
            raise typer.Exit(1)
        token.revoked_at = token.revoked_at or time.time()
        session.commit()
    console.print(f"Revoked token {name!r}.")
