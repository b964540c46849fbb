"""Person resolution: one person id per human across every partner list.

A partner row matched to the voter file is the person of its reference row.
Other rows are linked across (and within) partners by equal email or phone
tokens: connected components by min-label propagation, seeded with the
reference persons, so overlap counts include people who are not registered.
A phone the reference holds on several rows is a household's line, not a
person's, and links nobody.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cleanroom.broker.load import LoadedBundle

LINK_FIELDS = ({"email"}, {"phone"})
MAX_ROUNDS = 64


def linking_keys(bundle: LoadedBundle) -> list[str]:
    """Match keys made of a single email or phone field."""
    return [k.name for k in bundle.manifest.keys if set(k.fields) in LINK_FIELDS]


def shared_lines(reference: LoadedBundle) -> pl.LazyFrame:
    """Tokens of the reference's phone keys held by more than one of its rows (household phones)."""
    keys = [k.name for k in reference.manifest.keys if set(k.fields) == {"phone"}]
    if not keys:
        return pl.LazyFrame(schema={"token": pl.UInt128})
    pairs = pl.concat([reference.key_tokens(key, "ref_idx") for key in keys]).unique()
    return pairs.group_by("token").len().filter(pl.col("len") > 1).select("token")


def resolve_persons(rows: pl.DataFrame, partners: dict[str, LoadedBundle], reference: LoadedBundle,
                    refused: pl.DataFrame | None = None) -> pl.Series:
    """Person id per row of `rows` (columns partner, p_idx, ref_idx), in row order. `refused` (partner, p_idx,
    ref_idx) holds reference rows a row must not take, as a checking key contradicted them (any number per
    row).

    Ids below the reference's row count are reference rows (registered people);
    the others stand for unregistered people found only in partner lists.

    Each round, every shared token takes the smallest label of its rows, and
    every row not fixed to a reference row takes the smallest label of its
    tokens. Rounds run on dense integer arrays (tokens numbered once after a
    sort), so a round costs two segmented minimums.
    """
    reference_rows = reference.manifest.row_count
    rows = rows.with_row_index("g")
    fixed = rows.get_column("ref_idx").is_not_null().to_numpy()
    labels = (
        rows.select(pl.coalesce(pl.col("ref_idx").cast(pl.UInt64), pl.col("g").cast(pl.UInt64) + reference_rows))
        .to_series()
        .to_numpy()
        .copy()
    )
    edges = pl.concat(
        [
            bundle.token_pairs(key, "p_idx")
            .join(rows.lazy().filter(pl.col("partner") == name).select("g", "p_idx"), on="p_idx")
            .select("g", "token")
            for name, bundle in partners.items()
            for key in linking_keys(bundle)
        ]
        or [pl.LazyFrame(schema={"g": pl.UInt32, "token": pl.UInt128})]
    ).join(shared_lines(reference), on="token", how="anti")
    token = pl.col("token")
    shared = (
        edges.sort("token")
        .filter(((token == token.shift(1)) | (token == token.shift(-1))).fill_null(False))
        .select("g", (token != token.shift(1)).fill_null(True).cum_sum().cast(pl.UInt32).alias("t"))
        .collect()
    )
    if shared.is_empty():
        return pl.Series("person", labels)
    g = shared.get_column("g").to_numpy()
    t = shared.get_column("t").to_numpy() - 1  # sorted, 0..T-1
    token_starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    by_row = np.argsort(g, kind="stable")
    g_sorted = g[by_row]
    row_starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    touched = g_sorted[row_starts]
    free = ~fixed[touched]
    barred = _refused_pairs(rows, refused)
    for _ in range(MAX_ROUNDS):
        token_label = np.minimum.reduceat(labels[g], token_starts)
        best = np.minimum.reduceat(token_label[t][by_row], row_starts)
        better = free & (best < labels[touched])
        if barred.size:
            better &= ~np.isin(touched.astype(np.uint64) << np.uint64(32) | best, barred)
        if not better.any():
            break
        labels[touched[better]] = best[better]
    return pl.Series("person", labels)


def _refused_pairs(rows: pl.DataFrame, refused: pl.DataFrame | None) -> np.ndarray:
    """The (row of `rows`, reference row) pairs `refused` names, each as one integer: row << 32 | ref_idx."""
    if refused is None or refused.is_empty():
        return np.zeros(0, np.uint64)
    return (
        refused.join(rows.select("partner", "p_idx", "g"), on=["partner", "p_idx"])
        .select((pl.col("g").cast(pl.UInt64) * 2**32 + pl.col("ref_idx").cast(pl.UInt64)).unique())
        .to_series().to_numpy()
    )
