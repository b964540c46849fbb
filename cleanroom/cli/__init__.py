"""The `cleanroom` command: thin wrappers over the library.

Every user mistake surfaces as one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import click
import typer

from cleanroom.errors import CleanroomError

app = typer.Typer(
    name="cleanroom",
    help="Privacy-preserving list matching through hashed clean-room joins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from cleanroom.cli import keys, synth

    for module in (keys, synth):
        for name, sub in getattr(module, "SUBCOMMANDS", {}).items():
            app.add_typer(sub, name=name)
        for command in getattr(module, "COMMANDS", ()):
            app.command()(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, map cleanroom errors to exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except CleanroomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
