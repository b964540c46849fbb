"""Scored matching: one-to-one linking, EM estimates, key sets and variants."""

import itertools
import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom import (
    create_identity,
    hash_file,
    hash_frame,
    load_identity,
    load_spec,
    new_key,
)
from cleanroom.broker.duplicates import (
    MAX_SHARING,
    components,
    list_persons,
    same_person_keys,
    shared_pairs,
    together_keys,
)
from cleanroom.broker.engine import SHARED_CONTACT, run_match
from cleanroom.broker.load import LoadedBundle, load_inputs
from cleanroom.broker.match import reference_index
from cleanroom.broker.reports import build_report
from cleanroom.broker.scoring import (
    FEATURE_LEVELS,
    MAX_HOLDERS,
    MIN_POSTERIOR,
    N_LEVELS,
    SECOND_SIGNUP_POSTERIOR,
    candidate_pairs,
    closure,
    compound_ratios,
    contending_rows,
    could_show,
    deciding_rows,
    feature_agreement,
    feature_levels,
    feature_weight,
    features_of,
    filled_counts,
    fit_em,
    fit_match_share,
    implied_agreement,
    key_masks,
    link_one_to_one,
    list_odds,
    most_readings,
    random_agreement,
    rarity_bonus,
    rarity_keys,
    row_posteriors,
    score_partners,
    scored_fields,
    shown_agreement,
    signed_up_again,
    subset_levels,
    threshold_for,
)
from cleanroom.bundle import KeyInfo, verify_bundle
from cleanroom.evaluate import evaluate
from cleanroom.hashing import HashPlan
from cleanroom.privacy import PrivacyPolicy
from cleanroom.spec import KeySet, MatchKey, MatchSpec
from cleanroom.tokens import FORMAT_VERSION, token
from cleanroom.variants import shown_fields
from cleanroom.synth import generate_partners, generate_voters, write_frame

_BOUND_M = 1e-3
SCORED_SPEC = Path(__file__).parent.parent / "examples" / "scored_spec.toml"

pairs_st = st.lists(
    st.tuples(st.integers(0, 15), st.integers(0, 15), st.floats(-20, 20, allow_nan=False)), min_size=1, max_size=80
)


@settings(max_examples=150, deadline=None)
@given(pairs_st)
def test_linker_never_links_a_row_twice(pairs):
    frame = pl.DataFrame(pairs, schema=["p_idx", "ref_idx", "score"], orient="row").unique(["p_idx", "ref_idx"])
    links = link_one_to_one(frame)
    assert links["p_idx"].is_unique().all() and links["ref_idx"].is_unique().all()
    # greedy optimality: every unlinked pair is blocked by a link at least as good on one side
    best_p = dict(zip(links["p_idx"], links["score"], strict=True))
    best_r = dict(zip(links["ref_idx"], links["score"], strict=True))
    for p, r, s in frame.iter_rows():
        assert s <= best_p.get(p, -np.inf) or s <= best_r.get(r, -np.inf)


@settings(max_examples=150, deadline=None)
@given(pairs_st, st.lists(st.integers(0, 5), min_size=16, max_size=16))
def test_linker_with_persons_shares_a_reference_row_only_within_a_person(pairs, labels):
    frame = pl.DataFrame(pairs, schema=["p_idx", "ref_idx", "score"], orient="row").unique(["p_idx", "ref_idx"])
    persons = pl.Series(labels)
    links = link_one_to_one(frame, persons=persons)
    assert links["p_idx"].is_unique().all()
    assert links.join(frame, on=["p_idx", "ref_idx"], how="anti").is_empty()  # only real candidates
    labelled = links.with_columns(persons.gather(links["p_idx"]).alias("person"))
    assert (labelled.group_by("ref_idx").agg(pl.col("person").n_unique())["person"] == 1).all()
    assert (labelled.group_by("person").agg(pl.col("ref_idx").n_unique())["ref_idx"] == 1).all()
    # with every row its own person, the same links as the plain linker
    alone = link_one_to_one(frame, persons=pl.Series(range(16)))
    assert alone.sort("p_idx").equals(link_one_to_one(frame).sort("p_idx"))


@settings(max_examples=150, deadline=None)
@given(pairs_st, st.lists(st.one_of(st.floats(0, 1), st.sampled_from([0.995, 0.999, 1.0])), min_size=80, max_size=80))
def test_second_signups_take_only_their_own_most_likely_voter_already_linked(pairs, posteriors):
    """A row left unlinked joins a link only where its most likely candidate, at posterior >=
    SECOND_SIGNUP_POSTERIOR, is a reference row the list links already; no row is linked twice."""
    frame = pl.DataFrame(pairs, schema=["p_idx", "ref_idx", "score"], orient="row").unique(["p_idx", "ref_idx"])
    frame = frame.with_columns(pl.Series("posterior", posteriors[: frame.height]))
    linked = link_one_to_one(frame).filter(pl.col("posterior") >= MIN_POSTERIOR)  # as score_partners does
    extra = signed_up_again(frame, linked)
    assert pl.concat([linked["p_idx"], extra["p_idx"]]).is_unique().all()
    assert extra["ref_idx"].is_in(linked["ref_idx"].implode()).all()
    best = frame.group_by("p_idx").agg(pl.col("posterior").max().alias("best"))
    checked = extra.join(best, on="p_idx")
    assert (checked["posterior"] == checked["best"]).all()
    assert (checked["posterior"] >= SECOND_SIGNUP_POSTERIOR).all()
    unlinked_best = (frame.join(linked.select("p_idx"), on="p_idx", how="anti")
                     .join(best, on="p_idx").filter((pl.col("posterior") == pl.col("best"))
                                                    & (pl.col("posterior") >= SECOND_SIGNUP_POSTERIOR)))
    should = unlinked_best.filter(pl.col("ref_idx").is_in(linked["ref_idx"].implode()))["p_idx"].unique()
    assert sorted(extra["p_idx"].to_list()) == sorted(should.to_list())


def test_linker_breaks_ties_by_order():
    """Equal scores go to the pair listed first, whatever the frame's chunks."""
    pairs = pl.concat([
        pl.DataFrame({"p_idx": [0, 1], "ref_idx": [0, 0], "score": [5.0, 5.0]}),
        pl.DataFrame({"p_idx": [2, 2], "ref_idx": [1, 2], "score": [3.0, 3.0]}),
    ], rechunk=False)
    for _ in range(20):
        links = link_one_to_one(pairs).sort("p_idx")
        assert links.select("p_idx", "ref_idx").rows() == [(0, 0), (2, 1)]


candidates_st = st.lists(
    st.tuples(st.integers(0, 6), st.floats(-40, 40, allow_nan=False)), min_size=1, max_size=30
)


@settings(max_examples=150, deadline=None)
@given(candidates_st, st.floats(-10, 10, allow_nan=False))
def test_row_posteriors_are_a_distribution_per_row(candidates, odds):
    """A row's candidates share at most probability 1; a lone one gets w / (1 + w); more weight, more posterior."""
    frame = pl.DataFrame(candidates, schema=["p_idx", "score"], orient="row")
    post = frame.with_columns(row_posteriors(odds).alias("posterior"))
    totals = post.group_by("p_idx").agg(pl.col("posterior").sum(), pl.len())
    assert (totals["posterior"] <= 1 + 1e-9).all() and (post["posterior"] >= 0).all()
    for p_idx, total, n in totals.iter_rows():
        rows = post.filter(pl.col("p_idx") == p_idx).sort("score")
        assert rows["posterior"].is_sorted()
        if n == 1:
            w = 2.0 ** min(max(rows["score"][0] + odds, -1000), 1000)
            assert abs(total - w / (1 + w)) < 1e-9


def test_equal_namesakes_split_the_posterior():
    """Two candidates that agree equally well are each at most a coin flip, however strong the agreement."""
    frame = pl.DataFrame({"p_idx": [0, 0, 1], "score": [30.0, 30.0, 30.0]})
    post = frame.with_columns(row_posteriors(0.0).alias("posterior"))["posterior"].to_list()
    assert post[0] == post[1] and post[0] < 0.5 <= MIN_POSTERIOR < post[2]


def test_em_recovers_known_m_and_prior():
    """Levels drawn from known m (matches) and u (non-matches): EM with u fixed finds m and the share."""
    rng = np.random.default_rng(3)
    m_true = np.array([[0.05, 0.10, 0.85], [0.10, 0.05, 0.85], [0.20, 0.00, 0.80], [0.02, 0.18, 0.80]])
    u = np.array([[0.95, 0.04, 0.01], [0.90, 0.05, 0.05], [0.99, 0.0, 0.01], [0.70, 0.20, 0.10]])
    n, prior_true = 100_000, 0.3
    is_match = rng.random(n) < prior_true
    probabilities = np.where(is_match[:, None, None], m_true, u)
    cumulative = probabilities.cumsum(axis=2)
    levels = (rng.random((n, 4, 1)) > cumulative).sum(axis=2)
    patterns, counts = np.unique(levels, axis=0, return_counts=True)
    m, prior = fit_em(patterns, np.ones_like(patterns, bool), counts.astype(float), np.clip(u, 1e-3, 1))
    assert abs(prior - prior_true) < 0.02
    assert np.allclose(m, m_true, atol=0.03)


def test_a_phonetic_code_nests_under_its_name():
    """The phonetic code is the partial level of its name, so an exact name is counted once; a group with two
    plain name fields (first and first_canon) keeps the code as a feature of its own."""
    fields = ["birth_year", "dob", "first_canon", "first_phonetic", "last", "last_phonetic", "zip5"]
    features = {f.name: f for f in features_of(fields)}
    assert list(features) == ["birth_year", "dob", "first_canon", "last", "zip5"]
    assert features["first_canon"].partial == 3 and features["last"].partial == 5 and features["dob"].partial is None
    both = {f.name: f.partial for f in features_of(["first", "first_canon", "first_phonetic", "last"])}
    assert both == {"first": None, "first_canon": None, "first_phonetic": None, "last": None}


@settings(max_examples=30, deadline=None)
@given(share=st.floats(0.05, 0.95), seed=st.integers(0, 2**32 - 1))
def test_match_share_is_recovered_from_row_likelihoods(share, seed):
    """Rows with a match carry strong evidence, rows without weak or none (no candidate at all): EM over the
    rows' likelihood ratios finds the share of rows with a match."""
    rng = np.random.default_rng(seed)
    rows = 4_000
    matched = rng.random(rows) < share
    ratios = np.where(matched, 2.0 ** rng.uniform(8, 30, rows), 2.0 ** rng.uniform(-30, -8, rows))
    with_candidates = matched | (rng.random(rows) < 0.5)
    assert abs(fit_match_share(ratios[with_candidates], rows) - matched.mean()) < 0.01


def test_a_rarity_key_bounds_the_agreement_of_its_fields_by_its_bar():
    """A pair sharing a token of a gated key agrees on values (or a reading of them: swapped, a deletion) the
    voter file holds at most `bar` times, and a row holds k readings: its fields count log2(N / (k bar)) bits
    instead of the sum of their log2(1 / u) at the pair's levels, where more; the best key it shares counts."""
    fields = ["first_canon", "last", "zip5"]
    features = features_of(fields)
    u = np.array([[0.9, 0.0, 0.004, 0.01, 0, 0, 0, 0], [0.9, 0.0, 0.005, 0.02, 0, 0, 0, 0],
                  [0.8, 0.0, 0.001, 0.2, 0, 0, 0, 0]])
    keys = [KeyInfo(name="rare", fields=["first_canon", "last"], max_expected_holders=0.01, non_null=1),
            KeyInfo(name="common", fields=["first_canon", "last"], max_expected_holders=1000.0, non_null=1),
            KeyInfo(name="typo", fields=["first_canon", "last"], variants=["deletions:last"],
                    max_expected_holders=0.01, non_null=1),
            KeyInfo(name="zip", fields=["first_canon", "zip5"], max_expected_holders=0.01, non_null=1),
            KeyInfo(name="plain", fields=["first_canon", "last"], non_null=1)]
    assert [k.name for k in rarity_keys(keys)] == ["rare", "common", "typo", "zip"]
    masks = key_masks(keys, fields)
    first, last = 1, 2
    pairs = pl.DataFrame({  # shares: rare; common; typo with the last name exact; typo with it fuzzy; zip; all
        "exact": [first | last, first | last, first | last, first, first | 4, first | last | 4],
        "rare": [0b0001, 0b0010, 0b0100, 0b0100, 0b1000, 0b1111],
    })
    gains = pairs.select(rarity_bonus(keys, masks, features, u, 100_000).alias("g"))["g"].to_list()
    bound = np.log2(100_000 / 0.01)
    typo = bound - np.log2(most_readings(keys[2]))  # a row holds a token per deletion: any of them may meet
    assert most_readings(keys[2]) == 13 and most_readings(keys[0]) == 1
    expected = [bound + np.log2(0.01 * 0.02), 0.0, typo + np.log2(0.01 * 0.02), typo + np.log2(0.01 * 0.005),
                bound + np.log2(0.01 * 0.2)]
    assert gains == pytest.approx([*expected, max(expected)])
    nested = features_of(["first_canon", "first_phonetic", "last"])  # the phonetic code has no feature of its own
    code = [KeyInfo(name="code", fields=["first_phonetic", "last"], max_expected_holders=1e-6, non_null=1)]
    fields = ["first_canon", "first_phonetic", "last"]
    gain = pl.DataFrame({"exact": [6], "rare": [1]}).select(
        rarity_bonus(code, key_masks(code, fields), nested, u, 100_000).alias("g"))["g"].item()
    assert gain == 0.0


def test_the_match_share_is_fitted_on_rows_that_can_decide():
    """Rows with a birth date or a whole address decide the share (rows without candidates count, as no
    match); where fewer than MIN_ANCHOR_PAIRS do, every row does; the odds spread the share over N."""
    fields = ["dob", "first_canon", "house_number", "street"]
    dob, first, house, street = (1 << i for i in range(4))
    seen = np.array([dob | first, house | street, house, first] * 100)
    assert deciding_rows(seen, fields).tolist() == [True, True, False, False] * 100
    scored = pl.DataFrame({"p_idx": [0, 1, 2, 3], "score": [60.0, 60.0, 60.0, 60.0]}).with_columns(
        pl.col("p_idx").cast(pl.UInt32))
    share, odds = list_odds(scored, seen, fields, 1_000)
    assert share == pytest.approx(2 / 200, rel=1e-3)  # two of the 200 deciding rows have a certain match
    assert odds == pytest.approx(np.log2(share / ((1 - share) * 1_000)))
    share, _ = list_odds(scored, seen[:40], fields, 1_000)  # 20 deciding rows: too few, all 40 decide
    assert share == pytest.approx(4 / 40, rel=1e-3)


def test_feature_levels_and_their_random_agreement():
    fields = ["first_canon", "first_phonetic", "zip5"]  # bits 1, 2, 4
    features = features_of(fields)
    exact = np.array([3, 2, 0, 4, 4])
    fuzzy = np.array([0, 0, 1, 0, 0])
    observed = np.array([7, 7, 7, 7, 4])
    levels, seen = feature_levels(exact, fuzzy, observed, features)
    top = len(FEATURE_LEVELS) - 1
    # exact name (code implied), code only, fuzzy name, names disagreeing, names unknown
    assert levels[:, 0].tolist() == [top, 1, 2, 0, 0]
    assert seen[:, 0].tolist() == [True, True, True, True, False]
    assert levels[:, 1].tolist() == [0, 0, 0, top, top] and seen[:, 1].all()
    u_fields = np.array([[0.99, 0.004, 0.002], [0.98, 0.001, 0.01], [0.9, 0.001, 0.1]])
    u = feature_agreement(u_fields, features)
    assert u.shape == (2, N_LEVELS) and np.allclose(u[:, : len(FEATURE_LEVELS)].sum(axis=1), 1)
    assert u[0, top] == 0.002 and u[0, 2] == 0.004
    assert abs(u[0, 1] - (0.01 - 0.002)) < 1e-12  # the code agrees beyond the exact name
    assert u[1, top] == 0.1


def test_the_address_is_one_feature_with_a_level_per_subset_agreeing():
    """zip, house number and street are one compound feature; not when a variant touches one of them."""
    fields = ["first_canon", "house_number", "street", "zip5"]  # bits 1, 2, 4, 8
    features = features_of(fields)
    assert [f.name for f in features] == ["first_canon", "address"]
    address = features[1]
    assert address.members == (3, 1, 2)  # zip, house number, street: level bits 1, 2, 4
    exact = np.array([14, 8, 2, 0])
    levels, seen = feature_levels(exact, np.zeros(4, np.int64), np.array([15, 15, 15, 9]), features)
    assert levels[:, 1].tolist() == [7, 1, 2, 0]
    assert seen[:, 1].tolist() == [True, True, True, False]  # its m is learned where all three are shown
    assert [f.name for f in features_of(fields, fuzzy=4)] == fields


def test_the_street_name_is_a_member_of_the_address_below_the_street():
    """With street_name among the fields, the address has four members; the street implies its name, so a
    level with the street but not its name is impossible, and the name alone is a fuzzy street."""
    fields = ["first_canon", "house_number", "street", "street_name", "zip5"]  # bits 1, 2, 4, 8, 16
    address = features_of(fields)[-1]
    assert address.name == "address" and address.members == (4, 1, 2, 3)  # zip, house, street, street name
    assert address.implies == ((2, 3),) and address.extras == 0b1000
    assert not address.possible(0b0100) and address.possible(0b1100) and address.possible(0b1000)
    assert closure(0b0101, address.implies) == 0b1101
    # seen once zip, house number and street are shown, whether or not a key could show the street name
    exact = np.array([2 | 4 | 8 | 16, 2 | 8 | 16, 2 | 16])
    levels, seen = feature_levels(exact, np.zeros(3, np.int64), np.array([31, 31, 23]), [address])
    assert levels[:, 0].tolist() == [15, 11, 3] and seen[:, 0].all()
    assert address.shown(np.array([31, 23])).tolist() == [15, 7]
    pairs = pl.DataFrame({"exact": [4], "fuzzy": [0], "observed": [4]},
                         schema={"exact": pl.UInt32, "fuzzy": pl.UInt32, "observed": pl.UInt32})
    assert implied_agreement(pairs, fields).row(0) == (12, 0, 12)  # the street agreeing: its name agrees


def test_a_street_name_agreeing_alone_weighs_between_the_street_disagreeing_and_agreeing():
    implies = ((2, 3),)
    rng = np.random.default_rng(1)
    m, u = rng.dirichlet(np.ones(16)), rng.dirichlet(np.ones(16))
    m[11], u[11] = 0.001, 1e-7  # the bounds: their ratio alone would be 13 bits
    table = compound_ratios(m, u, 4, implies)
    low, high = table[15 * 16 + 3], table[15 * 16 + 7 + 8]
    assert min(low, high) <= table[15 * 16 + 11] <= max(low, high)
    # the street name unknown: only the states a pair can be in are summed (the street implies its name)
    assert abs(table[7 * 16 + 7] - np.log2(m[15] / u[15])) < 1e-12
    assert abs(table[7 * 16 + 3] - np.log2((m[3] + m[11]) / (u[3] + u[11]))) < 1e-12


def test_subset_levels_with_an_implied_member():
    """P(at least S) is P(at least S and what S implies): a level lacking an implied member has no mass, and a
    subset measured with the street counts for the street name too."""
    implies = ((2, 3),)
    at_least = {("a", 1): 0.1, ("a", 2): 0.03, ("a", 12): 0.05, ("a", 8): 0.06, ("a", 3): 0.002, ("a", 11): 0.0003,
                ("a", 15): 0.0001, ("a", 13): 0.004, ("a", 14): 0.001, ("a", 9): 0.005, ("a", 10): 0.0012}
    levels = subset_levels("a", 4, at_least, implies)
    assert abs(levels.sum() - 1) < 1e-9
    assert all(levels[s] <= 1e-7 for s in range(16) if s & 4 and not s & 8)
    assert abs(levels[15] - 0.0001) < 1e-12
    assert abs(levels[11] - (0.0003 - 0.0001)) < 1e-12  # zip, house and street name, not the street
    assert abs(levels[8] - (0.06 - 0.05 - 0.005 - 0.0012 + 0.004 + 0.001 + 0.0003 - 0.0001)) < 1e-12


def test_anchors_not_showing_the_street_name_are_spread_over_its_states():
    """m of the address is learned from anchors whether or not a street-name key could show the name: those
    that could not count for each state of it in proportion to those that could."""
    address = features_of(["house_number", "street", "street_name", "zip5"])[-1]
    shown = np.array([15, 15, 15, 7, 7])
    levels = np.array([15, 8, 0, 0, 7])
    weight = np.array([60.0, 10.0, 30.0, 40.0, 20.0])
    counts = filled_counts(levels, shown, weight, address)
    assert abs(counts.sum() - 160) < 1e-6
    assert abs(counts[15] - 80) < 1e-6  # the street agreeing implies its name
    assert abs(counts[8] / counts[0] - 10 / 30) < 1e-6 and abs(counts[8] + counts[0] - 80) < 1e-6


def test_compound_random_agreement_by_inclusion_exclusion():
    """P(exactly subset S agrees) from P(at least S agrees): a shared address is measured, not multiplied."""
    at_least = {("a", 1): 0.1, ("a", 2): 0.03, ("a", 3): 0.002, ("a", 4): 0.05, ("a", 5): 0.01, ("a", 6): 0.001,
                ("a", 7): 0.0001}
    levels = subset_levels("a", 3, at_least)
    assert abs(levels[7] - 0.0001) < 1e-12
    assert abs(levels[3] - (0.002 - 0.0001)) < 1e-12
    assert abs(levels[1] - (0.1 - 0.002 - 0.01 + 0.0001)) < 1e-12
    assert abs(levels.sum() - 1) < 1e-9
    # keys over the compound's subsets: least squares gives back each subset's rate
    fields = ["first_canon", "house_number", "street", "zip5"]
    masks = {"fz": (1 | 8, 0), "fh": (1 | 2, 0), "fs": (1 | 4, 0), "hz": (2 | 8, 0), "sz": (4 | 8, 0),
             "hs": (2 | 4, 0), "hsz": (2 | 4 | 8, 0), "f_only_check": (1 | 2 | 8, 0)}
    n_rows = 10_001
    pairs_total = n_rows * (n_rows - 1) / 2
    u_first = 0.01
    truth = {1: 0.1, 2: 0.03, 4: 0.05, 3: 0.002, 5: 0.01, 6: 0.001, 7: 0.0001}
    held = {"fz": 1, "fh": 2, "fs": 4, "hz": 3, "sz": 5, "hs": 6, "hsz": 7, "f_only_check": 3}
    first = {"fz", "fh", "fs", "f_only_check"}
    shared = {k: round(pairs_total * truth[held[k]] * (u_first if k in first else 1)) for k in masks}
    u, compound = random_agreement(shared, masks, len(fields), n_rows, {"address": (3, 1, 2)})
    assert abs(u[0, 2] - u_first) / u_first < 1e-3
    assert abs(compound["address"][7] - 0.0001) / 0.0001 < 1e-3


def test_compound_weights_sum_over_members_a_pair_cannot_show():
    """With the street unknown for a pair, its address weight is the marginal over the street's states."""
    m = np.array([0.1, 0.05, 0.01, 0.04, 0.001, 0.001, 0.001, 0.797])
    u = np.array([0.7, 0.2, 0.05, 0.003, 0.04, 0.006, 0.001, 0.0001])
    table = compound_ratios(m, u, 3)
    assert table[0] == 0.0  # nothing shown: no evidence
    assert abs(table[7 * 8 + 7] - np.log2(0.797 / 0.0001)) < 1e-12
    # zip and house shown and agreeing, street unknown: states 3 and 7
    assert abs(table[3 * 8 + 3] - np.log2((0.04 + 0.797) / (0.003 + 0.0001))) < 1e-12


def test_threshold_reaches_target_precision():
    posteriors = np.array([0.999] * 90 + [0.9] * 10 + [0.2] * 5)
    t = threshold_for(posteriors, 0.99)
    kept = posteriors[posteriors >= t]
    assert kept.mean() >= 0.99 and t > 0.2


def test_key_sets_expand_with_variants_only_where_they_apply():
    keys = KeySet(name="c3", fields=["first_canon", "last", "dob", "zip5"], choose=3,
                  variants=["swap_names", "dob_dm_swap", "deletions:last"]).expand()
    assert len(keys) == 4
    by_fields = {tuple(k.fields): k.variants for k in keys}
    assert by_fields[("first_canon", "last", "dob")] == ["swap_names", "dob_dm_swap", "deletions:last"]
    assert by_fields[("first_canon", "dob", "zip5")] == ["dob_dm_swap"]  # swapping needs both names
    with pytest.raises(ValueError, match="swap_names exchanges first and last name"):
        MatchKey(name="last_dob", fields=["last", "dob"], variants=["swap_names"])
    assert KeySet(name="x", fields=["dob", "zip5", "last"], choose=2, include=["last"]).expand()[0].fields[-1] == "last"


KEY = new_key()


def _tokens(variants):
    spec = MatchSpec(keys=[{"name": "k", "fields": ["first", "last", "dob"], "variants": variants}])
    frame = pl.DataFrame({"first_name": ["Maria"], "last_name": ["Garcia"], "dob": ["1984-03-07"]})
    tokens, _, _ = hash_frame(frame, KEY, spec)
    return set(tokens["k"].to_list()[0])


def test_variants_switched_off_produce_no_extra_tokens():
    assert len(_tokens([])) == 1
    assert len(_tokens(["dob_dm_swap"])) == 2
    assert len(_tokens(["swap_names"])) == 2
    assert len(_tokens(["dob_partial"])) == 4
    deletions = _tokens(["deletions:last"])
    assert len(deletions) == 1 + len("garcia")
    assert _tokens([]) <= deletions


def _address_tokens(fields: list[str]) -> list[set[bytes]]:
    spec = MatchSpec(keys=[{"name": "k", "fields": fields}])
    frame = pl.DataFrame({"address": ["12 N Main St", "12 Main Avenue", "12 main", "12 Oak St"], "zip": ["27601"] * 4})
    tokens, _, _ = hash_frame(frame, KEY, spec)
    return [set(t) for t in tokens["k"].to_list()]


def test_street_name_family_switched_off_produces_no_tokens():
    """The street without suffix and directionals is a field of its own: keys that leave it out do not even
    derive it, and the street's tokens tell the three spellings apart; a key holding it joins them."""
    plan = HashPlan.build(MatchSpec(keys=[{"name": "k", "fields": ["zip5", "house_number", "street"]}]), KEY,
                          ["address", "zip"])
    assert not any(name.endswith(":street_name") for name in plan.derived)
    off = _address_tokens(["zip5", "house_number", "street"])
    assert all(len(t) == 1 for t in off) and len(set.union(*off)) == 4
    on = _address_tokens(["zip5", "house_number", "street_name"])
    assert all(len(t) == 1 for t in on)  # rows come in handle order: count the rows per token
    assert sorted(sum(t == other for other in on) for t in on) == [1, 3, 3, 3]


def test_variants_meet_the_noisy_copy():
    key = new_key()
    spec = MatchSpec(keys=[{"name": "k", "fields": ["first", "last", "dob"],
                            "variants": ["swap_names", "dob_dm_swap", "deletions:last"]}])
    clean = pl.DataFrame({"first_name": ["Maria"], "last_name": ["Garcia"], "dob": ["1984-03-07"]})
    for noisy in (
        {"first_name": ["Garcia"], "last_name": ["Maria"], "dob": ["1984-03-07"]},  # swapped
        {"first_name": ["Maria"], "last_name": ["Garcia"], "dob": ["1984-07-03"]},  # day/month
        {"first_name": ["Maria"], "last_name": ["Gracia"], "dob": ["1984-03-07"]},  # transposition
        {"first_name": ["Maria"], "last_name": ["Garcai"], "dob": ["1984-03-07"]},
    ):
        a, _, _ = hash_frame(clean, key, spec)
        b, _, _ = hash_frame(pl.DataFrame(noisy), key, spec)
        assert set(a["k"].to_list()[0]) & set(b["k"].to_list()[0])


@given(st.integers(1902, 2010), st.integers(1, 12), st.integers(1, 28), st.tuples(*[st.booleans()] * 3))
@settings(max_examples=40, deadline=None)
def test_partial_dates_meet_when_two_of_their_three_parts_agree(year, month, day, same):
    a = date(year, month, day)
    b = date(year if same[0] else year - 1, month if same[1] else month % 12 + 1, day if same[2] else day % 28 + 1)
    spec = MatchSpec(keys=[{"name": "k", "fields": ["dob"], "variants": ["dob_partial"]}])
    tokens, _, _ = hash_frame(pl.DataFrame({"dob": [a.isoformat(), b.isoformat()]}), KEY, spec)
    first, second = (set(t) for t in tokens["k"].to_list())
    assert len(first & second) == (4 if all(same) else sum(x and y for x, y in itertools.combinations(same, 2)))


def test_email_names_meet_the_names_the_address_spells():
    """A row whose name fields are damaged meets the voter through the names its email spells; other
    address shapes (an initial, no separator) add no token, and a key without the variant ignores the email."""
    spec = MatchSpec(keys=[{"name": "k", "fields": ["first_canon", "last", "zip5"], "variants": ["email_names"]},
                           {"name": "plain", "fields": ["first_canon", "last", "zip5"]}])
    clean = pl.DataFrame({"first_name": ["Maria"], "last_name": ["Garcia"], "zip": ["27601"], "email": [None]},
                         schema_overrides={"email": pl.String})
    noisy = pl.DataFrame({"first_name": ["Mraia", "Mraia", "Mraia"], "last_name": ["Gracia"] * 3,
                          "zip": ["27601"] * 3,
                          "email": ["Maria.Garcia84@example.org", "mgarcia@example.org", "mariagarcia@example.org"]})
    a, _, _ = hash_frame(clean, KEY, spec)
    b, _, _ = hash_frame(noisy, KEY, spec)
    want = set(a["k"].to_list()[0])
    assert [len(set(t)) for t in b["k"].to_list()].count(2) == 1  # only first.last spells names
    assert sum(bool(set(t) & want) for t in b["k"].to_list()) == 1
    assert not any(set(t) & set(a["plain"].to_list()[0]) for t in b["plain"].to_list())


def test_email_names_read_names_run_together_beside_the_rows_own():
    """mariagarcia@ spells Maria Garcia on a row whose last name is Garcia or first name Maria (a nickname
    or a misspelt name on the form); not where neither name is the row's, nor with one letter left over."""
    spec = MatchSpec(keys=[{"name": "k", "fields": ["first_canon", "last", "zip5"], "variants": ["email_names"]}])
    clean = pl.DataFrame({"first_name": ["Maria"], "last_name": ["Garcia"], "zip": ["27601"]})
    noisy = pl.DataFrame({"first_name": ["Mraia", "Maria", "Mraia", "Mraia", "Mraia"],
                          "last_name": ["Garcia", "Gracia", "Gracia", "Garcia", "Garcia"],
                          "zip": ["27601"] * 5,
                          "email": ["mariagarcia85@example.org", "MariaGarcia@example.org", "mariagarcia@example.org",
                                    "mgarcia@example.org", "maria.g.arcia@example.org"]})
    want = set(hash_frame(clean, KEY, spec)[0]["k"].to_list()[0])
    met = [bool(set(hash_frame(noisy[i], KEY, spec)[0]["k"].to_list()[0]) & want) for i in range(noisy.height)]
    assert met == [True, True, False, False, False]


def test_a_changed_variant_enters_the_digest_of_specs_using_it_only(monkeypatch):
    """Bundles hashed before and after a variant's readings changed do not join silently."""
    import cleanroom.spec as spec_module

    with_it = MatchSpec(keys=[{"name": "k", "fields": ["first", "last"], "variants": ["email_names"]}])
    without = MatchSpec(keys=[{"name": "k", "fields": ["first", "last"], "variants": ["swap_names"]}])
    before = with_it.digest(), without.digest()
    monkeypatch.setitem(spec_module.VARIANT_VERSIONS, "email_names", "99")
    assert with_it.digest() != before[0] and without.digest() == before[1]
    first = MatchSpec(keys=[{"name": "k", "fields": ["first_canon", "last"], "variants": ["deletions:first_canon"]}])
    last = MatchSpec(keys=[{"name": "k", "fields": ["first_canon", "last"], "variants": ["deletions:last"]}])
    before = first.digest(), last.digest()
    monkeypatch.setitem(spec_module.VARIANT_VERSIONS, "deletions:first_canon", "99")
    assert first.digest() != before[0] and last.digest() == before[1]  # one field's deletions changed


def test_birth_date_variants_hash_these_values():
    """Golden: the values behind the birth-date variant tokens, which partners hashing with different
    versions must agree on."""
    spec = MatchSpec(keys=[{"name": "p", "fields": ["dob"], "variants": ["dob_partial"]},
                           {"name": "s", "fields": ["dob"], "variants": ["dob_dm_swap"]}])
    tokens, _, _ = hash_frame(pl.DataFrame({"dob": ["07/09/1984"]}), KEY, spec)
    for name, values in {"p": ["1984-07-09", "1984-07-00", "1984-00-09", "0000-07-09"],
                         "s": ["1984-07-09", "1984-09-07"]}.items():
        subkey = KEY.subkey(name, FORMAT_VERSION)
        assert set(tokens[name].to_list()[0]) == {token([v], subkey) for v in values}


def test_email_names_hash_these_values():
    """Golden: the names behind the email_names tokens (version 2), dotted and run together, which partners
    hashing with different versions must agree on."""
    spec = MatchSpec(keys=[{"name": "n", "fields": ["first", "last"], "variants": ["email_names"]}])
    frame = pl.DataFrame({"first_name": ["Mraia", "Bo", "Ann"], "last_name": ["Garcia", "Gracia", "Lee"],
                          "email": ["MariaGarcia85@x.org", "bo.garcia@x.org", "ann_lee@x.org"]})
    subkey = KEY.subkey("n", FORMAT_VERSION)
    for i, names in enumerate([["mraia", "garcia", "maria", "garcia"], ["bo", "gracia", "bo", "garcia"],
                               ["ann", "lee", "ann", "lee"]]):
        tokens, _, _ = hash_frame(frame[i], KEY, spec)
        assert set(tokens["n"].to_list()[0]) == {token(names[:2], subkey), token(names[2:], subkey)}


def test_a_partial_birth_date_is_its_own_field_nested_under_the_date():
    """A key with dob_partial shows the field dob_partial, not dob: the date's partial level, which exact
    agreement implies; it never makes rows of a list one person; it does not share a key with dob_dm_swap."""
    key = MatchKey(name="k", fields=["first_canon", "dob"], variants=["dob_partial"])
    assert shown_fields(key) == ["first_canon", "dob_partial"]
    fields = ["birth_year", "dob", "dob_partial", "first_canon"]  # bits 1, 2, 4, 8
    features = {f.name: f for f in features_of(fields)}
    assert list(features) == ["birth_year", "dob", "first_canon"] and features["dob"].partial == 2
    pairs = pl.DataFrame({"exact": [2 | 8, 4 | 8], "fuzzy": [0, 0], "observed": [15, 15]},
                         schema={"exact": pl.UInt32, "fuzzy": pl.UInt32, "observed": pl.UInt32})
    got = implied_agreement(pairs, fields)
    assert got["exact"].to_list() == [15, 4 | 8]  # the date implies its partial level and the year
    assert got["observed"].to_list() == [15, 2 | 4 | 8]  # a partial date holds the year: unknown
    levels, _ = feature_levels(got["exact"].to_numpy(), got["fuzzy"].to_numpy(), got["observed"].to_numpy(),
                               list(features.values()))
    assert levels[:, 1].tolist() == [3, 1]
    assert key_masks([KeyInfo(name="k", fields=["first_canon", "dob"], variants=["dob_partial"], non_null=1)],
                     fields) == {"k": (4 | 8, 0)}
    assert not same_person_keys([KeyInfo(name="k", fields=["first_canon", "dob"], variants=["dob_partial"],
                                         non_null=1)])
    with pytest.raises(ValueError, match="separate keys"):
        MatchKey(name="k", fields=["dob"], variants=["dob_partial", "dob_dm_swap"])


def test_default_spec_uses_precise_variants_only():
    """The default keeps precision: swapped names, names from the email, day/month; deletion
    neighbourhoods only on keys kept to rare names; partial dates only beside both names; no nicknames."""
    keys = load_spec().all_keys
    assert {v for k in keys for v in k.variants if not v.startswith("deletions:")} == {
        "swap_names", "email_names", "dob_dm_swap", "dob_partial"}
    assert all({"first_canon", "last"} <= set(k.fields) for k in keys if "dob_partial" in k.variants)
    with_deletions = [k for k in keys if any(v.startswith("deletions:") for v in k.variants)]
    assert with_deletions and all(k.max_expected_holders is not None and k.max_expected_holders <= 0.01
                                  for k in with_deletions)


@pytest.fixture(scope="module")
def scored_bundles(tmp_path_factory, identity):
    """A voter file and two hard-profile partner lists hashed with the scored spec."""
    root = tmp_path_factory.mktemp("scored")
    voters = generate_voters(1_500, seed=4)
    lists, _ = generate_partners(voters, 2, sizes=300, seed=4, profile="hard")
    key, spec = new_key(), load_spec(SCORED_SPEC)
    sources = {"voters": voters, **lists}
    for name, frame in sources.items():
        write_frame(frame, root / f"{name}.parquet")
        hash_file(root / f"{name}.parquet", root / "b" / name, root / "v" / name, key=key, spec=spec,
                  identity=identity, reference=name == "voters")
    bundles = {name: LoadedBundle(name, verify_bundle(root / "b" / name), root / "b" / name) for name in sources}
    return bundles["voters"], [bundles[name] for name in lists]


def _plain_candidates(partner, reference, masks, rare):
    """The candidate pairs by a plain join per key: the definition candidate_pairs must meet."""
    hits, seen = [], {}
    for key, (exact, fuzzy) in masks.items():
        ref = reference.token_pairs(key, "ref_idx").unique().collect()
        ref = ref.with_columns(pl.len().over("token").alias("holders")).filter(pl.col("holders") <= MAX_HOLDERS)
        hits.append(partner.token_pairs(key, "p_idx").collect().join(ref, on="token")
                    .with_columns(e=pl.lit(exact), f=pl.lit(fuzzy), r=pl.lit(rare.get(key, 0))))
        for name, bundle, index in (("p", partner, "p_idx"), ("r", reference, "ref_idx")):
            present = bundle.scan().with_row_index(index).filter(pl.col(key).is_not_null()).select(index).collect()
            seen[name, key] = present.with_columns(pl.lit(exact | fuzzy).alias("bits"))
    observed = {
        name: pl.concat(frame for (n, _), frame in seen.items() if n == name)
        .group_by(index).agg(pl.col("bits").bitwise_or().alias(f"{name}_seen"))
        for name, index in (("p", "p_idx"), ("r", "ref_idx"))
    }
    return (
        pl.concat(hits)
        .group_by("p_idx", "ref_idx")
        .agg(pl.col("e").bitwise_or().alias("exact"), pl.col("f").bitwise_or().alias("fuzzy"),
             pl.col("r").bitwise_or().alias("rare"), pl.col("holders").min())
        .join(observed["p"], on="p_idx").join(observed["r"], on="ref_idx")
        .select("p_idx", "ref_idx", "holders", "exact", (pl.col("fuzzy") & ~pl.col("exact")).alias("fuzzy"), "rare",
                (pl.col("p_seen") & pl.col("r_seen")).alias("observed"))
        .sort("p_idx", "ref_idx")
    )


def test_candidate_pairs_equal_a_plain_join_per_key(scored_bundles):
    reference, partners = scored_bundles
    keys = reference.manifest.keys
    masks = key_masks(keys, scored_fields(keys))
    rare = {key.name: 1 << i for i, key in enumerate(rarity_keys(keys))}
    assert len(rare) == 11  # the scored spec's rarity keys
    found = candidate_pairs(partners, reference, masks, rare)
    for partner in partners:
        expected = _plain_candidates(partner, reference, masks, rare)
        assert (expected["rare"] != 0).any()
        got = found.pairs[partner.name].cast(expected.schema)
        assert got.height > partner.manifest.row_count // 2
        assert got.equals(expected)
    assert found.ambiguous == reference_index(reference)[1]
    for key in masks:
        holders = reference.token_pairs(key, "ref_idx").unique().group_by("token").len().collect()["len"]
        assert found.shared[key] == sum(h * (h - 1) // 2 for h in holders if h <= MAX_HOLDERS)


def test_a_row_listing_a_token_twice_holds_it_once(scored_bundles, tmp_path):
    """Holders count rows, not list entries: repeating a token inside a row changes nothing."""
    reference, partners = scored_bundles
    keys = reference.manifest.keys
    masks = key_masks(keys, scored_fields(keys))
    key = "c3_first_canon_last_dob"
    tokens = pl.read_parquet(reference.path / "tokens.parquet")
    doubled = tokens.with_columns(pl.col(key).list.concat(pl.col(key)))
    (tmp_path / "doubled").mkdir()
    doubled.write_parquet(tmp_path / "doubled" / "tokens.parquet")
    twice = LoadedBundle(reference.name, reference.manifest, tmp_path / "doubled")
    before, after = candidate_pairs(partners, reference, masks), candidate_pairs(partners, twice, masks)
    assert after.shared == before.shared and after.ambiguous == before.ambiguous
    for partner in partners:
        assert after.pairs[partner.name].equals(before.pairs[partner.name])


def test_birth_date_agreement_implies_birth_year_agreement():
    """A pair agreeing on the birth date (exactly, or with day and month swapped) agrees on the year even
    when no key with the year matched (its names differ), instead of counting the year as unknown or
    disagreeing."""
    fields = ["birth_year", "dob", "last"]  # bits 1, 2, 4
    pairs = pl.DataFrame(
        {"exact": [2, 4, 0], "fuzzy": [0, 0, 2], "observed": [6, 7, 7]},
        schema={"exact": pl.UInt32, "fuzzy": pl.UInt32, "observed": pl.UInt32},
    )
    got = implied_agreement(pairs, fields)
    assert got["exact"].to_list() == [3, 4, 1]  # dob exact or day/month swapped: year exact too
    assert got["observed"].to_list() == [7, 7, 7]
    assert got["fuzzy"].to_list() == [0, 0, 2]  # the birth date itself stays fuzzy
    assert implied_agreement(pairs, ["dob", "last"]).equals(pairs)  # no birth_year field: nothing to imply


def test_last_name_agreement_implies_its_phonetic_code_and_makes_the_year_showable():
    """The last name's code is derived from it: a household member agreeing on the last name and the
    address agrees on the code, so a key of the code, the year and the zip could have shown the year."""
    fields = ["birth_year", "last", "last_phonetic", "zip5"]  # bits 1, 2, 4, 8
    keys = [KeyInfo(name="p", fields=["last_phonetic", "birth_year", "zip5"], non_null=1),
            KeyInfo(name="l", fields=["last", "zip5"], non_null=1)]
    pairs = pl.DataFrame({"exact": [2 | 8], "fuzzy": [0], "observed": [15]},
                         schema={"exact": pl.UInt32, "fuzzy": pl.UInt32, "observed": pl.UInt32})
    got = shown_agreement(implied_agreement(pairs, fields), key_masks(keys, fields))
    assert got["exact"].to_list() == [2 | 4 | 8]
    assert got["observed"].to_list() == [15]  # the year now counts as disagreeing, not unknown


def test_a_fuzzy_field_whose_exact_agreement_no_key_could_show_scores_as_exact_or_fuzzy():
    """A last name and birth date agreeing through a key with deletions of the one and the day/month swap of
    the other may agree exactly or not: where no key without those variants could have shown them exact
    (the first name disagrees), the pair is scored by (m_exact + m_fuzzy) / (u_exact + u_fuzzy), not by the
    fuzzy level alone."""
    fields = ["dob", "first", "last"]  # bits 1, 2, 4
    keys = [KeyInfo(name="ld", fields=["last", "dob"], variants=["dob_dm_swap", "deletions:last"], non_null=1),
            KeyInfo(name="fld", fields=["first", "last", "dob"], non_null=1),
            KeyInfo(name="fl", fields=["first", "last"], variants=["deletions:last"], non_null=1)]
    masks = key_masks(keys, fields)
    pairs = pl.DataFrame({"exact": [0, 2], "fuzzy": [1 | 4, 4], "observed": [7, 7]},
                         schema={"exact": pl.UInt32, "fuzzy": pl.UInt32, "observed": pl.UInt32})
    got = shown_agreement(pairs, masks)
    # first disagrees: nothing shows last or dob exactly; first agrees: the plain key of the three could have
    # shown the last name exact had the birth date agreed exactly, which it did not show either
    assert got["unsure"].to_list() == [1 | 4, 4]
    agreeing = shown_agreement(pairs.with_columns(pl.lit(2 | 1, pl.UInt32).alias("exact"),
                                                  pl.lit(4, pl.UInt32).alias("fuzzy")), masks)
    assert agreeing["unsure"].to_list() == [0, 0]  # first and dob exact: the plain key would have shown last
    m = np.array([0.1, 0.05, 0.15, 0.7, *[_BOUND_M] * (N_LEVELS - 4)])
    u = np.array([0.95, 0.001, 0.01, 0.02, *[_BOUND_M] * (N_LEVELS - 4)])
    feature = features_of(fields)[2]
    assert feature.name == "last"
    weights = got.select(feature_weight(feature, m, u).alias("w"))["w"].to_list()
    assert weights == [pytest.approx(np.log2(0.85 / 0.03))] * 2


def test_first_name_deletions_read_the_name_as_written_too():
    """A typo keeps a name from its canonical form (no nickname table knows "jhn"), so the first name's
    deletions are also taken of the name as written: Jhn meets John, whose canonical form is longer."""
    def tokens(variant: str, first: str) -> set[bytes]:
        spec = MatchSpec(keys=[{"name": "k", "fields": ["first_canon", "last"], "variants": [variant]}])
        frame = pl.DataFrame({"first_name": [first], "last_name": ["Rivera"]})
        return set(hash_frame(frame, KEY, spec)[0]["k"].to_list()[0])

    john, typo = tokens("deletions:first_canon", "John"), tokens("deletions:first_canon", "Jhn")
    assert john & typo and not tokens("deletions:first_canon", "Kyle") & john
    assert len(john) == 1 + len("johnathan") + 1 + len("john")  # John's canonical form is Johnathan
    assert len(tokens("deletions:first_canon", "Kyle")) == 1 + len("kyle")  # alike: each deletion once
    assert not tokens("deletions:last", "John") & tokens("deletions:last", "Jhn")
    key = KeyInfo(name="k", fields=["first_canon", "last"], variants=["deletions:first_canon"], non_null=1)
    assert most_readings(key) == 2 * most_readings(key.model_copy(update={"variants": ["deletions:last"]}))


def test_scored_links_on_the_birth_date_carry_the_year(scored_bundles):
    """End to end: every link whose birth date agrees exactly shows the birth year agreeing."""
    reference, partners = scored_bundles
    scored = score_partners(partners, reference)
    rules = pl.concat(frame["rule"] for frame in scored.links.values()).str.split("+")
    with_dob = rules.filter(rules.list.contains("dob"))
    assert len(with_dob) > 0
    assert with_dob.list.contains("birth_year").all()


edges_st = st.lists(st.tuples(st.integers(0, 19), st.integers(0, 19)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(edges_st)
def test_list_components_are_the_connected_components(edges):
    """Two rows share a label exactly when a path of edges joins them; the label is the smallest row."""
    a = np.array([e[0] for e in edges], np.int64)
    b = np.array([e[1] for e in edges], np.int64)
    labels = components(20, a, b)
    parent = list(range(20))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in edges:
        parent[max(find(x), find(y))] = min(find(x), find(y))
    assert [int(v) for v in labels] == [min(r for r in range(20) if find(r) == find(i)) for i in range(20)]


def test_same_person_keys_are_the_field_sets_strangers_seldom_share():
    spec = load_spec(SCORED_SPEC)
    chosen = set(same_person_keys(spec.all_keys))
    assert {"last_dob", "c3_first_canon_last_dob", "dl_last_dob_zip5", "p3_first_phonetic_last_phonetic_birth_year",
            "c3_first_canon_last_house_number", "dm_dob_zip5_house_number", "c3_first_canon_house_number_street"} <= chosen
    # a name with only the year and a zip, names and a zip, a household's last name and address: strangers share them
    assert not chosen & {"p3_first_phonetic_birth_year_zip5", "c3_first_canon_last_zip5", "c3_last_zip5_house_number",
                         "c3_last_house_number_street", "c3_zip5_house_number_street", "phone", "email"}


token_rows_st = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)), max_size=120)


@settings(max_examples=200, deadline=None)
@given(token_rows_st, st.integers(2, 25))
def test_shared_pairs_are_every_pair_of_rows_holding_a_token(listed, holders):
    """(row, token) listings, a token possibly listed twice by one row: every pair of distinct rows holding one
    token on at most MAX_SHARING rows, once, the smaller row as `first`."""
    tokens = pl.DataFrame({"p_idx": [r for r, _ in listed], "token": [t * holders for _, t in listed]},
                          schema={"p_idx": pl.UInt32, "token": pl.UInt128})
    got = {tuple(r) for r in shared_pairs(tokens).select("first", "p_idx").iter_rows()}
    rows_of: dict[int, set[int]] = {}
    for row, token in listed:
        rows_of.setdefault(token * holders, set()).add(row)
    want = {(a, b) for rows in rows_of.values() if len(rows) <= MAX_SHARING for a in rows for b in rows if a < b}
    assert got == want
    assert shared_pairs(tokens).height == len(want)


def test_together_keys_of_the_scored_spec():
    spec = load_spec(SCORED_SPEC)
    [(names, phonetic)] = together_keys(spec.all_keys)
    assert {"c3_first_canon_last_zip5", "dl_first_canon_last_zip5", "swf_first_canon_last_zip5"} <= set(names)
    assert phonetic == ["p3_first_phonetic_last_phonetic_zip5"]
    assert together_keys([k for k in spec.all_keys if k.name != "p3_first_phonetic_last_phonetic_zip5"]) == []


def test_rows_sharing_names_and_zip_canonical_and_phonetic_are_one_list_person(scored_bundles):
    """Both names and the zip code make rows one person only with the phonetic codes of the names as
    written too: a pair of rows sharing the canonical names and zip code but not the codes stays apart unless
    another key joins them."""
    _, partners = scored_bundles
    apart = 0
    for partner in partners:
        labels = list_persons(partner)
        groups = together_keys(partner.manifest.keys)
        found = []
        for group in groups[0]:
            found.append(pl.concat([
                shared_pairs(partner.key_tokens(name, "p_idx").collect()
                             .select("p_idx", pl.col("token").cast(pl.UInt128))) for name in group
            ]).unique())
        both = found[0].join(found[1], on=["p_idx", "first"], how="semi")
        assert both.height > 0
        assert (labels.gather(both["p_idx"]) == labels.gather(both["first"])).all()
        only_names = found[0].join(found[1], on=["p_idx", "first"], how="anti")
        apart += int((labels.gather(only_names["p_idx"]) != labels.gather(only_names["first"])).sum())
    assert apart > 0  # namesakes whose written names differ are not merged by these keys


def test_rows_sharing_a_name_and_birth_date_are_one_list_person(scored_bundles):
    _, partners = scored_bundles
    for partner in partners:
        labels = list_persons(partner)
        assert len(labels) == partner.manifest.row_count
        for key in ["email", "c3_first_canon_last_dob"]:
            tokens = partner.key_tokens(key, "p_idx").collect()
            shared = (
                tokens.with_columns(labels.gather(tokens["p_idx"]).alias("person"))
                .group_by("token").agg(pl.col("person").n_unique(), pl.len())
                .filter(pl.col("len") > 1)
            )
            assert (shared["person"] == 1).all()
        assert labels.n_unique() < partner.manifest.row_count  # the hard profile lists people twice


@pytest.fixture(scope="module")
def hard_full_coverage(tmp_path_factory):
    """A voter file and two hard-profile lists in which every row has an address and a birth date, hashed
    with the scored spec and scored, with the generator's truth (the quality benchmark's setting, small)."""
    root = tmp_path_factory.mktemp("quality")
    voters = generate_voters(4_000, seed=11)
    lists, truth = generate_partners(voters, 2, sizes=800, seed=11, profile="hard",
                                     noise={"address_shares": (1.0,), "dob_shares": (1.0,)})
    key, spec = new_key(), load_spec(SCORED_SPEC)
    for name, frame in {"voters": voters, **lists}.items():
        write_frame(frame, root / f"{name}.parquet")
        create_identity(name, root / "id" / name, b"pw")
        hash_file(root / f"{name}.parquet", root / "b" / name, root / "v" / name, key=key, spec=spec,
                  identity=load_identity(root / "id" / name, b"pw"), reference=name == "voters",
                  id_column="voter_id" if name == "voters" else None)
    outcome = run_match(load_inputs([root / "b" / "voters"], [root / "b" / n for n in lists]), mode="score")
    vaults = {n: pl.read_parquet(root / "v" / n / "vault.parquet") for n in lists}
    voters_vault = pl.read_parquet(root / "v" / "voters" / "vault.parquet")
    return outcome, evaluate(outcome.match_table(), truth, vaults, voters_vault)


def test_scored_quality_on_the_hard_profile_with_full_coverage(hard_full_coverage):
    """Fixed seed, small: precision at the issue's bar; recall (0.987 here) just short of its 0.99, see
    docs/matching.md. The key is new on every run, so figures may move by a few links."""
    overall = hard_full_coverage[1].overall
    assert overall.precision >= 0.995
    assert overall.recall >= 0.975


def test_scored_links_state_their_expected_false_links(hard_full_coverage):
    """Scored mode: the job's broker-only counts give per partner and agreement pattern the links, their
    summed 1 - posterior and the estimated precision; over all links near the false links the ground truth
    counts (the posteriors lean low: the model expects more than it makes). The released report does not
    carry them: a model estimate moves with the fit, not by at most one per person."""
    outcome, quality = hard_full_coverage
    patterns = outcome.key_counts()["scored_patterns"]
    assert set(patterns) == set(outcome.partners)
    expected = 0.0
    for partner, by_pattern in patterns.items():
        scored = outcome.rows.filter((pl.col("partner") == partner) & pl.col("posterior").is_not_null())
        assert sum(p["links"] for p in by_pattern.values()) == scored.height
        assert set(by_pattern) == set(scored.get_column("rule"))
        assert all(0.5 <= p["estimated_precision"] <= 1 for p in by_pattern.values())
        expected += sum(p["expected_false_links"] for p in by_pattern.values())
    own = quality.overall.predicted - outcome.rows.filter(pl.col("rule") == SHARED_CONTACT).height
    assert 0 < expected < own * 0.01
    assert quality.overall.false_positives <= expected + 10
    report = build_report(outcome, job_id="j", consortium_id="c", epoch=1, policy=PrivacyPolicy(k=1, dp=False))
    assert "posterior" not in json.dumps(report.model_dump(mode="json"))


def test_persons_of_some_rows_are_parts_of_the_persons_of_all(scored_bundles):
    """With `rows`, only those rows are compared: the others stay alone, and no two rows are one person that
    are not one person among all rows."""
    _, partners = scored_bundles
    for partner in partners:
        everyone = list_persons(partner)
        some = pl.Series(range(0, partner.manifest.row_count, 2), dtype=pl.UInt32)
        part = list_persons(partner, rows=some)
        labelled = pl.DataFrame({"all": everyone, "part": part}).with_row_index("p_idx")
        left_out = labelled.filter(pl.col("p_idx") % 2 == 1)
        assert (left_out["part"] == left_out["p_idx"]).all()
        assert (labelled.group_by("part").agg(pl.col("all").n_unique())["all"] == 1).all()
        assert part.n_unique() < partner.manifest.row_count  # some rows among the even ones are merged


def test_contending_rows_hold_a_likely_candidate_another_row_holds():
    scored = pl.DataFrame({
        "p_idx": [0, 1, 2, 3, 3, 4],
        "ref_idx": [5, 5, 6, 6, 7, 7],
        "posterior": [0.999, 0.998, 0.999, 0.3, 0.9985, 0.9999],
    })
    assert sorted(contending_rows(scored).to_list()) == [0, 1, 3, 4]  # row 2's rival for 6 is unlikely


def test_a_field_no_agreeing_key_could_show_is_unknown_not_disagreeing():
    """A field is testable for a pair only through a key whose other fields the pair agrees on."""
    fields = ["birth_year", "dob", "first", "last", "zip5"]  # bits 1, 2, 4, 8, 16
    keys = [
        KeyInfo(name="a", fields=["first", "last", "birth_year"], non_null=1),
        KeyInfo(name="b", fields=["first", "dob", "zip5"], variants=["dob_dm_swap"], non_null=1),
    ]
    masks = key_masks(keys, fields)
    exact = np.array([4 | 8, 4, 16, 4 | 8 | 1])
    fuzzy = np.array([0, 2, 0, 0])
    shown = could_show(exact, fuzzy, masks)
    assert shown[0] == 4 | 8 | 1  # names agree: the year could have shown; dob and zip not (key b needs the zip)
    assert shown[1] == 4 | 2 | 16  # first name and a swapped birth date agree: the zip could have shown
    assert shown[2] == 16  # only the zip agrees: nothing else could have shown
    assert shown[3] == 4 | 8 | 1
    pairs = pl.DataFrame({"exact": exact, "fuzzy": fuzzy, "observed": [31] * 4},
                         schema={"exact": pl.UInt32, "fuzzy": pl.UInt32, "observed": pl.UInt32})
    assert shown_agreement(pairs, masks)["observed"].to_list() == [int(v) for v in shown]
