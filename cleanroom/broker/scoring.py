"""Scored matching: Fellegi-Sunter weights learned from the data, one-to-one links.

Every (partner row, reference row) pair sharing a token of any key is a
candidate. The keys a pair agrees on tell, per field, whether it agrees
exactly (a key without variants containing the field agrees), only fuzzily (a
key whose variant touches the field agrees: deletion neighbourhood, swapped
names, day/month swap) or not at all; a field either row lacks is unknown, and
so is a field no key could have shown for the pair (every key holding it also
holds a field the pair disagrees on). A fuzzy field that no key without a
variant on it could have shown exact (its other fields disagree) may agree
exactly or not: it is weighed at "exact or fuzzy", (m_e + m_f) / (u_e + u_f).
The model compares features, not fields: a name's phonetic code is nested
under the name as a partial level (disagree < phonetic code only < fuzzy <
exact), so a name agreeing exactly counts once, not again through its code;
likewise a birth date agreeing on two of its three parts (keys with the
dob_partial variant show the field `dob_partial`) is the date's partial level;
the address (zip, house number, street) is one feature with a level per subset
of its fields agreeing, as households share and moves change them together;
where keys hold the street name without suffix and directionals, it is a fourth
member, implied by the street, so a street agreeing only on its name is a fuzzy
street (weighed between the street disagreeing and agreeing).

Weights, without labels:
- u (agreement of two random people): from the reference's token frequencies
  alone: per key, P(two random rows share a token) is the product of its
  fields' u, so the u of every field and level follow by least squares (the
  address's subsets are unknowns of their own, not products of its fields);
  gated keys (`max_expected_holders`) are left out, their tokens being rare
  values only, unless no other key shows one of their fields.
- m (agreement of a true match): measured on anchor pairs, which agree exactly
  on every core feature (first name, last name, birth date, street) outside the
  feature's own group, falling back to EM over the agreement patterns where
  anchors are too few.
A pair's score is the sum of log2(m/u) of its features' levels, lowered by log2
of how many reference rows hold its rarest agreeing token (term-frequency
adjustment), and raised where the pair shares a token of a rarity key (a key
gated by `max_expected_holders`: the voter file expects its values, or the
reading its token stands for, at most that many times among its N rows, so a
stranger holds any of a row's k readings with probability at most k bar / N,
less than the fields' average u at the pair's levels may say).
Posteriors are per partner row: the row's match is one of the N reference rows
or none, with the list's share of rows that have a match (EM over rows whose
birth date or address can decide it, `fit_match_share`) as the prior, so each
candidate weighs share / ((1 - share) N) times its likelihood ratio against 1
for "none of the file" and against the row's other candidates (two namesakes
that agree equally split the probability instead of each looking certain): a
state-sized file and a list of mostly unregistered people lower every
posterior, as they should. Pairs are linked one to one (mutual best choices,
round by round) above the posterior threshold whose links reach the target
precision by the model's own estimate, each link also more likely than not
(MIN_POSTERIOR) on its own; a row left out whose most likely voter, at
SECOND_SIGNUP_POSTERIOR, its list links already is linked too (a second
sign-up, `signed_up_again`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import polars as pl

from cleanroom.broker.duplicates import list_persons
from cleanroom.broker.load import LoadedBundle
from cleanroom.bundle import KeyInfo
from cleanroom.errors import SpecError
from cleanroom.spec import NAME_VARIANTS
from cleanroom.variants import AS_WRITTEN, MAX_DELETIONS, shown_fields

MAX_HOLDERS = 20  # tokens held by more reference rows than this make no candidates
EM_ROUNDS = 100
MIN_ANCHOR_PAIRS = 50
MAX_RARITY_KEYS = 64  # bits of the pairs' `rare` column
# the most readings a variant gives a row's values (as given included): docs/matching.md, `cleanroom.variants`
READINGS = {"deletions": 1 + MAX_DELETIONS, "swap_names": 2, "email_names": 3, "dob_dm_swap": 2, "dob_partial": 4,
            "nicknames": 22}
MIN_POSTERIOR = 0.5  # every link must also be the row's more likely reading on its own
# a second row claiming a voter its list links already needs more: at 1M x 1M (80% registered) such claims at
# posterior 0.5 to 0.9 were right for 31%, 0.9 to 0.99 for 80%, above 0.99 for 99.4%
SECOND_SIGNUP_POSTERIOR = 0.99
MATCH_SHARE_BOUNDS = (1e-4, 0.999)  # the share of rows with a match stays inside: odds stay finite
# a row's match can be told from a namesake where it carries a birth date or a full address: the list's share of
# rows with a match is estimated on such rows (fields are missing independently of registration)
DECIDING_FIELDS = (("dob",), ("house_number", "street"))
ANCHORS = {"first": "first_canon", "last": "last", "dob": "dob", "address": "street"}
# exact agreement on a field means exact agreement on these (derived from it). Not the first name: its phonetic
# code is of the name as written, first_canon of its nickname group.
IMPLIED = {"dob": ("birth_year", "dob_partial"), "last": ("last_phonetic",), "street": ("street_name",)}
IMPLIED_BY_FUZZY = {"dob": ("birth_year",)}  # a fuzzy birth date (day and month swapped) keeps the year
# partial level -> (its field, a coarser field the partial level holds): where only the partial level agrees, the
# coarser field is unknown for the pair (a date agreeing on two of its parts is not counted again by its year)
HELD_BY_PARTIAL = {"dob_partial": ("dob", "birth_year")}
LEVELS = ("disagree", "fuzzy", "exact")  # per field, as the keys show it
FEATURE_LEVELS = ("disagree", "partial", "fuzzy", "exact")  # per feature of the model
# coarser field -> its group. The birth year stays a feature of its own: nested under the birth date, recall
# fell (hard profile, full coverage, 0.900 -> 0.883), as its second count makes up for a u of the birth date
# that the least squares over keys put several times too high.
NESTED = {"first_phonetic": "first", "last_phonetic": "last", "dob_partial": "dob"}
OWN_FEATURES = ("birth_year",)  # coarser fields never nested
# fields compared as one feature, a level per subset of them agreeing exactly: a household shares all three, a
# move changes all three, so as independent fields they count a shared address several times and a move
# three times. Formed only where all are present and no variant touches them.
COMPOUNDS = {"address": ("zip5", "house_number", "street")}
# members a compound takes on where the keys hold them: the street without suffix and directionals, so a street
# agreeing only on its name is a level of the address of its own, below the exact street (which implies it)
COMPOUND_EXTRAS = {"address": ("street_name",)}
N_LEVELS = 8  # columns of the m and u arrays at least: FEATURE_LEVELS for a field, 2**k subsets for a compound
_BOUND = 1e-3  # m stays within [0.001, 0.999]: no single field can veto a pair
U_FLOOR = 1e-7  # random agreement can be rare (two people sharing a birth date: ~1 in 20,000)
_EPS = 1e-9


@dataclass
class FieldWeights:
    """m and u of one feature, per level (FEATURE_LEVELS)."""

    m: list[float]
    u: list[float]


@dataclass
class ScoringModel:
    """What was learned, and the posterior threshold chosen for the target precision."""

    weights: dict[str, FieldWeights]
    shares: dict[str, float]  # partner -> estimated share of its rows that have a match in the reference
    threshold: float


@dataclass
class Scored:
    """Links per partner, and what the engine reports besides them."""

    links: dict[str, pl.DataFrame]  # partner -> p_idx, ref_idx, rule, score, posterior
    has_token: dict[str, pl.Series]  # partner -> per row: does it carry any token
    ambiguous: dict[str, int]  # key -> reference token values held by more than one row
    model: ScoringModel


def _group(field: str) -> str:
    if field.startswith(("first", "last")):
        return field.split("_")[0]
    if field in ("dob", "dob_partial", "birth_year"):
        return "dob"
    return "address" if field in ("house_number", "street", "street_name", "zip5") else field


def fuzzy_fields(key: KeyInfo) -> set[str]:
    """The key's fields its variants touch (their agreement may be approximate)."""
    touched: set[str] = set()
    for variant in key.variants:
        kind, _, field = variant.partition(":")
        if kind == "deletions":
            touched.add(field)
        elif kind in NAME_VARIANTS:
            touched |= {f for f in key.fields if f.startswith(("first", "last"))}
        elif kind == "dob_dm_swap":
            touched |= {f for f in key.fields if f == "dob"}
        elif kind == "nicknames":
            touched.add("first_canon")
    return touched


def scored_fields(keys: list[KeyInfo]) -> list[str]:
    """The fields the keys show agreement on (`shown_fields`), sorted: the model's bits."""
    return sorted({f for k in keys for f in shown_fields(k)})


def key_masks(keys: list[KeyInfo], fields: list[str]) -> dict[str, tuple[int, int]]:
    """Per key: (bits of fields it shows exactly, bits of fields it shows fuzzily)."""
    bit = {f: 1 << i for i, f in enumerate(fields)}
    masks = {}
    for key in keys:
        fuzzy = fuzzy_fields(key)
        masks[key.name] = (
            sum(bit[f] for f in shown_fields(key) if f not in fuzzy),
            sum(bit[f] for f in shown_fields(key) if f in fuzzy),
        )
    return masks


@dataclass
class ReferenceKey:
    """One key of the reference: its usable tokens, and counts over all of them."""

    tokens: pl.DataFrame  # token, ref_idx, holders: tokens held by at most MAX_HOLDERS rows
    carries: np.ndarray  # per row: does it carry a token of the key
    ambiguous: int  # token values held by more than one row
    shared: int  # pairs of rows sharing a usable token


def reference_key(reference: LoadedBundle, key: str) -> ReferenceKey:
    """One key's reference tokens; a token's holders are the distinct rows listing it."""
    pairs = reference.key_tokens(key, "ref_idx").with_columns(pl.len().over("token").alias("holders")).collect()
    holders = pl.col("holders")
    repeated = pairs.filter(holders > 1)
    # A token held by h rows is listed h times here: h listings make one token, and their
    # h - 1 other holders each add up to twice the h(h - 1) / 2 pairs of rows sharing it.
    ambiguous = repeated.group_by("holders").len().select((pl.col("len") // holders).sum()).item()
    shared = repeated.filter(holders <= MAX_HOLDERS).select((holders.cast(pl.Int64) - 1).sum()).item() // 2
    return ReferenceKey(
        pairs.filter(holders <= MAX_HOLDERS).with_columns(holders.cast(pl.UInt8)),
        _carries(pairs.get_column("ref_idx"), reference.manifest.row_count), int(ambiguous or 0), int(shared or 0),
    )


def _carries(index: pl.Series, n_rows: int) -> np.ndarray:
    """Per row of a bundle: is it among `index`."""
    carries = np.zeros(n_rows, bool)
    carries[index.to_numpy()] = True
    return carries


@dataclass
class Candidates:
    """Every partner's candidate pairs, and what the weights need to know of the reference."""

    pairs: dict[str, pl.DataFrame]  # partner -> p_idx, ref_idx, holders, exact, fuzzy, rare, observed
    seen: dict[str, np.ndarray]  # partner -> per row, a bit per field it carries
    shared: dict[str, int]  # key -> pairs of reference rows sharing a usable token
    ambiguous: dict[str, int]  # key -> reference token values held by more than one row


_PAIR = pl.col("p_idx").cast(pl.UInt64) * 2**32 + pl.col("ref_idx")  # one integer per (partner row, reference row)
KEY_THREADS = 2  # keys read and joined at once: reading a column is single-threaded, two keep both cores busy


@dataclass
class KeyPass:
    """What one key contributes: the reference's counts; per partner, its rows with a token and the pairs found."""

    ambiguous: int
    shared: int
    ref_carries: np.ndarray
    carries: dict[str, np.ndarray]  # partner -> per row: does it carry a token of the key
    pairs: dict[str, pl.DataFrame]  # partner -> pair, holders: pairs sharing a token, once each


def key_pass(reference: LoadedBundle, partners: list[LoadedBundle], key: str) -> KeyPass:
    """Join every partner's tokens of one key to the reference's usable ones."""
    ref = reference_key(reference, key)
    carries, pairs = {}, {}
    for partner in partners:
        tokens = partner.token_pairs(key, "p_idx").collect()
        carries[partner.name] = _carries(tokens.get_column("p_idx"), partner.manifest.row_count)
        pairs[partner.name] = (  # lazy, so the join never materializes the tokens it matched on
            tokens.lazy().join(ref.tokens.lazy(), on="token")
            .group_by(_PAIR.alias("pair")).agg(pl.col("holders").min())
            .collect()
        )
    return KeyPass(ref.ambiguous, ref.shared, ref.carries, carries, pairs)


def candidate_pairs(
    partners: list[LoadedBundle], reference: LoadedBundle, masks: dict[str, tuple[int, int]],
    rare: dict[str, int] | None = None,
) -> Candidates:
    """(p_idx, ref_idx, holders, exact, fuzzy, rare, observed) for every pair sharing a token, per partner;
    `rare` has the bit (`rare`: key -> bit) of every rarity key whose token the pair shares.

    Key by key (KEY_THREADS at once), so only a few keys' tokens are in memory:
    the reference's usable tokens, each partner's tokens joined to them, and the
    pairs found (once per pair and key, with the smallest holders of their
    shared tokens). Then each pair's field bits are ORed over the keys it agrees
    on, as integers. `observed` has a bit per field both rows carry at all (some
    key containing the field has a token in each). Pairs come sorted by
    (p_idx, ref_idx), so results do not depend on thread timing.
    """
    r_seen = np.zeros(reference.manifest.row_count, np.uint32)
    p_seen = {p.name: np.zeros(p.manifest.row_count, np.uint32) for p in partners}
    hits: dict[str, list[pl.DataFrame]] = {p.name: [] for p in partners}
    shared, ambiguous = {}, {}
    with ThreadPoolExecutor(KEY_THREADS) as pool:
        for key, found in zip(masks, pool.map(partial(key_pass, reference, partners), masks), strict=True):
            exact, fuzzy = masks[key]
            shared[key], ambiguous[key] = found.shared, found.ambiguous
            bits = np.uint32(exact | fuzzy)
            r_seen |= np.where(found.ref_carries, bits, 0)
            for name, carries in found.carries.items():
                p_seen[name] |= np.where(carries, bits, 0)
                hits[name].append(found.pairs[name].with_columns(
                    pl.lit(exact, pl.UInt32).alias("e"), pl.lit(fuzzy, pl.UInt32).alias("f"),
                    pl.lit((rare or {}).get(key, 0), pl.UInt64).alias("r"),
                ))
    pairs = {}
    for partner in partners:
        found = (
            pl.concat(hits.pop(partner.name))
            .group_by("pair")
            .agg(pl.col("e").bitwise_or().alias("exact"), pl.col("f").bitwise_or().alias("fuzzy"),
                 pl.col("r").bitwise_or().alias("rare"), pl.col("holders").min())
            .sort("pair")
            .select((pl.col("pair") // 2**32).cast(pl.UInt32).alias("p_idx"),
                    (pl.col("pair") % 2**32).cast(pl.UInt32).alias("ref_idx"),
                    "holders", "exact", (pl.col("fuzzy") & ~pl.col("exact")).alias("fuzzy"), "rare")
        )
        observed = p_seen[partner.name][found["p_idx"].to_numpy()] & r_seen[found["ref_idx"].to_numpy()]
        pairs[partner.name] = found.with_columns(pl.Series("observed", observed))
    return Candidates(pairs, p_seen, shared, ambiguous)


def implied_agreement(pairs: pl.DataFrame, fields: list[str]) -> pl.DataFrame:
    """Pairs with the agreement their exact fields imply (IMPLIED): a pair agreeing on the
    birth date agrees on the birth year, whether or not a key with the year matched;
    so does a pair whose birth dates agree with day and month swapped (IMPLIED_BY_FUZZY).

    A field only shows agreement through keys that matched, so a pair whose names
    differ (no phonetic-name-and-year key in common) would otherwise count the
    birth year as disagreeing while the birth date agrees.
    """
    index = {f: i for i, f in enumerate(fields)}
    exact, observed = pl.col("exact"), pl.col("observed")
    for column, implied in (("exact", IMPLIED), ("fuzzy", IMPLIED_BY_FUZZY)):
        for field, derived in implied.items():
            bits = sum(1 << index[d] for d in derived if d in index)
            if field not in index or not bits:
                continue
            agrees = (pl.col(column) & (1 << index[field])) != 0
            exact = pl.when(agrees).then(exact | bits).otherwise(exact)
            observed = pl.when(agrees).then(observed | bits).otherwise(observed)
    for partial, (field, held) in HELD_BY_PARTIAL.items():
        if {partial, field, held} <= index.keys():
            partial_only = (pl.col("exact") & (1 << index[partial]) != 0) & (
                (pl.col("exact") | pl.col("fuzzy")) & (1 << index[field]) == 0)
            observed = pl.when(partial_only).then(observed & ~(1 << index[held])).otherwise(observed)
    return pairs.with_columns(exact.alias("exact"), observed.alias("observed")).with_columns(
        (pl.col("fuzzy") & ~pl.col("exact")).alias("fuzzy")
    )


def could_show(exact: np.ndarray, fuzzy: np.ndarray, masks: dict[str, tuple[int, int]], exactly: bool = False
               ) -> np.ndarray:
    """Per pattern, the fields whose agreement some key could have shown: a key containing the field whose
    other fields all agree (exactly where the key shows them exactly). A field outside every such key is
    unknown for the pair, not disagreeing: a moved person with swapped names matches no key holding the
    birth year, whether or not the year agrees. With `exactly`, the fields whose exact agreement a key
    without a variant on them could have shown."""
    shown = np.zeros(len(exact), np.int64)
    agree = exact | fuzzy
    for key_exact, key_fuzzy in masks.values():
        holds = key_exact if exactly else key_exact | key_fuzzy
        for field in range(holds.bit_length()):
            bit = 1 << field
            if not holds & bit:
                continue
            others_exact, others_fuzzy = key_exact & ~bit, key_fuzzy & ~bit
            ok = ((exact & others_exact) == others_exact) & ((agree & others_fuzzy) == others_fuzzy)
            shown |= np.where(ok, bit, 0)
    return shown | (exact if exactly else agree)


def shown_agreement(pairs: pl.DataFrame, masks: dict[str, tuple[int, int]]) -> pl.DataFrame:
    """Pairs with `observed` narrowed to the fields `could_show` finds for their pattern, and `unsure`: the
    fuzzy fields no key could have shown agreeing exactly (a last name and birth date agreeing through a key
    with deletions of the one and the day/month swap of the other, the pair's other fields disagreeing, may
    agree exactly or not). Computed once per pattern."""
    patterns = pairs.select("exact", "fuzzy").unique()
    exact, fuzzy = (patterns[c].to_numpy().astype(np.int64) for c in ("exact", "fuzzy"))
    patterns = patterns.with_columns(
        pl.Series("_shown", could_show(exact, fuzzy, masks)).cast(pairs.schema["observed"]),
        pl.Series("unsure", fuzzy & ~could_show(exact, fuzzy, masks, exactly=True)).cast(pairs.schema["fuzzy"]),
    )
    return pairs.join(patterns, on=["exact", "fuzzy"], how="left", maintain_order="left").with_columns(
        (pl.col("observed") & pl.col("_shown")).alias("observed")
    ).drop("_shown")


@dataclass(frozen=True)
class Feature:
    """One comparison of the model: a field, with the coarser field nested under it (a name's phonetic code)
    as its partial level, so that one fact is counted once: a pair agreeing exactly on the name is at the
    exact level, not exact on the name and, independently, on its code."""

    name: str
    field: int  # index of the field (of a compound: its first member)
    partial: int | None  # index of the nested coarser field
    members: tuple[int, ...] = ()  # a compound's fields: level = sum of 2**k over its members k agreeing exactly
    implies: tuple[tuple[int, int], ...] = ()  # (k, l): member k agreeing implies member l agrees (IMPLIED)
    extras: int = 0  # members (bits k) a pair need not show to be seen: COMPOUND_EXTRAS, shown by few keys

    def possible(self, state: int) -> bool:
        """Can a pair be at this level of the compound (no member agreeing without what it implies)."""
        return all(not state >> k & 1 or state >> l & 1 for k, l in self.implies)

    def bits(self) -> int:
        """The fields the feature compares, as a bitmask."""
        fields = self.members or (self.field, *(() if self.partial is None else (self.partial,)))
        return sum(1 << f for f in fields)

    def core_bits(self) -> int:
        """The fields a pair must show for the feature to be seen (a compound's members but its extras)."""
        return sum(1 << f for k, f in enumerate(self.members) if not self.extras >> k & 1) or self.bits()

    def shown(self, observed: np.ndarray) -> np.ndarray:
        """Per pattern, the subset of a compound's members the pair shows (bit k for member k)."""
        return sum(((observed >> f) & 1) << k for k, f in enumerate(self.members))


def features_of(fields: list[str], fuzzy: int = 0) -> list[Feature]:
    """A feature per field; a coarser field (NESTED) joins the one other field of its group as its partial
    level, or stays a feature of its own when its group has no single such field; the fields of a COMPOUND
    are one feature when all are present and none is in `fuzzy` (a bitmask of fields variants touch)."""
    index = {f: i for i, f in enumerate(fields)}
    mains = {g: [f for f in fields if _group(f) == g and f not in NESTED and f not in OWN_FEATURES]
             for g in set(NESTED.values())}
    nested = {mains[g][0]: c for c, g in NESTED.items() if c in index and len(mains[g]) == 1}
    taken = set(nested.values())
    usable = {f for f in fields if not fuzzy >> index[f] & 1}
    compounds = {
        name: (*members, *(f for f in COMPOUND_EXTRAS.get(name, ()) if f in usable))
        for name, members in COMPOUNDS.items() if set(members) <= usable
    }
    in_compound = {index[f] for members in compounds.values() for f in members}
    plain = [
        Feature(f, index[f], index[nested[f]] if f in nested else None)
        for f in fields if f not in taken and index[f] not in in_compound
    ]
    return plain + [
        Feature(name, index[members[0]], None, tuple(index[f] for f in members), implied_members(members),
                sum(1 << k for k in range(len(COMPOUNDS[name]), len(members))))
        for name, members in compounds.items()
    ]


def implied_members(members: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """(k, l) for members k and l of a compound where agreement on k implies it on l (IMPLIED)."""
    return tuple(
        (k, members.index(d)) for k, f in enumerate(members) for d in IMPLIED.get(f, ()) if d in members
    )


def closure(state: int, implies: tuple[tuple[int, int], ...]) -> int:
    """A subset of a compound's members with every member they imply added."""
    for k, l in implies:
        if state >> k & 1:
            state |= 1 << l
    return state


def levels_width(features: list[Feature]) -> int:
    """Columns of the m and u arrays: N_LEVELS, or more for a compound of more than three members."""
    return max([N_LEVELS, *(2 ** len(f.members) for f in features)])


def feature_levels(exact: np.ndarray, fuzzy: np.ndarray, observed: np.ndarray, features: list[Feature]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Level index (0 disagree, 1 partial, 2 fuzzy, 3 exact; a compound's subset of members agreeing) and seen,
    per pattern and feature."""
    levels = np.zeros((len(exact), len(features)), np.int64)
    seen = np.zeros((len(exact), len(features)), bool)
    for j, feature in enumerate(features):
        seen[:, j] = (observed & feature.bits()) != 0
        if feature.members:  # its m is learned from pairs showing all core members (others are scored by marginals)
            seen[:, j] = (observed & feature.core_bits()) == feature.core_bits()
            levels[:, j] = sum(((exact >> f) & 1) << k for k, f in enumerate(feature.members))
            continue
        bit = 1 << feature.field
        part = 1 << feature.partial if feature.partial is not None else 0
        levels[:, j] = np.where(exact & bit, 3, np.where(fuzzy & bit, 2, np.where((exact | fuzzy) & part, 1, 0)))
    return levels, seen


def feature_agreement(u: np.ndarray, features: list[Feature], compound_u: dict[str, np.ndarray] | None = None
                      ) -> np.ndarray:
    """u per feature and level (N_LEVELS columns) from u per field and LEVELS: a partial level is agreement on
    the coarser field beyond what the exact and fuzzy levels of the field already cover. A compound's levels
    come from `compound_u` (see `random_agreement`). Columns a feature does not use hold _BOUND."""
    out = np.full((len(features), levels_width(features)), _BOUND)
    for j, feature in enumerate(features):
        if feature.members:
            out[j, : 2 ** len(feature.members)] = (compound_u or {})[feature.name]
            continue
        out[j, 3], out[j, 2] = u[feature.field, 2], u[feature.field, 1]
        out[j, 1] = _BOUND
        if feature.partial is not None:  # a coarser code is shared by every exact pair and some fuzzy ones
            out[j, 1] = max(u[feature.partial, 2] - out[j, 3], _BOUND)
        out[j, 0] = max(1 - out[j, 1:4].sum(), _BOUND)
    return out


def compound_ratios(m: np.ndarray, u: np.ndarray, k: int, implies: tuple[tuple[int, int], ...] = ()
                    ) -> dict[int, float]:
    """log2(m / u) of a compound of k members, keyed by observed * 2**k + agreeing (subsets of members): where
    some members are unknown for the pair, m and u are summed over their states (marginals), leaving out
    states no pair can be in (a member agreeing without one it implies)."""
    table = {}
    possible = [closure(s, implies) == s for s in range(2 ** k)]
    for observed in range(2 ** k):
        for agreeing in range(2 ** k):
            if agreeing & ~observed:
                continue
            states = [s for s in range(2 ** k) if s & observed == agreeing and possible[s]]
            if not states:
                table[observed * 2 ** k + agreeing] = 0.0
                continue
            table[observed * 2 ** k + agreeing] = (
                float(np.log2(m[states].sum() / u[states].sum())) if observed else 0.0
            )
    # an implied member agreeing alone (the street name, the street not) is a fuzzy agreement of the implying one:
    # its weight lies between that member disagreeing and agreeing (m and u of these rare levels sit at the
    # bounds, their ratio says nothing)
    for k_, l in implies:
        for entry in list(table):
            observed, agreeing = divmod(entry, 2 ** k)
            if observed >> k_ & 1 and agreeing >> l & 1 and not agreeing >> k_ & 1:
                low = table[observed * 2 ** k + (agreeing & ~(1 << l))]
                high = table[observed * 2 ** k + (agreeing | 1 << k_)]
                table[entry] = float(np.clip(table[entry], min(low, high), max(low, high)))
    return table


def feature_weight(feature: Feature, m: np.ndarray, u: np.ndarray) -> pl.Expr:
    """log2(m / u) of a pair's level of one feature (0 when either row lacks it), from its bitmask columns."""
    if feature.members:
        k = len(feature.members)

        def subset(column: str) -> pl.Expr:
            return pl.sum_horizontal(
                ((pl.col(column) & (1 << f)) != 0).cast(pl.Int64) * (1 << b) for b, f in enumerate(feature.members)
            )
        table = compound_ratios(m[: 2**k], u[: 2**k], k, feature.implies)
        return (subset("observed") * 2**k + subset("exact")).replace_strict(
            list(table), list(table.values()), return_dtype=pl.Float64
        )
    ratio = np.log2(m / u)
    bit = 1 << feature.field
    part = 1 << feature.partial if feature.partial is not None else 0
    return (
        pl.when(pl.col("observed") & (bit | part) == 0).then(0.0)
        .when(pl.col("exact") & bit != 0).then(float(ratio[3]))
        .when(pl.col("unsure") & bit != 0).then(float(np.log2((m[2] + m[3]) / (u[2] + u[3]))))
        .when(pl.col("fuzzy") & bit != 0).then(float(ratio[2]))
        .when((pl.col("exact") | pl.col("fuzzy")) & part != 0).then(float(ratio[1]))
        .otherwise(float(ratio[0]))
    )


def random_agreement(
    shared: dict[str, int], masks: dict[str, tuple[int, int]], n_fields: int, n_rows: int,
    compounds: dict[str, tuple[int, ...]] | None = None,
    implies: dict[str, tuple[tuple[int, int], ...]] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """u per field and level (fields x [disagree, fuzzy only, exact]), and per compound and subset of its
    members agreeing exactly (the others disagreeing), from token frequencies only.

    log P(two random reference rows share a token of a key) = the sum of log u
    of the key's fields at the level the key shows them (exact, or "exact or
    fuzzy" for fields its variants touch); least squares over all keys.
    A compound's members are not taken as independent: a key holding the subset
    S of them contributes log P(all of S agree), one unknown per subset (the key
    of all three address fields measures a shared address directly); the
    levels follow by inclusion-exclusion. A member implied by another (`implies`,
    per compound: the street name by the street) agrees wherever that one does,
    so a key holding the street measures the subset with the street name too.
    `shared` holds, per key, the pairs of reference rows sharing a token.
    """
    compounds, implies = compounds or {}, implies or {}
    fuzzy_fields = [i for i in range(n_fields) if any(f >> i & 1 for _, f in masks.values())]
    subsets = [(name, sub) for name, members in compounds.items() for sub in range(1, 2 ** len(members))]
    member_bits = sum(1 << f for members in compounds.values() for f in members)
    design, target = [], []
    pairs_total = max(n_rows * (n_rows - 1) / 2, 1)
    for key, (exact, fuzzy) in masks.items():
        if not shared.get(key):
            continue
        held = {
            name: closure(sum(1 << k for k, f in enumerate(members) if exact >> f & 1), implies.get(name, ()))
            for name, members in compounds.items()
        }
        plain = exact & ~member_bits
        design.append([plain >> i & 1 for i in range(n_fields)] + [fuzzy >> i & 1 for i in fuzzy_fields]
                      + [int(held[name] == sub) for name, sub in subsets])
        target.append(np.log(shared[key] / pairs_total))
    width = n_fields + len(fuzzy_fields) + len(subsets)
    solution = np.linalg.lstsq(np.array(design, float), np.array(target), rcond=None)[0] if design else np.zeros(width)
    informed = np.array(design, float).sum(axis=0) > 0 if design else np.zeros(width, bool)
    u = np.zeros((n_fields, 3))
    u[:, 2] = np.where(informed[:n_fields], np.exp(solution[:n_fields]), 0.5)
    u[:, 1] = _BOUND
    for j, i in enumerate(fuzzy_fields):
        if informed[n_fields + j]:
            u[i, 1] = max(np.exp(solution[n_fields + j]) - u[i, 2], _BOUND)
    u = np.clip(u, U_FLOOR, 1 - _BOUND)
    u[:, 0] = np.clip(1 - u[:, 1] - u[:, 2], _BOUND, 1)
    found = {s: float(np.exp(solution[n_fields + len(fuzzy_fields) + j]))
             for j, s in enumerate(subsets) if informed[n_fields + len(fuzzy_fields) + j]}
    return u, {
        name: subset_levels(name, len(members), found, implies.get(name, ())) for name, members in compounds.items()
    }


def subset_levels(name: str, k: int, at_least: dict[tuple[str, int], float],
                  implies: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    """P(exactly subset S of a compound's k members agrees), per S, from P(at least S agrees) by
    inclusion-exclusion; a subset no key measured counts as its members agreeing independently (a member
    implied by another of S adds nothing; a subset lacking a member it implies has probability U_FLOOR)."""
    def single(b: int) -> float:
        own = closure(1 << b, implies)
        return at_least.get((name, own), float(np.prod([0.5 for c in range(k) if own >> c & 1])))

    def agree(sub: int) -> float:
        sub = closure(sub, implies)
        if sub == 0:
            return 1.0
        if (name, sub) in at_least:
            return at_least[(name, sub)]
        implied = {l for j, l in implies if sub >> j & 1}
        return float(np.prod([single(b) for b in range(k) if sub >> b & 1 and b not in implied]))
    full = 2 ** k - 1
    levels = np.zeros(2 ** k)
    for sub in range(1, 2 ** k):
        levels[sub] = sum(
            (-1) ** (sup.bit_count() - sub.bit_count()) * agree(sup)
            for sup in range(sub, 2 ** k) if sup & sub == sub and sup & full == sup
        )
    levels = np.clip(levels, U_FLOOR, 1 - _BOUND)
    levels[0] = max(1 - levels[1:].sum(), _BOUND)
    return levels


def _normalized(weights: np.ndarray) -> np.ndarray:
    """Rows of non-negative weights as probabilities, each at least _BOUND."""
    p = weights / np.maximum(weights.sum(axis=1, keepdims=True), _EPS)
    p = np.clip(p, _BOUND, 1)
    return p / p.sum(axis=1, keepdims=True)


def _log_likelihood(levels: np.ndarray, seen: np.ndarray, p: np.ndarray) -> np.ndarray:
    picked = np.log(np.take_along_axis(p[None, :, :], levels[:, :, None], axis=2)[:, :, 0])
    return (picked * seen).sum(axis=1)


def fit_em(levels: np.ndarray, seen: np.ndarray, counts: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, float]:
    """m per field and level, and the match share among candidates, with u fixed."""
    n_fields, n_levels = u.shape
    start = np.full(n_levels, 0.1 / max(n_levels - 2, 1))
    start[0], start[-1] = 0.05, 0.85
    m = _normalized(np.tile(start, (n_fields, 1)))
    prior = 0.5
    onehot = np.eye(n_levels)[levels] * seen[:, :, None]
    for _ in range(EM_ROUNDS):
        log_m, log_u = _log_likelihood(levels, seen, m), _log_likelihood(levels, seen, u)
        w = 1 / (1 + np.exp(np.clip(log_u - log_m, -50, 50)) * (1 - prior) / prior)
        wm = counts * w
        prior = float(np.clip(wm.sum() / counts.sum(), _EPS, 1 - _EPS))
        m = _normalized(np.einsum("p,pfl->fl", wm, onehot) + _EPS)
    return m, prior


def anchored_m(levels: np.ndarray, seen: np.ndarray, counts: np.ndarray, features: list[Feature],
               fields: list[str], fallback: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
    """m per feature and level measured on anchor pairs (see the module docstring). With `observed` (the
    patterns' bits of fields both rows show), anchors not showing a compound's extra members count by
    `filled_counts`."""
    m = fallback.copy()
    agrees = {}  # anchor field -> per pattern: does the pair agree on it exactly
    for j, feature in enumerate(features):
        for k, f in enumerate(feature.members or (feature.field,)):
            top = (levels[:, j] >> k & 1) == 1 if feature.members else levels[:, j] == 3
            agrees[fields[f]] = top & seen[:, j]
    for j, feature in enumerate(features):
        group = _group(fields[feature.field])
        core = [agrees[c] for g, c in ANCHORS.items() if g != group and c in agrees]
        if not core:
            continue
        weight = counts * (np.all(core, axis=0) & seen[:, j])
        if weight.sum() >= MIN_ANCHOR_PAIRS:
            used = 2 ** len(feature.members) if feature.members else len(FEATURE_LEVELS)
            if feature.extras and observed is not None:
                histogram = filled_counts(levels[:, j], feature.shown(observed), weight, feature)
            else:
                histogram = np.bincount(levels[:, j], weights=weight, minlength=used)
            m[j, :used] = _normalized(histogram[None, :used])[0]
            m[j, used:] = _BOUND
    return m


def filled_counts(levels: np.ndarray, shown: np.ndarray, weight: np.ndarray, feature: Feature,
                  rounds: int = EM_ROUNDS) -> np.ndarray:
    """Weight per level of a compound, where some pairs do not show every member (the street name is shown
    by few keys): such a pair is spread over the levels consistent with what it shows, in proportion to the
    current estimate (EM for data missing at random), so that m is not learned from only the pairs whose
    address agreed enough for a street-name key to show the name."""
    n = 2 ** len(feature.members)
    possible = np.array([feature.possible(s) for s in range(n)])
    full = shown == n - 1
    known = np.bincount(levels[full], weights=weight[full], minlength=n)
    partial: dict[tuple[int, int], float] = {}
    for key, w in zip(zip(shown[~full].tolist(), levels[~full].tolist()), weight[~full].tolist()):
        if w > 0:
            partial[key] = partial.get(key, 0.0) + w
    states = {(sh, lv): np.array([s for s in range(n) if s & sh == lv and possible[s]]) for sh, lv in partial}
    estimate = known + possible * _EPS
    for _ in range(rounds if partial else 0):
        spread = known.copy()
        for key, w in partial.items():
            share = estimate[states[key]]
            spread[states[key]] += w * share / share.sum()
        estimate = spread + possible * _EPS
    return estimate


def fit_match_share(likelihoods: np.ndarray, n_rows: int) -> float:
    """EM for the share of rows that have a match in the reference, from each row's likelihood ratio of "my
    match is one of the reference's N rows" against "none is" (the sum of its candidates' ratios over N);
    `likelihoods` holds those of the rows with candidates, the other `n_rows - len(likelihoods)` count as 0."""
    low, high = MATCH_SHARE_BOUNDS
    share = 0.5
    for _ in range(EM_ROUNDS):
        share = float(np.clip((share * likelihoods / (share * likelihoods + 1 - share)).sum() / max(n_rows, 1),
                              low, high))
    return share


def deciding_rows(seen: np.ndarray, fields: list[str]) -> np.ndarray:
    """Per partner row: does it carry all the fields of some DECIDING_FIELDS set (`seen`: a bit per field)."""
    index = {f: i for i, f in enumerate(fields)}
    deciding = np.zeros(len(seen), bool)
    for group in DECIDING_FIELDS:
        if set(group) <= index.keys():
            bits = sum(1 << index[f] for f in group)
            deciding |= (seen & bits) == bits
    return deciding


def list_odds(scored: pl.DataFrame, seen: np.ndarray, fields: list[str], n_reference: int) -> tuple[float, float]:
    """The list's share of rows with a match (`fit_match_share` over its deciding rows, or all its rows where
    fewer than MIN_ANCHOR_PAIRS decide) and log2 of the prior odds of one candidate pair it gives."""
    deciding = deciding_rows(seen, fields)
    if deciding.sum() < MIN_ANCHOR_PAIRS:
        deciding[:] = True
    ratios = (
        scored.filter(pl.Series(deciding).gather(scored.get_column("p_idx")))
        .group_by("p_idx").agg((2.0 ** pl.col("score").clip(-1000, 1000)).sum().alias("ratio"))
    )
    share = fit_match_share(ratios.get_column("ratio").to_numpy() / n_reference, int(deciding.sum()))
    return share, float(np.log2(share / ((1 - share) * n_reference)))


def rarity_bonus(keys: list[KeyInfo], masks: dict[str, tuple[int, int]], features: list[Feature], u: np.ndarray,
                 n_reference: int) -> pl.Expr:
    """The bits a pair gains from the rarity keys whose token it shares (column `rare`: bit i for the i-th of
    `rarity_keys`), the most of any. The voter file holds the key's values (or the reading of them its token
    stands for: swapped, a deletion) at most `max_expected_holders` times by its estimate, so a stranger
    holds one token with probability at most bar / N, and any of a row's k readings (`most_readings`) at
    most k bar / N; where the u of the key's fields at the pair's levels (exact, or fuzzy where a variant
    touches the field and the pair does not agree exactly) multiply to more, the pair gains the difference:
    log2(N / (k bar)) - the sum of their log2(1 / u). A compound's member counts its marginal u of agreeing.
    A key with a field no feature compares on its own (a phonetic code nested under its name) gives nothing:
    the score holds that agreement in another field's level. An exact-or-fuzzy field (`unsure`) is priced at
    its fuzzy u here, more than the score took for it: the bonus errs low."""
    def surprise(field: int) -> tuple[float, float] | None:
        """-log2 u of the field agreeing exactly, and only fuzzily."""
        for j, feature in enumerate(features):
            if field in feature.members:
                k = feature.members.index(field)
                agree = -float(np.log2(sum(u[j, s] for s in range(2 ** len(feature.members)) if s >> k & 1)))
                return agree, agree
            if not feature.members and feature.field == field:
                return -float(np.log2(u[j, 3])), -float(np.log2(u[j, 2]))
        return None

    gains = []
    for i, key in enumerate(rarity_keys(keys)):
        exact, fuzzy = masks[key.name]
        fields = [f for f in range((exact | fuzzy).bit_length()) if (exact | fuzzy) >> f & 1]
        levels = [surprise(f) for f in fields]
        if None in levels:
            continue
        spent = pl.sum_horizontal(
            pl.lit(on_exact) if exact >> f & 1 else
            pl.when(pl.col("exact") & (1 << f) != 0).then(on_exact).otherwise(on_fuzzy)
            for f, (on_exact, on_fuzzy) in zip(fields, levels, strict=True)
        )
        bound = key.max_expected_holders * most_readings(key)
        gain = (float(np.log2(n_reference / bound)) - spent).clip(lower_bound=0.0)
        gains.append(pl.when(pl.col("rare") & (1 << i) != 0).then(gain).otherwise(0.0))
    return pl.max_horizontal(pl.lit(0.0), *gains)


def most_readings(key: KeyInfo) -> int:
    """The most tokens a row holds for a key: one per reading of its values, its variants' counts multiplied."""
    def readings(variant: str) -> int:
        kind, _, field = variant.partition(":")
        return READINGS[kind] * (2 if field in AS_WRITTEN else 1)  # deletions of the value as written too
    return int(np.prod([readings(variant) for variant in key.variants]))


def rarity_keys(keys: list[KeyInfo]) -> list[KeyInfo]:
    """Keys gated by `max_expected_holders`: sharing a token tells how rare the values (or reading) are."""
    return [k for k in keys if k.max_expected_holders is not None]


def row_posteriors(odds: float) -> pl.Expr:
    """P(this candidate is the row's match), the row's candidates competing.

    A partner row has at most one match. With w = 2**(score + odds) per
    candidate (its prior odds times its likelihood ratio) and 1 for "none of
    them", each candidate's posterior is w over the row's total; a lone
    candidate gets the usual w / (1 + w). Needs columns `p_idx` and `score`.
    """
    weight = 2.0 ** (pl.col("score") + odds).clip(-1000, 1000)
    return weight / (weight.sum().over("p_idx") + 1.0)


def contending_rows(scored: pl.DataFrame) -> pl.Series:
    """Partner rows of one list that hold a candidate at posterior >= MIN_POSTERIOR whose reference row
    another such row holds too: the only rows whose persons can change a link (no pair below the floor is
    ever linked)."""
    likely = scored.filter(pl.col("posterior") >= MIN_POSTERIOR).select("p_idx", "ref_idx")
    return likely.filter(pl.col("ref_idx").is_duplicated()).get_column("p_idx").unique()


def link_one_to_one(pairs: pl.DataFrame, score: str = "score", persons: pl.Series | None = None) -> pl.DataFrame:
    """Mutually best pairs, round by round: no partner row and no reference row twice.

    With `persons` (a label per partner row: rows of one list that share an
    email, phone or SAME_PERSON token, see `duplicates.list_persons`) it is one-to-one
    between persons and reference rows instead: persons are linked by their
    best pair, then every row of a linked person whose candidates hold its
    reference row takes the link, so a person listed twice is linked twice.
    Ties go to the pair that comes first in `pairs`, so the same input always
    gives the same links.
    """
    if persons is not None:
        labelled = pairs.with_columns(persons.gather(pairs.get_column("p_idx")).alias("_person"))
        best = labelled.group_by("_person", "ref_idx", maintain_order=True).agg(pl.col(score).max())
        linked = link_one_to_one(best.rename({"_person": "p_idx"}), score).rename({"p_idx": "_person"})
        return labelled.join(
            linked.select("_person", "ref_idx"), on=["_person", "ref_idx"], how="semi", maintain_order="left"
        ).drop("_person")
    linked = []
    remaining = pairs
    while not remaining.is_empty():
        best = remaining.filter(
            (pl.col(score) == pl.col(score).max().over("p_idx"))
            & (pl.col(score) == pl.col(score).max().over("ref_idx"))
        ).unique("p_idx", keep="first", maintain_order=True).unique("ref_idx", keep="first", maintain_order=True)
        if best.is_empty():
            break
        linked.append(best)
        remaining = remaining.join(best.select("p_idx"), on="p_idx", how="anti", maintain_order="left").join(
            best.select("ref_idx"), on="ref_idx", how="anti", maintain_order="left"
        )
    return pl.concat(linked) if linked else pairs.clear()


def signed_up_again(scored: pl.DataFrame, linked: pl.DataFrame) -> pl.DataFrame:
    """Pairs of the rows `linked` (links at posterior >= MIN_POSTERIOR) left out whose most likely candidate,
    at posterior >= SECOND_SIGNUP_POSTERIOR, is a reference row the list links already: a second sign-up of
    that voter whose details differ too much from the first one's for `list_persons` to join them. A row's
    posterior weighs its candidates and "none", not the other row's claim, hence the higher bar."""
    best = scored.filter(pl.col("posterior") == pl.col("posterior").max().over("p_idx")).unique(
        "p_idx", keep="first", maintain_order=True)
    return (
        best.filter(pl.col("posterior") >= SECOND_SIGNUP_POSTERIOR)
        .join(linked.select("p_idx"), on="p_idx", how="anti", maintain_order="left")
        .join(linked.select("ref_idx").unique(), on="ref_idx", how="semi", maintain_order="left")
    )


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
    *,
    target_precision: float = 0.995,
) -> Scored:
    """Weights learned once over every partner's candidates; links (p_idx, ref_idx, rule,
    score, posterior) per partner."""
    keys = reference.manifest.keys
    fields = scored_fields(keys)
    n = len(fields)
    masks = key_masks(keys, fields)
    rare = {key.name: 1 << i for i, key in enumerate(rarity_keys(keys))}
    if len(rare) > MAX_RARITY_KEYS:
        raise SpecError(f"scored matching reads at most {MAX_RARITY_KEYS} keys with max_expected_holders")
    candidates = candidate_pairs(partners, reference, masks, rare)
    # a gated key's tokens exist for rare values only: its sharing says nothing of how often its fields agree,
    # nor does its absence show them disagreeing; the u fit takes one only for a field no other key shows
    ungated = {key.name: masks[key.name] for key in keys if key.max_expected_holders is None}
    covered = int(np.bitwise_or.reduce([e | f for e, f in ungated.values()] or [0]))
    fitted = {name: (e, f) for name, (e, f) in masks.items() if name in ungated or (e | f) & ~covered}
    pairs = {name: shown_agreement(implied_agreement(frame, fields), ungated)
             for name, frame in candidates.pairs.items()}
    counted = pl.concat(pairs.values()).group_by("exact", "fuzzy", "observed").len().sort("exact", "fuzzy", "observed")
    features = features_of(fields, fuzzy=int(np.bitwise_or.reduce([f for _, f in masks.values()] or [0])))
    levels, seen = feature_levels(*(counted[c].to_numpy().astype(np.int64) for c in ("exact", "fuzzy", "observed")),
                                  features)
    counts = counted["len"].to_numpy().astype(float)
    compounds = {f.name: f.members for f in features if f.members}
    u_fields, u_compounds = random_agreement(candidates.shared, fitted, n, reference.manifest.row_count, compounds,
                                             {f.name: f.implies for f in features if f.members})
    u = feature_agreement(u_fields, features, u_compounds)
    m_em, _ = fit_em(levels, seen, counts, u)
    m = anchored_m(levels, seen, counts, features, fields, fallback=m_em,
                   observed=counted["observed"].to_numpy().astype(np.int64))
    n_reference = reference.manifest.row_count
    weight = pl.sum_horizontal(feature_weight(feature, m[j], u[j]) for j, feature in enumerate(features))
    weight = weight + rarity_bonus(keys, masks, features, u, n_reference)
    rule = pl.concat_str(
        [pl.when(pl.col("exact") & (1 << i) != 0).then(pl.lit(f))
         .when(pl.col("fuzzy") & (1 << i) != 0).then(pl.lit(f + "~")) for i, f in enumerate(fields)],
        separator="+", ignore_nulls=True,
    )
    bundles = {bundle.name: bundle for bundle in partners}
    links, shares = {}, {}
    for name, frame in pairs.items():
        scored = frame.with_columns((weight - pl.col("holders").cast(pl.Float64).log(2)).alias("score"))
        shares[name], odds = list_odds(scored, candidates.seen[name], fields, n_reference)
        scored = scored.with_columns(row_posteriors(odds).alias("posterior"))
        persons = list_persons(bundles[name], rows=contending_rows(scored))
        linked = link_one_to_one(scored, persons=persons).filter(pl.col("posterior") >= MIN_POSTERIOR)
        links[name] = pl.concat([linked, signed_up_again(scored, linked)]).with_columns(rule.alias("rule"))
    everything = [f.get_column("posterior") for f in links.values()]
    threshold = threshold_for(pl.concat(everything).to_numpy(), target_precision) if everything else 1.0
    threshold = max(threshold, MIN_POSTERIOR)
    links = {
        name: frame.filter(pl.col("posterior") >= threshold).select("p_idx", "ref_idx", "rule", "score", "posterior")
        for name, frame in links.items()
    }
    model = ScoringModel(
        weights={f.name: FieldWeights(m[j].tolist(), u[j].tolist()) for j, f in enumerate(features)},
        shares=shares, threshold=threshold,
    )
    has_token = {name: pl.Series("has_token", seen != 0) for name, seen in candidates.seen.items()}
    return Scored(links, has_token, candidates.ambiguous, model)
