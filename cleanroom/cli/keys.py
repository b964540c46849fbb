"""CLI commands: keys (filled in by its own module owner)."""

import typer

app = typer.Typer(no_args_is_help=True)
