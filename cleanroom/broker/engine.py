"""Run a match job's joins: cascade (or scoring) per partner and reference, then persons, whose
reference row a row without a link of its own takes through a shared email or phone.

The result (`MatchOutcome.rows`) is the broker's internal match table: handles,
rules, person ids and reference attributes. It never leaves the broker as is;
reports and releases are derived from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from cleanroom.attributes import AttributeProtection, protect_attributes, smallest_class
from cleanroom.broker.checks import NONE_DROPPED, drop_contradicted
from cleanroom.broker.load import JobInputs, LoadedBundle
from cleanroom.broker.match import (
    KeyStats,
    cascade,
    first_hits,
    key_hits,
    reference_index,
)
from cleanroom.broker.persons import resolve_persons
from cleanroom.broker.scoring import score_partners
from cleanroom.errors import SpecError, VerificationError

SHARED_CONTACT = "shared_contact"  # the rule of a row linked through its person (a shared email or phone)


@dataclass
class MatchOutcome:
    """Internal result of a match job (broker-only)."""

    rows: pl.DataFrame  # partner, handle, has_token, rule, score, posterior, ref_handle, person, registered, ...
    attributes: list[str]
    key_stats: dict[str, dict[str, KeyStats]]  # partner -> key -> counts
    ambiguous: dict[str, int]  # key -> ambiguous reference token values
    partners: list[str]
    reprotected: dict[str, AttributeProtection]  # references whose attributes were coarsened on load
    key_order: list[str]  # the spec's keys in cascade priority, then SHARED_CONTACT

    def key_counts(self) -> dict:
        """Per key: ambiguous reference token values; per partner and key: rows matched, conflicts, split and
        contradicted hits; in scored mode per partner and agreement pattern: links, expected false links (the
        sum of 1 - posterior) and so estimated precision (exact figures, broker-only: the job keeps them in
        internal/)."""
        return {
            "ambiguous": self.ambiguous,
            "partners": {partner: {key: asdict(stats) for key, stats in keys.items()}
                         for partner, keys in self.key_stats.items()},
            "scored_patterns": _scored_patterns(self.rows),
        }

    def match_table(self) -> pl.DataFrame:
        """Partner, partner handle, reference handle, rule, score: the evaluation view."""
        return self.rows.filter(pl.col("ref_handle").is_not_null()).select(
            "partner", pl.col("handle").alias("partner_handle"),
            pl.col("ref_handle").alias("reference_handle"), "rule", "score",
        )


def _scored_patterns(rows: pl.DataFrame) -> dict:
    """Per partner and agreement pattern of the scored links: links, expected false links (the sum of
    1 - posterior) and estimated precision."""
    if "posterior" not in rows.columns:
        return {}
    patterns = (
        rows.filter(pl.col("posterior").is_not_null())
        .group_by("partner", "rule").agg(pl.len().alias("links"), (1 - pl.col("posterior")).sum().alias("false"))
        .sort("partner", "links", descending=[False, True])
    )
    found: dict[str, dict] = {}
    for partner, rule, links, false in patterns.iter_rows():
        found.setdefault(partner, {})[rule] = {
            "links": links, "expected_false_links": round(false, 3), "estimated_precision": round(1 - false / links, 4)
        }
    return found


def _attribute_frame(reference: LoadedBundle, k: int) -> tuple[pl.DataFrame, AttributeProtection | None]:
    """A reference's attributes by row; re-protected here if any combination has fewer than k rows."""
    names = reference.manifest.attributes
    frame = reference.scan().select("handle", *names).with_row_index("ref_idx").collect()
    if not names or smallest_class(frame, names) >= k:
        return frame, None
    return protect_attributes(frame, names, k)


def _attach(rows: pl.DataFrame, table: pl.DataFrame, index: str) -> pl.DataFrame:
    """Columns of `table` for each row's `index` (a row number of `table`; null stays null).

    A gather by position: much cheaper than joining against a state-sized table.
    """
    positions = rows.get_column(index)
    valid = positions.is_not_null()
    picked = table[positions.fill_null(0).cast(pl.Int64)] if table.height else table.clear(rows.height)
    return rows.hstack(picked.select(pl.when(valid).then(pl.col(c)).alias(c) for c in picked.columns))


def run_match(
    inputs: JobInputs, *, k: int = 10, mode: str = "cascade", target_precision: float = 0.995
) -> MatchOutcome:
    """Match every partner against every reference; resolve persons on the primary.

    `mode` "cascade" is the fast deterministic cascade; "score" links by EM-learned
    Fellegi-Sunter scores, one to one, at `target_precision` (primary reference).

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
    if mode not in ("cascade", "score"):
        raise SpecError("match mode is 'cascade' or 'score'")
    contradicted = NONE_DROPPED
    if mode == "score":
        scored = score_partners(inputs.partners, inputs.primary, target_precision=target_precision)
        ambiguous = scored.ambiguous
    else:
        primary_index, ambiguous = reference_index(inputs.primary)
        hits, split = {}, {}
        for partner in inputs.partners:
            hits[partner.name], split[partner.name] = key_hits(partner, primary_index, keys)
        hits, contradicted = drop_contradicted(inputs.primary, inputs.partners, hits)
    extra_indexes = [reference_index(r)[0] for r in inputs.references[1:]]
    protected = {r.name: _attribute_frame(r, k) for r in inputs.references}
    primary_attrs = protected[inputs.primary.name][0]
    extra_attrs = [protected[r.name][0].drop("handle") for r in inputs.references[1:]]

    frames, key_stats = [], {}
    for partner in inputs.partners:
        if mode == "cascade":
            lost = contradicted.filter(pl.col("partner") == partner.name).group_by("rank").len()
            result = first_hits(hits[partner.name], keys, split[partner.name],
                                {keys[rank]: n for rank, n in lost.iter_rows()})
            key_stats[partner.name], matches = result.keys, result.matches
            has_token = pl.any_horizontal(pl.col(k).is_not_null() for k in keys)
        else:  # scoring has read every key already; reading them again would cost as much memory
            key_stats[partner.name], matches = {}, scored.links[partner.name]
            has_token = pl.lit(scored.has_token[partner.name])
        base = partner.scan().with_row_index("p_idx").select("p_idx", "handle", has_token.alias("has_token")).collect()
        rows = base.join(matches, on="p_idx", how="left", maintain_order="left")
        for i, index in enumerate(extra_indexes):
            extra = cascade(partner, index, keys).matches.select("p_idx", pl.col("ref_idx").alias(f"x{i}_idx"))
            rows = rows.join(extra, on="p_idx", how="left", maintain_order="left")
        if "score" not in rows.columns:
            rows = rows.with_columns(pl.lit(None, pl.Float64).alias(c) for c in ("score", "posterior"))
        frames.append(rows.with_columns(pl.lit(partner.name).alias("partner")))
    rows = pl.concat(frames, how="diagonal_relaxed")
    reference_rows = primary_attrs.height
    persons = resolve_persons(rows.select("partner", "p_idx", "ref_idx"), {p.name: p for p in inputs.partners},
                              inputs.primary, contradicted.select("partner", "p_idx", "ref_idx"))
    rows = through_contacts(rows.with_columns(persons, (persons < reference_rows).alias("registered")),
                            one_to_one=mode == "score")
    rows = _attach(rows, primary_attrs.drop("ref_idx").rename({"handle": "ref_handle"}), "ref_idx")
    for i, attrs in enumerate(extra_attrs):
        rows = _attach(rows, attrs.drop("ref_idx"), f"x{i}_idx")
    rows = rows.select(
        "partner", "handle", "has_token", "rule", "score", "posterior", "ref_handle", "person", "registered",
        *attribute_names,
    )
    reprotected = {name: p for name, (_, p) in protected.items() if p is not None}
    return MatchOutcome(
        rows, attribute_names, key_stats, ambiguous, [p.name for p in inputs.partners], reprotected,
        [*(k.name for k in inputs.primary.manifest.keys if not k.checks_only), SHARED_CONTACT],
    )


def through_contacts(rows: pl.DataFrame, *, one_to_one: bool) -> pl.DataFrame:
    """Rows without a link of their own whose person is a reference row take it, as rule SHARED_CONTACT.

    Such a row shares an email or phone token with rows linked to that reference
    row (person resolution), so it is the same person: listed with fewer or
    damaged fields. `one_to_one` (scored mode) keeps each reference row to one
    list person per partner: a row does not take a reference row its list links already.
    """
    take = pl.col("ref_idx").is_null() & pl.col("registered")
    rows = rows.with_columns(pl.col("person").cast(rows.schema["ref_idx"]).alias("_person"))
    if one_to_one:
        taken = rows.filter(pl.col("ref_idx").is_not_null()).select("partner", pl.col("ref_idx").alias("_person"))
        rows = rows.join(taken.unique().with_columns(pl.lit(True).alias("_taken")), on=["partner", "_person"],
                         how="left", maintain_order="left")
        take = take & pl.col("_taken").is_null()
    return rows.with_columns(
        pl.when(take).then(pl.col("_person")).otherwise(pl.col("ref_idx")).alias("ref_idx"),
        pl.when(take).then(pl.lit(SHARED_CONTACT)).otherwise(pl.col("rule")).alias("rule"),
    ).drop("_person", "_taken", strict=False)
