"""`python -m callboard.server` is the `callboard` command."""

from callboard.server.cli.main import app

app(prog_name="callboard")
