"""Clear attributes that cannot single anyone out (k-anonymity by local suppression).

A reference bundle may carry clear attributes (county, districts, precinct,
party, ...). A broker holding the public voter file could join on a rare
combination of them and learn which partner lists that voter is on. So every
combination of a bundle's attributes must occur in at least k rows.

Policy: attributes are listed most important first (the order given to
`cleanroom hash --attr`). While some combination occurs in fewer than k rows,
the least important attribute still set is dropped (set to null) for the rows
of those small combinations only; then the next one, and so on. Rows whose
every attribute had to be dropped carry none. The work is done on the table of
distinct combinations and their counts, so it costs little even on a full state
file, and the same mapping is then applied to every batch.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, Field

COUNT = "__rows"


class AttributeProtection(BaseModel):
    """What was done to make every attribute combination occur in at least k rows."""

    k: int
    order: list[str]
    dropped: dict[str, int] = Field(default_factory=dict)  # attribute -> rows it was dropped from


def protection_mapping(combos: pl.DataFrame, names: list[str], k: int) -> tuple[pl.DataFrame, AttributeProtection]:
    """From distinct combinations with a `__rows` count, the old -> protected mapping.

    Returns a frame with the original `names` columns and `new:<name>` columns.
    """
    mapping = combos.with_columns(pl.col(n).alias(f"new:{n}") for n in names)
    current = [f"new:{n}" for n in names]
    dropped: dict[str, int] = {}
    for name in reversed(names):
        size = pl.col(COUNT).sum().over(current)  # nulls form their own group
        small = mapping.select((size < k) & pl.col(f"new:{name}").is_not_null()).to_series()
        dropped[name] = int(mapping.filter(small).get_column(COUNT).sum())
        mapping = mapping.with_columns(
            pl.when(small).then(None).otherwise(pl.col(f"new:{name}")).alias(f"new:{name}")
        )
    protection = AttributeProtection(k=k, order=names, dropped={n: d for n, d in dropped.items() if d})
    return mapping.drop(COUNT), protection


def apply_mapping(frame: pl.DataFrame, mapping: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """Replace each row's attributes by their protected values."""
    joined = frame.join(mapping, on=names, how="left", nulls_equal=True, maintain_order="left")
    return joined.drop(names).rename({f"new:{n}": n for n in names})


def protect_attributes(frame: pl.DataFrame, names: list[str], k: int) -> tuple[pl.DataFrame, AttributeProtection]:
    """Apply the policy to an in-memory frame holding the attribute columns."""
    combos = frame.group_by(names).agg(pl.len().alias(COUNT))
    mapping, protection = protection_mapping(combos, names, k)
    return apply_mapping(frame, mapping, names), protection


def smallest_class(frame: pl.DataFrame, names: list[str]) -> int:
    """Rows in the rarest combination of attributes (all-null rows excluded).

    Combinations are grouped by a 64-bit hash of the row's attributes, several
    times faster than grouping the strings on a state-sized file. Two distinct
    combinations sharing a hash would look like one larger class; with a
    million combinations the odds of any such collision are about 3e-8.
    """
    carrying = frame.filter(pl.any_horizontal(pl.col(n).is_not_null() for n in names))
    if carrying.is_empty():
        return 0
    sizes = carrying.select(pl.struct(names).hash().value_counts(name="n").struct.field("n"))
    return int(sizes.to_series().min())
