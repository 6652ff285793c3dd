"""`python -m callboard.server` is the `callboard` command."""

from .cli import app

app(prog_name="callboard")
