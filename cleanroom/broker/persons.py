"""Person resolution: one person id per human across every partner list.

A partner row matched to the voter file is the person of its reference row.
Other rows are linked across (and within) partners by equal email or phone
tokens: connected components by min-label propagation, seeded with the
reference persons, so overlap counts include people who are not registered.
"""

from __future__ import annotations

import polars as pl

from cleanroom.broker.load import LoadedBundle

LINK_FIELDS = ({"email"}, {"phone"})
MAX_ROUNDS = 64


def linking_keys(bundle: LoadedBundle) -> list[str]:
    """Match keys made of a single email or phone field."""
    return [k.name for k in bundle.manifest.keys if set(k.fields) in LINK_FIELDS]


def resolve_persons(rows: pl.DataFrame, partners: dict[str, LoadedBundle], reference_rows: int) -> pl.Series:
    """Person id per row of `rows` (columns partner, p_idx, ref_idx), in row order.

    Ids below `reference_rows` are reference rows (registered people); the
    others stand for unregistered people found only in partner lists.
    """
    rows = rows.with_row_index("g")
    label = pl.when(pl.col("ref_idx").is_not_null()).then(pl.col("ref_idx").cast(pl.UInt64))
    labels = rows.select("g", label.fill_null(pl.col("g").cast(pl.UInt64) + reference_rows).alias("label"),
                         pl.col("ref_idx").is_not_null().alias("fixed"))
    edges = pl.concat(
        [
            bundle.key_tokens(key, "p_idx")
            .join(rows.lazy().filter(pl.col("partner") == name).select("g", "p_idx"), on="p_idx")
            .select("g", "token")
            .collect()
            for name, bundle in partners.items()
            for key in linking_keys(bundle)
        ]
        or [pl.DataFrame(schema={"g": pl.UInt32, "token": pl.UInt128})]
    )
    shared = edges.filter(pl.len().over("token") > 1)
    for _ in range(MAX_ROUNDS):
        token_label = shared.join(labels, on="g").group_by("token").agg(pl.col("label").min())
        best = shared.join(token_label, on="token").group_by("g").agg(pl.col("label").min().alias("best"))
        updated = labels.join(best, on="g", how="left").with_columns(
            pl.when(~pl.col("fixed") & (pl.col("best") < pl.col("label")))
            .then(pl.col("best"))
            .otherwise(pl.col("label"))
            .alias("new")
        )
        if updated.filter(pl.col("new") != pl.col("label")).is_empty():
            break
        labels = updated.select("g", pl.col("new").alias("label"), "fixed")
    return labels.sort("g")["label"].alias("person")
