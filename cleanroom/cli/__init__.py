"""The `cleanroom` command: thin wrappers over the library.

Every user mistake surfaces as one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

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
