"""Aggregate reports of a match job, protected before anything is released.

Every table is a count table over one to three dimensions. Noise (when the
policy has differential privacy on) is calibrated so every table gets the same
noise scale: the report's epsilon is split in proportion to each table's
sensitivity (the number of its cells one person can change). Suppression then
works on the noisy values only.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, Field

from cleanroom.broker.engine import MatchOutcome
from cleanroom.errors import SpecError
from cleanroom.privacy import PrivacyPolicy, protect_table, write_safe_csv

NO_TOKEN = "no_token"
UNMATCHED = "unmatched"
MAX_CROSSTAB_DIMS = 3


class ReportTable(BaseModel):
    """One protected table: released cells and margins (null = suppressed)."""

    name: str
    title: str
    dims: list[str]
    cells: list[dict[str, Any]]
    margins: list[dict[str, Any]]
    protections: dict[str, Any]

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.cells)


class Report(BaseModel):
    """The standard report of a job: only protected aggregates."""

    job_id: str
    consortium_id: str
    epoch: int
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    partners: list[str]
    policy: dict[str, Any]
    epsilon_charged: float
    tables: list[ReportTable]

    def table(self, name: str) -> ReportTable:
        return next(t for t in self.tables if t.name == name)


@dataclass(frozen=True)
class _Raw:
    name: str
    title: str
    dims: list[str]
    counts: pl.DataFrame
    sensitivity: int


def _complete(counts: pl.DataFrame, domains: dict[str, list]) -> pl.DataFrame:
    """Every combination of the dims' values, zeros included."""
    grid = pl.DataFrame(
        list(itertools.product(*domains.values())), schema=list(domains), orient="row"
    ) if domains else pl.DataFrame()
    grid = grid.cast({d: counts.schema[d] for d in domains})
    return grid.join(counts, on=list(domains), how="left").with_columns(pl.col("count").fill_null(0))


def _persons(rows: pl.DataFrame, dims: list[str]) -> pl.DataFrame:
    return rows.group_by(dims).agg(pl.col("person").n_unique().cast(pl.Int64).alias("count"))


def raw_tables(outcome: MatchOutcome, crosstabs: list[list[str]]) -> list[_Raw]:
    """The standard tables with true counts (broker-internal; never released as is)."""
    partners = outcome.partners
    rows = outcome.rows.with_columns(pl.col("partner").cast(pl.Enum(partners)))
    m = len(partners)
    rules = rows.get_column("rule").drop_nulls().unique().sort().to_list()
    keys = outcome.key_order if set(rules) <= set(outcome.key_order) else rules  # scored rules are patterns
    outcome_col = (
        pl.when(~pl.col("has_token")).then(pl.lit(NO_TOKEN))
        .when(pl.col("rule").is_null()).then(pl.lit(UNMATCHED))
        .otherwise(pl.col("rule"))
    )
    by_rule = rows.group_by("partner", outcome_col.alias("outcome")).agg(pl.len().cast(pl.Int64).alias("count"))
    tables = [
        _Raw(
            name="partner_outcomes", title="Partner rows by match outcome (rule)",
            dims=["partner", "outcome"],
            counts=_complete(by_rule, {"partner": partners, "outcome": [*keys, UNMATCHED, NO_TOKEN]}),
            sensitivity=m,
        )
    ]
    # Each person's set of lists as a bitmask (one bit per partner), then its label.
    masks = {mask: " & ".join(sorted(p for i, p in enumerate(partners) if mask >> i & 1))
             for mask in range(1, 2 ** m)}
    sets = rows.group_by("person").agg(
        pl.col("partner").to_physical().replace_strict(list(range(m)), [1 << i for i in range(m)],
                                                        return_dtype=pl.UInt64).bitwise_or().alias("mask"),
        pl.col("registered").first(),
    ).select(
        pl.col("mask").replace_strict(masks, return_dtype=pl.String).alias("lists"),
        pl.when("registered").then(pl.lit("registered")).otherwise(pl.lit("unregistered")).alias("registration"),
    )
    combos = [" & ".join(c) for r in range(1, m + 1) for c in itertools.combinations(sorted(partners), r)]
    tables.append(_Raw(
        name="overlap_sets", title="Persons by the exact set of lists they are on (UpSet)",
        dims=["lists", "registration"],
        counts=_complete(sets.group_by("lists", "registration").agg(pl.len().cast(pl.Int64).alias("count")),
                         {"lists": combos, "registration": ["registered", "unregistered"]}),
        sensitivity=1,
    ))
    # Each unordered pair of lists once (a list with itself: persons on it), so
    # one person changes at most m(m+1)/2 cells and the matrix comes out symmetric.
    labels = pair_labels(partners)
    on = rows.select("person", "partner").unique()
    names = pl.DataFrame(
        [(a, b, label) for (a, b), label in labels.items()], schema=["partner", "partner_b", "lists"], orient="row"
    ).cast({"partner": pl.Enum(partners), "partner_b": pl.Enum(partners)})
    pairs = on.join(on, on="person", suffix="_b").join(names, on=["partner", "partner_b"])
    tables.append(_Raw(
        name="overlap_pairs", title="Persons on both lists (a list alone: persons on it)",
        dims=["lists"],
        counts=_complete(_persons(pairs, ["lists"]), {"lists": list(labels.values())}),
        sensitivity=m * (m + 1) // 2,
    ))
    registered = rows.filter(pl.col("registered"))
    for attribute in outcome.attributes:
        tables.append(_attribute_table(registered, ["partner", attribute], partners, f"by_{attribute}"))
    for dims in crosstabs:
        tables.append(_attribute_table(registered, dims, partners, "crosstab_" + "_x_".join(dims)))
    return tables


def pair_labels(partners: list[str]) -> dict[tuple[str, str], str]:
    """The overlap_pairs labels: each unordered pair of lists in partner order -> "A & B" ("A" for A alone)."""
    return {(a, b): a if a == b else f"{a} & {b}"
            for i, a in enumerate(partners) for b in partners[i:]}


def _attribute_table(rows: pl.DataFrame, dims: list[str], partners: list[str], name: str) -> _Raw:
    domains = {
        d: partners if d == "partner" else rows.get_column(d).drop_nulls().unique().sort().to_list()
        for d in dims
    }
    present = rows.drop_nulls([d for d in dims if d != "partner"])
    return _Raw(
        name=name, title="Matched persons by " + " x ".join(dims), dims=dims,
        counts=_complete(_persons(present, dims), domains),
        sensitivity=len(partners) if "partner" in dims else 1,
    )


def check_crosstabs(crosstabs: list[list[str]], attributes: list[str]) -> None:
    """Each cross-tab names 1-3 distinct known dimensions (attributes or `partner`)."""
    for dims in crosstabs:
        if not 1 <= len(dims) <= MAX_CROSSTAB_DIMS or len(set(dims)) != len(dims):
            raise SpecError("a cross-tab names 1 to 3 distinct attributes, e.g. --crosstab precinct,party")
        unknown = [d for d in dims if d != "partner" and d not in attributes]
        if unknown:
            raise SpecError(f"cross-tab attribute {unknown[0]!r} is not carried by any reference bundle")


def build_report(
    outcome: MatchOutcome,
    *,
    job_id: str,
    consortium_id: str,
    epoch: int,
    policy: PrivacyPolicy,
    crosstabs: list[list[str]] = (),
) -> Report:
    """Protect every standard table (noise per `policy`, suppression below k)."""
    raws = raw_tables(outcome, list(crosstabs))
    total = sum(r.sensitivity for r in raws)
    tables = []
    for raw in raws:
        epsilon = policy.epsilon_per_report * raw.sensitivity / total if policy.dp else None
        protected = protect_table(raw.counts, raw.dims, policy=policy, epsilon=epsilon, sensitivity=raw.sensitivity)
        tables.append(ReportTable(
            name=raw.name, title=raw.title, dims=raw.dims,
            cells=protected.cells.to_dicts(), margins=protected.margins.to_dicts(),
            protections=protected.protections,
        ))
    return Report(
        job_id=job_id, consortium_id=consortium_id, epoch=epoch, partners=outcome.partners,
        policy=policy.model_dump(), epsilon_charged=policy.epsilon_per_report if policy.dp else 0.0,
        tables=tables,
    )


def write_report(report: Report, folder: Path) -> None:
    """report.json plus one Parquet and one spreadsheet-safe CSV per table."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(report.model_dump_json(indent=2) + "\n")
    for table in report.tables:
        frame = table.frame()
        frame.write_parquet(folder / f"{table.name}.parquet")
        write_safe_csv(frame, folder / f"{table.name}.csv")


def load_report(path: Path) -> Report:
    """Read a report.json (or a folder holding one)."""
    path = Path(path)
    return Report.model_validate(json.loads((path / "report.json" if path.is_dir() else path).read_text()))
