"""Scored matching: Fellegi-Sunter weights learned by EM over key-agreement patterns.

Every (partner row, reference row) pair that shares a token of any key is a
candidate. The keys a pair agrees on tell which fields agree (a field agrees
when some agreeing key contains it), so each pair has a field-agreement
pattern. EM over the pattern counts estimates, without labels, for every field
the probability of agreeing among matches (m) and non-matches (u) and the share
of matches among candidates. A pair's score is the sum of the fields' log2
likelihood ratios, lowered by log2 of how many reference rows hold its rarest
agreeing token (term-frequency adjustment: agreeing on a common value proves
less). Pairs are linked one to one, best first (mutual best choices, round by
round), and only above the posterior threshold whose links reach the target
precision by the model's own estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from cleanroom.broker.load import LoadedBundle

MAX_HOLDERS = 20  # tokens held by more reference rows than this make no candidates
EM_ROUNDS = 100
_EPS = 1e-6
_BOUND = 1e-3  # m and u stay within [0.001, 0.999]: no single field may veto a pair
M_FLOOR = 0.8  # a field agrees for at least 80% of true matches (keeps EM away from degenerate classes)


def random_agreement(ref_tokens: dict[str, pl.DataFrame], key_fields: dict[str, list[str]],
                     fields: list[str], n_rows: int) -> np.ndarray:
    """u per field: how often two random reference rows agree, from token frequencies alone.

    For each key, P(two random rows share a token) = sum over tokens of
    C(holders, 2) / C(rows, 2); under independence its log is the sum of the
    log u of the key's fields, so u follows by least squares over all keys.
    """
    index = {f: i for i, f in enumerate(fields)}
    design, target = [], []
    pairs_total = n_rows * (n_rows - 1) / 2
    for key, table in ref_tokens.items():
        shared = table.group_by("token").agg(pl.len().alias("n")).select(
            (pl.col("n").cast(pl.Float64) * (pl.col("n") - 1) / 2).sum()
        ).item()
        if not shared:
            continue
        row = np.zeros(len(fields))
        row[[index[f] for f in key_fields[key]]] = 1
        design.append(row)
        target.append(np.log(shared / pairs_total))
    log_u = np.linalg.lstsq(np.array(design), np.array(target), rcond=None)[0] if design else np.zeros(len(fields))
    return np.clip(np.exp(log_u), _BOUND, 1 - _BOUND)


@dataclass
class FieldWeights:
    """EM estimates for one field."""

    m: float
    u: float


@dataclass
class ScoringModel:
    """What EM learned and the posterior threshold chosen for the target precision."""

    weights: dict[str, FieldWeights]
    prior: float
    threshold: float


def reference_tokens(reference: LoadedBundle, keys: list[str]) -> dict[str, pl.DataFrame]:
    """Per key: token -> (ref_idx, holders) for tokens held by at most MAX_HOLDERS rows."""
    tables = {}
    for key in keys:
        tables[key] = (
            reference.key_tokens(key, "ref_idx")
            .with_columns(pl.len().over("token").alias("holders"))
            .filter(pl.col("holders") <= MAX_HOLDERS)
            .collect()
        )
    return tables


def observed_fields(bundle: LoadedBundle, masks: dict[str, int], index: str) -> pl.LazyFrame:
    """Per row, a bit per field it has at all (some key containing the field carries a token)."""
    present = [
        pl.when(pl.col(key).is_not_null()).then(pl.lit(mask, pl.UInt32)).otherwise(pl.lit(0, pl.UInt32))
        for key, mask in masks.items()
    ]
    return bundle.scan().with_row_index(index).select(index, pl.reduce(lambda a, b: a | b, present).alias(index + "_seen"))


def candidate_pairs(
    partner: LoadedBundle,
    reference: LoadedBundle,
    ref_tokens: dict[str, pl.DataFrame],
    key_fields: dict[str, list[str]],
    fields: list[str],
) -> pl.DataFrame:
    """(p_idx, ref_idx, pattern, observed, holders) for every pair sharing a token.

    `pattern` has a bit per field that agrees; `observed` a bit per field both
    rows have, so a field missing on either side counts as unknown rather than
    as a disagreement.
    """
    bit = {f: 1 << i for i, f in enumerate(fields)}
    masks = {key: sum(bit[f] for f in key_fields[key]) for key in ref_tokens}
    parts = [
        partner.key_tokens(key, "p_idx")
        .join(table.lazy(), on="token")
        .select("p_idx", "ref_idx", "holders", pl.lit(masks[key], pl.UInt32).alias("mask"))
        for key, table in ref_tokens.items()
    ]
    return (
        pl.concat(parts)
        .group_by("p_idx", "ref_idx")
        .agg(pl.col("mask").bitwise_or().alias("pattern"), pl.col("holders").min())
        .join(observed_fields(partner, masks, "p_idx"), on="p_idx")
        .join(observed_fields(reference, masks, "ref_idx"), on="ref_idx")
        .select("p_idx", "ref_idx", "pattern", "holders",
                (pl.col("p_idx_seen") & pl.col("ref_idx_seen")).alias("observed"))
        .collect()
    )


def _bits(values: np.ndarray, n_fields: int) -> np.ndarray:
    return ((values[:, None] >> np.arange(n_fields)) & 1).astype(float)


def fit_em(
    patterns: np.ndarray, observed: np.ndarray, counts: np.ndarray, u: np.ndarray
) -> tuple[np.ndarray, float]:
    """m per field and the match share among candidates, with u fixed (from random pairs)."""
    n_fields = len(u)
    agree, seen = _bits(patterns, n_fields), _bits(observed, n_fields)
    m, prior = np.full(n_fields, 0.9), 0.5
    for _ in range(EM_ROUNDS):
        log_m, log_u = _log_likelihoods(agree, seen, m, u)
        w = 1 / (1 + np.exp(np.clip(log_u - log_m, -50, 50)) * (1 - prior) / prior)
        wm = counts * w
        prior = float(np.clip(wm.sum() / counts.sum(), _EPS, 1 - _EPS))
        m = np.clip((wm @ (agree * seen)) / np.maximum(wm @ seen, _EPS), M_FLOOR, 1 - _BOUND)
    return m, prior


def _log_likelihoods(agree, seen, m, u) -> tuple[np.ndarray, np.ndarray]:
    log_m = (seen * agree) @ np.log(m) + (seen * (1 - agree)) @ np.log(1 - m)
    log_u = (seen * agree) @ np.log(u) + (seen * (1 - agree)) @ np.log(1 - u)
    return log_m, log_u


def link_one_to_one(pairs: pl.DataFrame, score: str = "score") -> pl.DataFrame:
    """Mutually best pairs, round by round: no partner row and no reference row twice."""
    linked = []
    remaining = pairs
    while not remaining.is_empty():
        best = remaining.filter(
            (pl.col(score) == pl.col(score).max().over("p_idx"))
            & (pl.col(score) == pl.col(score).max().over("ref_idx"))
        ).unique("p_idx", keep="first").unique("ref_idx", keep="first")
        if best.is_empty():
            break
        linked.append(best)
        remaining = remaining.join(best.select("p_idx"), on="p_idx", how="anti").join(
            best.select("ref_idx"), on="ref_idx", how="anti"
        )
    return pl.concat(linked) if linked else pairs.clear()


def threshold_for(posteriors: np.ndarray, target: float) -> float:
    """Lowest posterior whose links (all at or above it) reach `target` estimated precision."""
    ordered = np.sort(posteriors)[::-1]
    running = np.cumsum(ordered) / np.arange(1, len(ordered) + 1)
    group_end = np.append(ordered[1:] != ordered[:-1], True)  # ties are kept or dropped together
    ok = np.nonzero((running >= target) & group_end)[0]
    return float(ordered[ok[-1]]) if len(ok) else 1.0


def score_partners(
    partners: list[LoadedBundle],
    reference: LoadedBundle,
    ref_tokens: dict[str, pl.DataFrame],
    key_fields: dict[str, list[str]],
    *,
    target_precision: float = 0.995,
) -> tuple[dict[str, pl.DataFrame], ScoringModel]:
    """Weights learned once over every partner's candidates; links per partner.

    Returns per partner its links (p_idx, ref_idx, rule, score, posterior).
    """
    fields = sorted({f for fs in key_fields.values() for f in fs})
    n = len(fields)
    pairs = {p.name: candidate_pairs(p, reference, ref_tokens, key_fields, fields) for p in partners}
    counted = pl.concat(pairs.values()).group_by("pattern", "observed").len()
    u = random_agreement(ref_tokens, key_fields, fields, reference.manifest.row_count)
    m, prior = fit_em(
        counted["pattern"].to_numpy().astype(np.int64), counted["observed"].to_numpy().astype(np.int64),
        counted["len"].to_numpy().astype(float), u,
    )
    log2_ratio_agree, log2_ratio_disagree = np.log2(m / u), np.log2((1 - m) / (1 - u))
    # At most one true match per partner row: the share of matches among candidates
    # cannot exceed rows / candidates, whatever EM's mixture weight says.
    rows = sum(frame.get_column("p_idx").n_unique() for frame in pairs.values())
    prior = min(prior, rows / max(int(counted["len"].sum()), 1))
    odds = np.log2(prior / (1 - prior))
    bits = [1 << i for i in range(n)]
    weight = pl.sum_horizontal(
        pl.when(pl.col("observed") & b == 0).then(0.0)
        .when(pl.col("pattern") & b != 0).then(float(log2_ratio_agree[i]))
        .otherwise(float(log2_ratio_disagree[i]))
        for i, b in enumerate(bits)
    )
    rule = pl.concat_str(
        [pl.when(pl.col("pattern") & b != 0).then(pl.lit(f)) for f, b in zip(fields, bits, strict=True)],
        separator="+", ignore_nulls=True,
    )
    links, scored_all = {}, []
    for name, candidates in pairs.items():
        scored = candidates.with_columns(
            (weight - pl.col("holders").cast(pl.Float64).log(2)).alias("score")
        ).with_columns((1 / (1 + 2.0 ** -(pl.col("score") + odds))).alias("posterior"))
        links[name] = link_one_to_one(scored).with_columns(rule.alias("rule"))
        scored_all.append(links[name].get_column("posterior"))
    threshold = threshold_for(pl.concat(scored_all).to_numpy(), target_precision) if scored_all else 1.0
    links = {
        name: frame.filter(pl.col("posterior") >= threshold).select("p_idx", "ref_idx", "rule", "score", "posterior")
        for name, frame in links.items()
    }
    model = ScoringModel(
        weights={f: FieldWeights(float(m[i]), float(u[i])) for i, f in enumerate(fields)},
        prior=prior, threshold=threshold,
    )
    return links, model
