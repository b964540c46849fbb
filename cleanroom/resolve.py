"""Partner side: turn a broker release back into the partner's own rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cleanroom.broker.releases import RELEASE_FILE, verify_release
from cleanroom.errors import InputError
from cleanroom.fsutil import atomic_file
from cleanroom.hashing import VAULT_FILE
from cleanroom.inputs import ROW, read_input
from cleanroom.keys.identity import IdentityCard
from cleanroom.privacy import write_safe_csv


def resolve_release(
    release: Path,
    vault: Path,
    input_path: Path,
    *,
    broker: IdentityCard | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
) -> pl.DataFrame:
    """The input rows named by a verified release, with its person token (hex) added."""
    verify_release(release, broker)
    vault_file = Path(vault) / VAULT_FILE
    if not vault_file.is_file():
        raise InputError(f"no {VAULT_FILE} in {Path(vault).name}")
    handles = pl.read_parquet(Path(release) / RELEASE_FILE)
    rows = handles.join(pl.read_parquet(vault_file), on="handle", how="left")
    if rows.get_column("row").null_count():
        raise InputError("the release names handles that are not in this vault (another bundle's vault?)")
    picked = rows.select(pl.col("row").alias(ROW), pl.col("person_token").bin.encode("hex").alias("person_token"))
    frame = read_input(Path(input_path), encoding=encoding, delimiter=delimiter)
    resolved = frame.join(picked.lazy().cast({ROW: pl.UInt32}), on=ROW, how="inner").sort(ROW).collect()
    if resolved.height != picked.height:
        raise InputError("the input has fewer rows than the vault expects (is it the file that was hashed?)")
    return resolved.drop(ROW)


def write_rows(frame: pl.DataFrame, out: Path) -> None:
    """Write resolved rows (the partner's own data) owner-only, as Parquet or spreadsheet-safe CSV."""
    out = Path(out)
    if out.suffix.lower() == ".parquet":
        with atomic_file(out, private=True) as f:
            frame.write_parquet(f)
    else:
        write_safe_csv(frame, out, private=True)
