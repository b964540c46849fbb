"""CLI commands for the broker's audit log (thin wrappers over `cleanroom.audit`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from cleanroom.audit import AuditLog, load_checkpoint, save_checkpoint, verify_log
from cleanroom.cli.common import out
from cleanroom.keys.identity import load_card, load_identity

audit_app = typer.Typer(no_args_is_help=True, help="The broker's hash-chained audit log.")

LogFile = Annotated[Path, typer.Argument(metavar="LOG", help="The audit log (JSON lines).")]
_SUMMARY_WIDTH = 72


@audit_app.command("verify")
def verify(
    log: LogFile,
    broker: Annotated[Path, typer.Option("--broker", help="The broker's card.json (or identity folder).")],
    checkpoint: Annotated[
        list[Path] | None, typer.Option("--checkpoint", help="A checkpoint file you kept (repeat).")
    ] = None,
) -> None:
    """Check the chain, every signature and your checkpoints; exit 2 on any tampering."""
    checkpoints = [load_checkpoint(p) for p in checkpoint or []]
    result = verify_log(log, load_card(broker), checkpoints)
    out.print(f"audit log intact: {len(result.entries)} entries, head [cyan]{result.head}[/]")
    if result.log_id:
        out.print(f"log id {result.log_id}")
    if checkpoints:
        out.print(f"consistent with {len(checkpoints)} checkpoint(s)")
    else:
        out.print("no checkpoint given: removal of the newest entries cannot be detected")


@audit_app.command("show")
def show(
    log: LogFile,
    tail: Annotated[int | None, typer.Option("--tail", min=1, help="Show only the last N entries.")] = None,
) -> None:
    """Print the entries as a table (not verified; use `audit verify`)."""
    entries = AuditLog(log).entries()
    shown = entries[-tail:] if tail else entries
    table = Table(title=f"{log.name}: {len(shown)} of {len(entries)} entries (not verified)")
    table.add_column("seq", justify="right")
    table.add_column("time (UTC)")
    table.add_column("kind", style="bold")
    table.add_column("summary")
    for entry in shown:
        table.add_row(
            str(entry.seq), entry.at.strftime("%Y-%m-%d %H:%M:%S"), Text(entry.kind), Text(_summary(entry.body))
        )
    out.print(table)


@audit_app.command("checkpoint")
def checkpoint(
    log: LogFile,
    identity_dir: Annotated[Path, typer.Option("--identity", help="The broker's identity folder.")],
    out_file: Annotated[Path, typer.Option("--out", help="Checkpoint file to write.")],
) -> None:
    """Sign a checkpoint of the log's head for members to keep."""
    result = AuditLog(log, load_identity(identity_dir)).checkpoint()
    save_checkpoint(result, out_file)
    out.print(f"checkpoint at seq {result.seq}, head [cyan]{result.head}[/]; wrote {out_file.name}")


def _summary(body: dict[str, Any]) -> str:
    """`key=value` pairs, nested values abbreviated, cut to the column width."""
    parts = []
    for key, value in body.items():
        if isinstance(value, dict):
            value = "{…}"
        elif isinstance(value, list):
            value = f"[{len(value)} items]"
        parts.append(f"{key}={value}")
    text = " ".join(parts)
    return text if len(text) <= _SUMMARY_WIDTH else text[: _SUMMARY_WIDTH - 1] + "…"


SUBCOMMANDS = {"audit": audit_app}
