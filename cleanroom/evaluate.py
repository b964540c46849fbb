"""Match quality against synthetic ground truth: precision, recall, F1 and overlap.

A predicted link is (partner, partner row, voter id), reached from a match
table of handles through the vaults. It is correct when the truth gives that
row the same voter id. Recall is measured against truth rows that have a voter
id; repeated links of one row to one voter count once.
"""

from __future__ import annotations

import itertools

import polars as pl
from pydantic import BaseModel
from rich.console import Group
from rich.table import Table

from cleanroom.errors import InputError

MATCH_COLUMNS = ("partner", "partner_handle", "reference_handle", "rule")


class Scores(BaseModel):
    """Link counts and the measures derived from them."""

    rows: int
    """Rows in the truth (for a rule: links the rule made)."""
    registered: int
    """Truth rows that have a voter id (recall's denominator)."""
    predicted: int
    true_positives: int
    false_positives: int
    """Links to the wrong voter or of rows whose person is not in the voter file."""
    false_positives_unregistered: int
    """The part of `false_positives` whose row's person is not in the voter file."""
    false_negatives: int
    precision: float
    recall: float
    f1: float


class PairOverlap(BaseModel):
    """Persons shared by two lists: per the truth, and as the matching found them."""

    lists: tuple[str, str]
    truth_all: int
    """Persons in both lists, registered or not."""
    truth_registered: int
    """Voters in both lists: what matching against the voter file can find."""
    found: int
    """Voters linked from both lists."""
    found_correct: int
    """Voters linked from both lists that really are in both."""


class WayOverlap(BaseModel):
    """Persons appearing in exactly `lists` lists."""

    lists: int
    truth_all: int
    truth_registered: int
    found: int


class Evaluation(BaseModel):
    """Everything `evaluate` measures."""

    overall: Scores
    partners: dict[str, Scores]
    rules: dict[str, Scores]
    pairs: list[PairOverlap]
    n_way: list[WayOverlap]

    def to_json(self) -> str:
        """The evaluation as indented JSON."""
        return self.model_dump_json(indent=2)

    def render(self) -> Group:
        """Rich tables for the terminal."""
        return render(self)


def _scores(rows: int, registered: int, predicted: int, tp: int, fp_unreg: int) -> Scores:
    precision = tp / predicted if predicted else 0.0
    recall = tp / registered if registered else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(rows=rows, registered=registered, predicted=predicted, true_positives=tp,
                  false_positives=predicted - tp, false_positives_unregistered=fp_unreg,
                  false_negatives=registered - tp, precision=precision, recall=recall, f1=f1)


def _check(df: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{what} lacks columns: {', '.join(missing)}")


def _links(match_table: pl.DataFrame, partner_vaults: dict[str, pl.DataFrame],
           reference_vault: pl.DataFrame) -> pl.DataFrame:
    """Match table rows as (partner, row, voter_id, rule), with handles resolved."""
    _check(match_table, MATCH_COLUMNS, "the match table")
    _check(reference_vault, ("handle", "id"), "the reference vault")
    unknown = set(match_table["partner"].unique().to_list()) - set(partner_vaults)
    if unknown:
        raise InputError(f"the match table names {len(unknown)} partner(s) with no vault")
    vaults = []
    for name, vault in partner_vaults.items():
        _check(vault, ("handle", "row"), f"the vault of {name}")
        vaults.append(vault.select(partner=pl.lit(name), partner_handle="handle",
                                   row=pl.col("row").cast(pl.Int64)))
    ref = reference_vault.select(reference_handle="handle", voter_id=pl.col("id").cast(pl.String))
    links = (match_table.select(*MATCH_COLUMNS)
             .join(pl.concat(vaults), on=["partner", "partner_handle"], how="left")
             .join(ref, on="reference_handle", how="left"))
    if (bad := links["row"].null_count()):
        raise InputError(f"{bad} match table row(s) have a partner handle missing from its vault")
    if (bad := links["voter_id"].null_count()):
        raise InputError(f"{bad} match table row(s) have a reference handle missing from the reference vault")
    return links.select("partner", "row", "voter_id", "rule").unique(
        subset=["partner", "row", "voter_id"], keep="first", maintain_order=True)


def evaluate(match_table: pl.DataFrame, truth: dict[str, pl.DataFrame],
             partner_vaults: dict[str, pl.DataFrame], reference_vault: pl.DataFrame) -> Evaluation:
    """Score a match table against the ground truth of every partner list.

    `truth` and `partner_vaults` are keyed by the partner names used in the
    match table; partners in the truth with no links score zero recall.
    """
    for name, t in truth.items():
        _check(t, ("row", "person_id", "voter_id"), f"the truth of {name}")
    unknown = set(match_table["partner"].unique().to_list()) - set(truth) if "partner" in match_table.columns else set()
    if unknown:
        raise InputError(f"the match table names {len(unknown)} partner(s) with no ground truth")
    links = _links(match_table, partner_vaults, reference_vault)
    gold = pl.concat([
        t.select(partner=pl.lit(name), row=pl.col("row").cast(pl.Int64),
                 person_id=pl.col("person_id").cast(pl.Int64),
                 true_voter=pl.col("voter_id").cast(pl.String))
        for name, t in truth.items()
    ])
    scored = links.join(gold, on=["partner", "row"], how="left").with_columns(
        tp=pl.col("voter_id") == pl.col("true_voter").fill_null(""),
        fp_unreg=pl.col("true_voter").is_null(),
    )

    def scores(links_: pl.DataFrame, gold_: pl.DataFrame, rows: int | None = None) -> Scores:
        return _scores(rows if rows is not None else len(gold_),
                       gold_["true_voter"].is_not_null().sum(), len(links_),
                       int(links_["tp"].sum()), int(links_["fp_unreg"].sum()))

    registered = gold["true_voter"].is_not_null().sum()
    partners = {name: scores(scored.filter(pl.col("partner") == name), gold.filter(pl.col("partner") == name))
                for name in truth}
    rules = {}
    for rule in sorted(scored["rule"].unique().drop_nulls().to_list()):
        part = scored.filter(pl.col("rule") == rule)
        rules[rule] = _scores(len(part), registered, len(part), int(part["tp"].sum()),
                              int(part["fp_unreg"].sum()))
    pairs, n_way = _overlap(gold, scored, list(truth))
    return Evaluation(overall=scores(scored, gold), partners=partners, rules=rules,
                      pairs=pairs, n_way=n_way)


def _overlap(gold: pl.DataFrame, scored: pl.DataFrame,
             names: list[str]) -> tuple[list[PairOverlap], list[WayOverlap]]:
    """Pairwise and N-way overlap: persons per the truth, voters per the links."""
    persons = gold.select("partner", "person_id", "true_voter").unique()
    found = scored.select("partner", "voter_id").unique()
    correct = scored.filter("tp").select("partner", "voter_id").unique()

    def shared(df: pl.DataFrame, col: str, a: str, b: str) -> int:
        """Distinct non-null values of `col` that lists `a` and `b` both have."""
        side = [df.filter(pl.col("partner") == x).select(col).drop_nulls().unique() for x in (a, b)]
        return side[0].join(side[1], on=col).height

    reg = persons.filter(pl.col("true_voter").is_not_null())
    pairs = [
        PairOverlap(lists=(a, b), truth_all=shared(persons, "person_id", a, b),
                    truth_registered=shared(reg, "true_voter", a, b),
                    found=shared(found, "voter_id", a, b),
                    found_correct=shared(correct, "voter_id", a, b))
        for a, b in itertools.combinations(names, 2)
    ]

    def ways(df: pl.DataFrame, col: str) -> dict[int, int]:
        counts = df.filter(pl.col(col).is_not_null()).group_by(col).agg(pl.col("partner").n_unique().alias("k"))
        return dict(counts.group_by("k").len().iter_rows())

    all_, reg_, found_ = ways(persons, "person_id"), ways(persons, "true_voter"), ways(found, "voter_id")
    n_way = [WayOverlap(lists=k, truth_all=all_.get(k, 0), truth_registered=reg_.get(k, 0),
                        found=found_.get(k, 0)) for k in range(1, len(names) + 1)]
    return pairs, n_way


def render(ev: Evaluation) -> Group:
    """Rich tables: scores per partner and rule, then overlaps."""
    scores = Table(title="Match quality", title_justify="left")
    for col in ("", "rows", "registered", "links", "TP", "FP", "FP unreg.", "FN", "precision",
                "recall", "F1"):
        scores.add_column(col, justify="left" if not col else "right")

    def add(label: str, s: Scores, style: str | None = None) -> None:
        scores.add_row(label, f"{s.rows:,}", f"{s.registered:,}", f"{s.predicted:,}",
                       f"{s.true_positives:,}", f"{s.false_positives:,}",
                       f"{s.false_positives_unregistered:,}", f"{s.false_negatives:,}",
                       f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", style=style)

    add("overall", ev.overall, "bold")
    for name, s in ev.partners.items():
        add(f"partner {name}", s)
    for name, s in ev.rules.items():
        add(f"rule {name}", s, "dim")

    pairs = Table(title="Pairwise overlap (persons)", title_justify="left")
    for col in ("lists", "truth, all", "truth, registered", "found", "found correct"):
        pairs.add_column(col, justify="left" if col == "lists" else "right")
    for p in ev.pairs:
        pairs.add_row(" & ".join(p.lists), f"{p.truth_all:,}", f"{p.truth_registered:,}",
                      f"{p.found:,}", f"{p.found_correct:,}")

    ways = Table(title="Persons by number of lists", title_justify="left")
    for col in ("lists", "truth, all", "truth, registered", "found"):
        ways.add_column(col, justify="right")
    for w in ev.n_way:
        ways.add_row(str(w.lists), f"{w.truth_all:,}", f"{w.truth_registered:,}", f"{w.found:,}")
    return Group(scores, pairs, ways)
