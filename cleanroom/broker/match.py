"""The deterministic match cascade of partner rows against one reference bundle.

For each match key in priority order: reference tokens held by more than one
reference row are ambiguous and unused; a partner row hits a key when its
tokens for that key point to exactly one reference row. A row matches at the
first key with such a hit; unique hits of later keys that point elsewhere are
counted as conflicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from cleanroom.broker.load import LoadedBundle


@dataclass
class KeyStats:
    """Counts of one match key for one partner."""

    matched: int = 0
    conflicts: int = 0
    split: int = 0  # rows whose tokens point to several reference rows


@dataclass
class CascadeResult:
    """Matches (p_idx, ref_idx, rule) of one partner, plus per-key counts."""

    matches: pl.DataFrame
    keys: dict[str, KeyStats] = field(default_factory=dict)


def reference_index(reference: LoadedBundle) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """Per key: unambiguous token -> ref_idx table, and the count of ambiguous token values."""
    unique: dict[str, pl.DataFrame] = {}
    ambiguous: dict[str, int] = {}
    for key in reference.key_names:
        held = (
            reference.key_tokens(key, "ref_idx")
            .group_by("token")
            .agg(pl.col("ref_idx").first(), pl.len().alias("holders"))
            .collect()
        )
        unique[key] = held.filter(pl.col("holders") == 1).drop("holders")
        ambiguous[key] = held.filter(pl.col("holders") > 1).height
    return unique, ambiguous


def cascade(partner: LoadedBundle, index: dict[str, pl.DataFrame], keys: list[str]) -> CascadeResult:
    """Run the cascade for one partner bundle against a reference index."""
    hits = []
    stats: dict[str, KeyStats] = {}
    for rank, key in enumerate(keys):
        per_row = (
            partner.key_tokens(key, "p_idx")
            .join(index[key].lazy(), on="token")
            .select("p_idx", "ref_idx")
            .unique()
            .group_by("p_idx")
            .agg(pl.col("ref_idx").first(), pl.len().alias("targets"))
            .collect()
        )
        stats[key] = KeyStats(split=per_row.filter(pl.col("targets") > 1).height)
        hits.append(
            per_row.filter(pl.col("targets") == 1)
            .select("p_idx", "ref_idx", pl.lit(rank, pl.UInt8).alias("rank"))
        )
    every = pl.concat(hits)
    first = every.sort("rank").group_by("p_idx", maintain_order=True).first()
    conflicts = (
        every.join(first.select("p_idx", pl.col("ref_idx").alias("chosen")), on="p_idx")
        .filter(pl.col("ref_idx") != pl.col("chosen"))
        .group_by("rank")
        .len()
    )
    for rank, n in conflicts.iter_rows():
        stats[keys[rank]].conflicts = n
    for rank, n in first.group_by("rank").len().iter_rows():
        stats[keys[rank]].matched = n
    rule = pl.col("rank").replace_strict(list(range(len(keys))), keys, return_dtype=pl.String)
    return CascadeResult(first.select("p_idx", "ref_idx", rule.alias("rule")), stats)
