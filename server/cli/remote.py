"""Commands that talk to a running server over HTTP, as any client does (`--root`, `--token`).

They go through the training client's `ServerApi`: the server checks the token's
role and publishes every change live. Whatever goes wrong ends the command with
one line on stderr and exit code 1, never a traceback.
"""

import contextlib
from typing import Annotated

import typer

from callboard.client._api import (
    DEFAULT_ROOT,
    DeliveryFailed,
    Rejected,
    ServerApi,
    UnexpectedAnswer,
)
from callboard.server.cli.db import notes

RootOption = Annotated[
    str,
    typer.Option(
        "--root",
        envvar="CALLBOARD_ROOT",
        help="URL of the Callboard server to ask (`callboard serve` runs one).",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="CALLBOARD_TOKEN",
        help="API token for that server (none needed by a server without tokens).",
    ),
]

NameInProject = Annotated[
    str | None, typer.Option("--project", help="Look for a run's name in this project only.")
]


def fail(message):
    """End the command: `message` as one line on stderr, exit code 1."""
    notes.print(message, style="red", markup=False, highlight=False)
    raise typer.Exit(1)


def one_line(text):
    return " ".join(str(text).split())


def failure_line(root, exc):
    """What to tell the user when the server at `root` could not do what was asked."""
    status = getattr(exc, "status", None)
    if isinstance(exc, UnexpectedAnswer):
        return f"{root} answered in a shape this Callboard does not know ({exc}): is --root right?"
    if isinstance(exc, DeliveryFailed) and not exc.answered:
        return (
            f"No Callboard server at {root} ({one_line(exc)}): start one with `callboard serve`, "
            "or pass --root URL (or set CALLBOARD_ROOT)."
        )
    if status is not None and status >= 400 and exc.detail is None:
        return (
            f"{root} answered {status} without Callboard's JSON: "
            "not a Callboard server? Check --root."
        )
    if status == 401:
        return (
            f"The server at {root} refused the token ({exc.detail}): "
            "pass --token T or set CALLBOARD_TOKEN."
        )
    if status == 403:
        return f"Not allowed: {exc.detail}."
    if isinstance(exc, DeliveryFailed) and status is not None and status < 400:
        return f"{root} answered {status} without JSON: not a Callboard server? Check --root."
    if isinstance(exc, DeliveryFailed):
        return f"The server at {root} could not answer now ({exc.detail}); try again."
    return f"The server at {root} refused: {exc.detail}."


@contextlib.contextmanager
def server_api(root, token):
    """A `ServerApi` for the server at `root`; a failure ends the command with one line.

    Example:
        with server_api(root, token) as api:
            print(api.list_runs().total)
    """
    if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
        fail("--token is not a Callboard token: tokens are printable ASCII, without spaces.")
    api = ServerApi(root or DEFAULT_ROOT, token=token)
    try:
        yield api
    except (DeliveryFailed, Rejected) as exc:  # an UnexpectedAnswer is a DeliveryFailed
        fail(failure_line(api.root, exc))
    finally:
        api.close()
