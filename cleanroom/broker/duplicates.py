"""People listed more than once in one partner list, for the scored linker.

Rows of one list that share an email or phone token are one person (the
same components as person resolution, within the list). The scored linker
is one-to-one between a list's persons and reference rows: a person who
signed up twice is linked on both rows, as the cascade links them, while two
different people still never share a reference row.
"""

from __future__ import annotations

import polars as pl

from cleanroom.broker.load import LoadedBundle
from cleanroom.broker.persons import resolve_persons


def list_persons(bundle: LoadedBundle) -> pl.Series:
    """A person label per row of one partner bundle, in row order; rows sharing an email or phone token share it."""
    rows = pl.select(
        pl.int_range(bundle.manifest.row_count, dtype=pl.UInt32).alias("p_idx"),
        pl.lit(bundle.name).alias("partner"),
        pl.lit(None, dtype=pl.UInt32).alias("ref_idx"),
    )
    return resolve_persons(rows, {bundle.name: bundle}, reference_rows=0).alias("list_person")

