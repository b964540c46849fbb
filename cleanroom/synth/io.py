"""Reading and atomically writing synthetic files (CSV or Parquet, by suffix)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cleanroom.errors import InputError
from cleanroom.fsutil import atomic_file


def write_frame(df: pl.DataFrame, path: Path) -> None:
    """Write `df` to `path` (.csv or .parquet) through a temp file and a rename."""
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in (".csv", ".parquet"):
        raise InputError(f"output file {path.name}: use a .csv or .parquet suffix")
    with atomic_file(path) as f:
        if fmt == ".csv":
            df.write_csv(f)
        else:
            df.write_parquet(f)


def read_frame(path: Path) -> pl.DataFrame:
    """Read a .csv (every column as text) or .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file {path.name} does not exist")
    if path.suffix.lower() == ".parquet":
        return pl.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pl.read_csv(path, infer_schema=False)
    raise InputError(f"file {path.name}: expected a .csv or .parquet suffix")


def write_partners(lists: dict[str, pl.DataFrame], truth: dict[str, pl.DataFrame],
                   out_dir: Path) -> None:
    """Write `out_dir/<name>.csv` per list and its ground truth to `out_dir/truth/<name>.parquet`."""
    out_dir = Path(out_dir)
    for name, df in lists.items():
        write_frame(df, out_dir / f"{name}.csv")
        write_frame(truth[name], out_dir / "truth" / f"{name}.parquet")


def read_truth(truth_dir: Path) -> dict[str, pl.DataFrame]:
    """Read every `<name>.parquet` ground-truth file of a folder."""
    truth_dir = Path(truth_dir)
    files = sorted(truth_dir.glob("*.parquet")) if truth_dir.is_dir() else []
    if not files:
        raise InputError(f"folder {truth_dir.name} holds no ground-truth .parquet files")
    return {f.stem: pl.read_parquet(f) for f in files}
