"""The report's raw tables against counts made by hand."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.broker.engine import MatchOutcome
from cleanroom.broker.reports import pair_labels, raw_tables

PARTNERS = ["Tenants Union", "Teachers & Staff", "Transit Riders", "Nurses"]

memberships = st.lists(  # per person: (partner index, rows on that list) for a non-empty set of lists
    st.dictionaries(st.integers(0, len(PARTNERS) - 1), st.integers(1, 2), min_size=1), min_size=1, max_size=40
)


def outcome_of(persons: list[dict[int, int]]) -> MatchOutcome:
    rows = pl.DataFrame(
        [{"partner": PARTNERS[p], "handle": f"{i}-{p}-{r}", "has_token": True, "rule": "phone",
          "ref_handle": None, "person": i, "registered": i % 2 == 0}
         for i, lists in enumerate(persons) for p, n in lists.items() for r in range(n)],
        schema_overrides={"ref_handle": pl.String},
    )
    return MatchOutcome(rows=rows, attributes=[], key_stats={}, ambiguous={}, partners=PARTNERS,
                        reprotected={}, key_order=["phone"])


@settings(max_examples=60, deadline=None)
@given(memberships)
def test_overlap_pairs_count_persons_per_unordered_pair(persons):
    table = next(t for t in raw_tables(outcome_of(persons), []) if t.name == "overlap_pairs")
    counts = dict(table.counts.iter_rows())
    labels = pair_labels(PARTNERS)
    assert set(counts) == set(labels.values()) and len(labels) == len(PARTNERS) * (len(PARTNERS) + 1) // 2
    for (a, b), label in labels.items():
        i, j = PARTNERS.index(a), PARTNERS.index(b)
        assert counts[label] == sum(i in lists and j in lists for lists in persons)
    # the sensitivity bounds the cells one person changes: each pair of its lists, each list alone
    changed = max(len(lists) * (len(lists) + 1) // 2 for lists in persons)
    assert changed <= table.sensitivity == len(labels)


def test_pair_labels_follow_partner_order():
    labels = pair_labels(["b", "a", "c"])
    assert list(labels.values()) == ["b", "b & a", "b & c", "a", "a & c", "c"]
