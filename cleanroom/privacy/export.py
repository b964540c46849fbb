"""CSV exports that a spreadsheet may open: no cell can start a formula."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import polars as pl

from cleanroom.fsutil import write_atomic

_FORMULA_START = r"^([=+\-@\t\r])"

E = TypeVar("E", pl.Expr, pl.Series)


def neutralize_csv_cell(cells: E) -> E:
    """Prefix an apostrophe to string cells starting with = + - @, tab or carriage return."""
    return cells.str.replace(_FORMULA_START, "'$1")


def write_safe_csv(frame: pl.DataFrame, path: Path, *, private: bool = False) -> None:
    """Write `frame` as CSV, atomically, with every text cell and header neutralized (0600 if `private`)."""
    text = [
        name
        for name, dtype in frame.schema.items()
        if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
    ]
    safe = frame.with_columns(neutralize_csv_cell(pl.col(name).cast(pl.String)) for name in text)
    header = pl.Series([str(name) for name in frame.columns], dtype=pl.String)
    safe.columns = neutralize_csv_cell(header).to_list()
    write_atomic(Path(path), safe.write_csv().encode(), private=private)
