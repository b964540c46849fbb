"""The `cleanroom` command: thin wrappers over the library.

Every user mistake surfaces as one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys

import typer

from cleanroom.errors import CleanroomError

DEBUG_ENV = "CLEANROOM_DEBUG"

app = typer.Typer(
    name="cleanroom",
    help="Privacy-preserving list matching through hashed clean-room joins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from cleanroom.cli import audit, broker, keys, partner, service, synth

    for module in (partner, keys, synth, broker, audit, service):
        for name, sub in getattr(module, "SUBCOMMANDS", {}).items():
            app.add_typer(sub, name=name)
        for command in getattr(module, "COMMANDS", ()):
            app.command()(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a cleanroom error becomes one line and exit code 2.

    Usage errors are reported by the CLI library itself, also with exit code 2.
    """
    try:
        app(args=argv)
    except CleanroomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        # An unexpected error's text may quote data (library messages often do):
        # show only its type unless the operator asks for the full traceback.
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"error: internal error ({type(exc).__name__}); set {DEBUG_ENV}=1 to see the traceback",
            file=sys.stderr,
        )
        sys.exit(1)
