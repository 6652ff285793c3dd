"""The `callboard` command line: serve, inspect and steer runs, run the demo, migrate.

`serve`, `demo`, `db ...` and `token create` open a database; `runs` (and its
`rename|tag|note|archive|restore|delete`: manage.py), `export`, `sync`,
`token list|revoke`, `rules add|list|rm` (rules.py) and the commands to a training
(`stop`, `pause`, `resume`, `checkpoint`, `set-lr`: commands.py) ask a server over HTTP
(`--root`, `--token`).
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callboard.client._api import DEFAULT_ROOT
from callboard.server.cli.commands import found_run
from callboard.server.cli.commands import register as register_run_commands
from callboard.server.cli.db import (
    DbOption,
    announce_database,
    db_app,
    notes,
    open_database,
    settings_for,
)
from callboard.server.cli.manage import runs_app
from callboard.server.cli.remote import NameInProject, RootOption, TokenOption, fail, server_api
from callboard.server.cli.rules import rules_app
from callboard.server.cli.tokens import token_app

app = typer.Typer(
    help="Callboard: live dashboard and remote control for Keras training.\n\n"
    "runs (and runs rename|tag|note|archive|restore|delete), export, sync, "
    "token list|revoke, rules add|list|rm and "
    "stop|pause|resume|checkpoint|set-lr "
    "ask a running server over HTTP: "
    "--root URL (else CALLBOARD_ROOT, else http://127.0.0.1:8000) and --token T "
    "(else CALLBOARD_TOKEN). serve, demo, db and token create open a database: "
    "--db URL (else CALLBOARD_DATABASE_URL, else ./callboard.db).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(rules_app, name="rules")
app.add_typer(runs_app, name="runs")  # rename, tag, note, archive, restore, delete: manage.py
console = Console()


def is_loopback(host):
    """True for addresses only this machine can reach."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_busy_port(host, port):
    """Exit with one line (and a --port hint) if this process could not listen on host:port."""
    import errno
    import socket
    import sys

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            if sys.platform != "win32":  # as uvicorn binds: a port left in TIME_WAIT is free
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        busy = exc.errno == errno.EADDRINUSE
        reason = "the port is in use (another server?)" if busy else exc.strerror or str(exc)
        notes.print(
            f"[red]Cannot listen on {host}:{port}: {reason}.[/red] Pick another port with --port N."
        )
        raise typer.Exit(1) from None


def _any_tokens(settings):
    from callboard.server.auth import TokenStore

    database = open_database(settings.database_url)
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

    from callboard.server.http.serving import raise_open_files_limit, uvicorn_options
    from callboard.server.main import create_app

    settings = settings_for(db)
    refuse_busy_port(host, port)
    announce_database(settings.database_url, creates=True)
    if not is_loopback(host) and not _any_tokens(settings):
        if not insecure:
            from sqlalchemy import make_url

            same_db = f" --db {make_url(db).render_as_string(hide_password=True)}" if db else ""
            console.print(
                f"[red]Refusing to serve on {host} with no API token: anyone who reaches it "
                "could read every run and stop any training.[/red]\n"
                f"Create one first (`callboard token create admin --role admin{same_db}`), "
                "or pass --insecure if this network is trusted.",
                soft_wrap=True,
            )
            raise typer.Exit(2)
        console.print(
            f"[bold red]WARNING: serving on {host} with no API token (--insecure). "
            "Anyone who can reach this port can read all runs and stop any training.[/bold red]"
        )
    # A public bind without --insecure never serves open mode, even once every token is revoked.
    settings.require_tokens = settings.require_tokens or not (insecure or is_loopback(host))
    console.print(f"Callboard on http://{host}:{port}")
    web_app = create_app(settings)
    raise_open_files_limit(settings.max_connections)
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


def _formatted(values):
    return ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in values.items()
    )


@runs_app.callback(invoke_without_command=True)
def runs(
    context: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    name: Annotated[str | None, typer.Option(help="Only runs with this exact name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most runs to show.")] = 30,
    archived: Annotated[
        bool, typer.Option("--archived", help="List the archived runs instead.")
    ] = False,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """List runs, newest first (a read token)."""
    if context.invoked_subcommand is not None:
        return
    with server_api(root, token) as api:
        page = api.list_runs(
            name=name, project=project, status=status, limit=limit, archived=archived
        )
    table = Table("id", "name", "project", "status", "epochs", "last values")
    for run in page.runs:
        cells = (run.id, run.name, run.project, run.status, run.epochs_done, _formatted(run.last))
        table.add_row(*(escape(str(cell)) for cell in cells))  # a name may hold "[red]"
    console.print(table)
    if page.total > len(page.runs):
        console.print(f"{len(page.runs)} of {page.total} runs (--limit N shows more).")


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="Run id or name (the newest run of that name).")],
    csv: Annotated[bool, typer.Option("--csv", help="CSV, as Keras's CSVLogger writes.")] = True,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write.")] = None,
    project: NameInProject = None,
    root: RootOption = DEFAULT_ROOT,
    token: TokenOption = None,
):
    """Export a run's epochs (CSV) to a file or standard output (a read token)."""
    with server_api(root, token) as api:
        text = api.export_csv(found_run(api, run, project).id)
    if output:
        try:
            output.write_text(text)
        except OSError as exc:
            fail(f"Could not write {output}: {exc.strerror or exc}.")
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
    from callboard.client._api import Unauthorized
    from callboard.client._spool import read_spool_header
    from callboard.client.sync import SpooledForAnotherServer, TokenWithoutRoot
    from callboard.client.sync import sync as replay

    try:
        results = replay(root=root, token=token)
    except TokenWithoutRoot as exc:
        console.print(f"[red]--token (or CALLBOARD_TOKEN) without --root: {exc}.[/red]")
        raise typer.Exit(2) from None
    if not results:
        console.print("Nothing to send: the spool is empty.")
    failed = refused = False
    for path, outcome in results.items():
        if isinstance(outcome, SpooledForAnotherServer):
            console.print(f"{path.name}: left, {outcome}", highlight=False, soft_wrap=True)
        elif isinstance(outcome, Exception):
            failed = True
            refused = refused or isinstance(outcome, Unauthorized)
            spooled_for = (read_spool_header(path) or {}).get("root", "its server")
            console.print(
                f"{path.name}: kept, not sent to {spooled_for}: {outcome}",
                style="red",
                markup=False,
                soft_wrap=True,
            )
        else:
            console.print(f"{path.name}: sent {outcome} events")
    if refused and token is None:
        console.print("A server that needs a token: `callboard sync --root URL --token T`.")
    if failed:
        raise typer.Exit(1)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of the demo server.")] = 8000,
    epochs: Annotated[
        int | None,
        typer.Option(help="Epochs to train (default: until you press Stop, or Ctrl-C)."),
    ] = None,
    db: DbOption = None,
    root: Annotated[
        str | None, typer.Option(help="Train against this running server instead of starting one.")
    ] = None,
    keep_serving: Annotated[
        bool, typer.Option("--keep-serving/--exit", help="Keep the server up after training.")
    ] = True,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="CALLBOARD_TOKEN",
            help="Token the demo's training sends (ingest), for a database or server with tokens.",
        ),
    ] = None,
):
    """Start a server and train a small real Keras model against it, live, until you Stop it."""
    from callboard.server.cli.demo import DemoServerFailed, run_demo

    settings = settings_for(db)
    if root is None:
        refuse_busy_port("127.0.0.1", port)
        announce_database(settings.database_url, creates=True)
        if token is None and _any_tokens(settings):
            notes.print(
                "[red]This database has API tokens, so the demo's training needs one.[/red] "
                "Pass --token T (an ingest token for project 'demo': `callboard token create "
                "demo --role ingest --project demo`), or --db URL for a database without tokens."
            )
            raise typer.Exit(2)
    try:
        run_demo(
            settings, port=port, epochs=epochs, root=root, keep_serving=keep_serving, token=token
        )
    except DemoServerFailed as exc:
        notes.print(f"[red]{exc}.[/red] Pick another port with --port N.")
        raise typer.Exit(1) from None


register_run_commands(app)  # stop, pause, resume, checkpoint, set-lr: commands.py
