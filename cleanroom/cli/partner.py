"""CLI commands of the partner side: key new, hash, verify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cleanroom.broker.campaign import mark_opt_out
from cleanroom.bundle import verify_bundle
from cleanroom.cli.common import err, out
from cleanroom.errors import InputError
from cleanroom.hashing import HashSummary, hash_file, warm_up
from cleanroom.keys.identity import load_card, load_identity
from cleanroom.keys.secret import load_key, new_key
from cleanroom.spec import MatchSpec, load_spec, parse_mapping

key_app = typer.Typer(no_args_is_help=True, help="Consortium key files.")


@key_app.command("new")
def key_new(
    out_file: Annotated[Path, typer.Option("--out", help="Key file to create (mode 0600).")],
    consortium: Annotated[str, typer.Option(help="Consortium id the key belongs to.")] = "local",
    epoch: Annotated[int, typer.Option(min=0)] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing key file.")] = False,
) -> None:
    """Make a single-organization key file (a consortium uses `cleanroom ceremony`)."""
    if out_file.exists() and not force:
        raise InputError(f"{out_file.name} exists; pass --force to replace it")
    key = new_key(consortium, epoch)
    key.save(out_file)
    out.print(f"wrote key file {out_file} (fingerprint {key.fingerprint})")


def hash(
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="CSV or Parquet list.")],
    key_file: Annotated[Path, typer.Option("--key", help="Consortium key file.")],
    identity_dir: Annotated[Path, typer.Option("--identity", help="Your identity folder (signs the bundle).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
    vault_dir: Annotated[Path, typer.Option("--vault", help="Vault folder (stays with you).")],
    spec_file: Annotated[Path | None, typer.Option("--spec", help="Match spec TOML (default spec if omitted).")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help="COLUMN=FIELD, repeatable; replaces the spec's mapping.")] = None,
    attrs: Annotated[list[str] | None, typer.Option("--attr", help="NAME[=COLUMN] clear attribute to carry (must be allowed by the spec).")] = None,
    id_column: Annotated[str | None, typer.Option(help="Your own id column, kept in the vault only.")] = None,
    reference: Annotated[bool, typer.Option("--reference", help="Mark the bundle as a reference (voter file).")] = False,
    opt_out: Annotated[bool, typer.Option("--opt-out", help="Mark the bundle as an opt-out (unsubscribe) list for campaigns.")] = False,
    k: Annotated[int, typer.Option("--k", min=2, help="Every combination of clear attributes must occur in at least k rows.")] = 10,
    encoding: Annotated[str, typer.Option(help="CSV encoding.")] = "utf-8",
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (sniffed if omitted).")] = None,
) -> None:
    """Normalize, tokenize and sign a contact list into a bundle; the vault stays local."""
    if opt_out and reference:
        raise InputError("a bundle is either a reference or an opt-out list, not both")
    warm_up()  # the compiled kernels load while the identity is unlocked
    spec = load_spec(spec_file)
    if mapping:
        spec = spec.with_columns(parse_mapping(mapping))
    attributes = dict(_attribute(a) for a in attrs or [])
    key = load_key(key_file)
    identity = load_identity(identity_dir)
    with Progress(
        TextColumn("hashing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    ) as bar:
        task = bar.add_task("hash", total=None)
        manifest, summary = hash_file(
            input_file, out_dir, vault_dir,
            key=key, identity=identity, spec=spec, attributes=attributes,
            id_column=id_column, reference=reference, k=k, encoding=encoding, delimiter=delimiter,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if opt_out:
        manifest = mark_opt_out(out_dir, identity)
    _print_summary(summary, spec)
    out.print(f"bundle {out_dir} ({manifest.row_count} rows, epoch {manifest.epoch}, key {manifest.key_fingerprint})")
    out.print(f"vault  {vault_dir} (keep it private: it maps handles to your rows)")


def verify(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE_DIR")],
    signer: Annotated[Path | None, typer.Option(help="Identity card (or folder) the bundle must be signed by.")] = None,
) -> None:
    """Check a bundle's signature, file digest and schema; exit 0 only if all hold."""
    manifest = verify_bundle(bundle_dir, load_card(signer) if signer else None)
    out.print(
        f"ok: {bundle_dir.name} signed by {manifest.producer.name} "
        f"({manifest.producer.fingerprint}); {manifest.row_count} rows, "
        f"consortium {manifest.consortium_id} epoch {manifest.epoch}"
    )


def _attribute(option: str) -> tuple[str, str]:
    name, _, column = option.partition("=")
    return name.strip(), (column or name).strip()


def _print_summary(summary: HashSummary, spec: MatchSpec) -> None:
    out.print(f"rows read: {summary.rows}; rows with at least one token: {summary.rows_with_token}")
    keys = Table("match key", "rows with token", "", title="tokens per key")
    bars = {k.name: k.max_expected_holders for k in spec.all_keys if k.max_expected_holders is not None}
    for name, n in summary.tokens_per_key.items():
        keys.add_row(name, str(n), f"rare values only, bar {bars[name]:g}" if name in bars else "")
    out.print(keys)
    fields = Table("column", "field", "missing", "invalid", "invalid by reason", title="fields")
    for f in summary.fields:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(f.reasons.items()))
        fields.add_row(f.column, f.field_type, str(f.missing), str(f.invalid), reasons)
    out.print(fields)


SUBCOMMANDS = {"key": key_app}
COMMANDS = [hash, verify]
