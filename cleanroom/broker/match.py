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
    contradicted: int = 0  # hits not taken because a checking key disagreed (`checks`)


@dataclass
class CascadeResult:
    """Matches (p_idx, ref_idx, rule) of one partner, plus per-key counts."""

    matches: pl.DataFrame
    keys: dict[str, KeyStats] = field(default_factory=dict)


def reference_index(reference: LoadedBundle) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """Per key: unambiguous token -> ref_idx table (sorted by token), and the count of ambiguous token values.
    A key that checks only (`checks_only`) gets an empty table: it links no rows in any cascade.

    Sort-based: after sorting by token, a token whose neighbours differ is held by
    one row; only the few repeated tokens are grouped to count their distinct rows.
    """
    unique: dict[str, pl.DataFrame] = {}
    ambiguous: dict[str, int] = {}
    token = pl.col("token")
    repeated = ((token == token.shift(1)) | (token == token.shift(-1))).fill_null(False)
    for info in reference.manifest.keys:
        key = info.name
        if info.checks_only:
            unique[key] = pl.DataFrame(schema={"token": pl.UInt128, "ref_idx": pl.UInt32})
            ambiguous[key] = 0
            continue
        pairs = reference.token_pairs(key, "ref_idx").sort("token").with_columns(repeated.alias("repeated"))
        pairs = pairs.collect()
        held = (
            pairs.filter("repeated")
            .group_by("token")
            .agg(pl.col("ref_idx").first(), pl.col("ref_idx").n_unique().alias("holders"))
        )
        single = held.filter(pl.col("holders") == 1).select("token", "ref_idx").sort("token")
        table = pairs.filter(~pl.col("repeated")).select("token", "ref_idx").merge_sorted(single, key="token")
        unique[key] = table.with_columns(token.set_sorted())
        ambiguous[key] = held.filter(pl.col("holders") > 1).height
    return unique, ambiguous


def _unique_hits(partner: LoadedBundle, table: pl.DataFrame, key: str) -> pl.DataFrame:
    """(p_idx, ref_idx, targets) of one key: the reference rows each partner row's tokens point to."""
    if not table.get_column("token").flags["SORTED_ASC"]:
        table = table.sort("token")
    # as-of join on sorted tokens (a merge, cheaper than hashing the large index), then exact equality
    found = (
        partner.token_pairs(key, "p_idx")
        .sort("token")
        .join_asof(
            table.lazy().select(pl.col("token").set_sorted(), pl.col("token").alias("hit"), "ref_idx"),
            on="token", strategy="backward", check_sortedness=False,
        )
        .filter(pl.col("hit") == pl.col("token"))
    )
    return (
        found.select("p_idx", "ref_idx")
        .unique()
        .group_by("p_idx")
        .agg(pl.col("ref_idx").first(), pl.len().alias("targets"))
        .collect()
    )


def key_hits(partner: LoadedBundle, index: dict[str, pl.DataFrame], keys: list[str]) -> tuple[pl.DataFrame, dict[str, int]]:
    """Every unique hit (p_idx, ref_idx, rank: the key's position in `keys`), and per key the rows split over
    several reference rows."""
    hits, split = [], {}
    for rank, key in enumerate(keys):
        per_row = _unique_hits(partner, index[key], key)
        split[key] = per_row.filter(pl.col("targets") > 1).height
        hits.append(
            per_row.filter(pl.col("targets") == 1)
            .select("p_idx", "ref_idx", pl.lit(rank, pl.UInt8).alias("rank"))
        )
    return pl.concat(hits), split


def first_hits(every: pl.DataFrame, keys: list[str], split: dict[str, int],
               contradicted: dict[str, int] | None = None) -> CascadeResult:
    """Each row's match at its first key with a unique hit; later hits elsewhere counted as conflicts."""
    stats = {key: KeyStats(split=split[key], contradicted=(contradicted or {}).get(key, 0)) for key in keys}
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


def cascade(partner: LoadedBundle, index: dict[str, pl.DataFrame], keys: list[str]) -> CascadeResult:
    """Run the cascade for one partner bundle against a reference index (no checking keys)."""
    every, split = key_hits(partner, index, keys)
    return first_hits(every, keys, split)
