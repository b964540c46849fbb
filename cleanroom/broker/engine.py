"""Run a match job's joins: cascade per partner and reference, then persons.

The result (`MatchOutcome.rows`) is the broker's internal match table: handles,
rules, person ids and reference attributes. It never leaves the broker as is;
reports and releases are derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cleanroom.attributes import AttributeProtection, protect_attributes, smallest_class
from cleanroom.broker.load import JobInputs, LoadedBundle
from cleanroom.broker.match import KeyStats, cascade, reference_index
from cleanroom.broker.persons import resolve_persons
from cleanroom.errors import VerificationError


@dataclass
class MatchOutcome:
    """Internal result of a match job (broker-only)."""

    rows: pl.DataFrame  # partner, handle, has_token, rule, ref_handle, person, registered, attributes...
    attributes: list[str]
    key_stats: dict[str, dict[str, KeyStats]]  # partner -> key -> counts
    ambiguous: dict[str, int]  # key -> ambiguous reference token values
    partners: list[str]
    reprotected: dict[str, AttributeProtection]  # references whose attributes were coarsened on load

    def match_table(self) -> pl.DataFrame:
        """Partner, partner handle, reference handle, rule: the evaluation view."""
        return self.rows.filter(pl.col("ref_handle").is_not_null()).select(
            "partner", pl.col("handle").alias("partner_handle"),
            pl.col("ref_handle").alias("reference_handle"), "rule",
        )


def _attribute_frame(reference: LoadedBundle, k: int) -> tuple[pl.DataFrame, AttributeProtection | None]:
    """A reference's attributes by row; re-protected here if any combination has fewer than k rows."""
    names = reference.manifest.attributes
    frame = reference.scan().select("handle", *names).with_row_index("ref_idx").collect()
    if not names or smallest_class(frame, names) >= k:
        return frame, None
    return protect_attributes(frame, names, k)


def run_match(inputs: JobInputs, *, k: int = 10) -> MatchOutcome:
    """Cascade every partner against every reference; resolve persons on the primary.

    Reference attributes are checked again here: any combination held by fewer
    than `k` rows is coarsened before it can reach a report or a filter.
    """
    keys = inputs.primary.key_names
    attribute_names: list[str] = []
    for reference in inputs.references:
        clash = set(attribute_names) & set(reference.manifest.attributes)
        if clash:
            raise VerificationError(f"attribute {sorted(clash)[0]} is carried by two references")
        attribute_names += reference.manifest.attributes
    primary_index, ambiguous = reference_index(inputs.primary)
    extra_indexes = [reference_index(r)[0] for r in inputs.references[1:]]
    protected = {r.name: _attribute_frame(r, k) for r in inputs.references}
    primary_attrs = protected[inputs.primary.name][0]
    extra_attrs = [protected[r.name][0].drop("handle") for r in inputs.references[1:]]

    frames, key_stats = [], {}
    for partner in inputs.partners:
        result = cascade(partner, primary_index, keys)
        key_stats[partner.name] = result.keys
        base = partner.scan().with_row_index("p_idx").select(
            "p_idx", "handle", pl.any_horizontal(pl.col(k).is_not_null() for k in keys).alias("has_token")
        ).collect()
        rows = base.join(result.matches, on="p_idx", how="left")
        rows = rows.join(primary_attrs.rename({"handle": "ref_handle"}), on="ref_idx", how="left")
        for index, attrs in zip(extra_indexes, extra_attrs, strict=True):
            extra = cascade(partner, index, keys).matches.select("p_idx", pl.col("ref_idx").alias("x_idx"))
            rows = rows.join(extra, on="p_idx", how="left").join(
                attrs.rename({"ref_idx": "x_idx"}), on="x_idx", how="left"
            ).drop("x_idx")
        frames.append(rows.with_columns(pl.lit(partner.name).alias("partner")))
    rows = pl.concat(frames, how="diagonal_relaxed")
    reference_rows = primary_attrs.height
    persons = resolve_persons(
        rows.select("partner", "p_idx", "ref_idx"),
        {p.name: p for p in inputs.partners},
        reference_rows,
    )
    rows = rows.with_columns(persons, (persons < reference_rows).alias("registered")).select(
        "partner", "handle", "has_token", "rule", "ref_handle", "person", "registered", *attribute_names
    )
    reprotected = {name: p for name, (_, p) in protected.items() if p is not None}
    return MatchOutcome(
        rows, attribute_names, key_stats, ambiguous, [p.name for p in inputs.partners], reprotected
    )
