"""Suppressed cells cannot be pinned down or shown below k from what is released."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from cleanroom.errors import InputError, SpecError
from cleanroom.privacy import PrivacyPolicy, ProtectedTable, protect_table

TOTAL = object()  # the margin index of a dimension in an entry's key


def feasible_ranges(
    released: ProtectedTable, dims: list[str], count: str = "count"
) -> dict[tuple, tuple[float, float]]:
    """Min and max of every suppressed entry given all released cells and margins (LP relaxation)."""
    values = {d: released.cells.get_column(d).unique(maintain_order=True).to_list() for d in dims}
    known: dict[tuple, int | None] = {}
    for row in released.cells.iter_rows(named=True):
        known[tuple(row[d] for d in dims)] = row[count]
    for row in released.margins.iter_rows(named=True):
        kept = set(row["level"].split(",")) if row["level"] else set()
        known[tuple(row[d] if d in kept else TOTAL for d in dims)] = row[count]
    assert len(known) == math.prod(len(v) + 1 for v in values.values())
    hidden = [key for key, value in known.items() if value is None]
    column = {key: i for i, key in enumerate(hidden)}
    rows, rhs = [], []
    for key in known:  # every margin equals the sum of its line, along every summed dimension
        for axis, d in enumerate(dims):
            if key[axis] is not TOTAL:
                continue
            coefficients, constant = np.zeros(len(hidden)), 0.0
            terms = [(key, -1)] + [(key[:axis] + (v,) + key[axis + 1 :], 1) for v in values[d]]
            for term, sign in terms:
                if known[term] is None:
                    coefficients[column[term]] += sign
                else:
                    constant += sign * known[term]
            if coefficients.any():
                rows.append(coefficients)
                rhs.append(-constant)
            else:
                assert constant == 0, "released numbers are inconsistent"
    ranges = {}
    for key, i in column.items():
        objective = np.zeros(len(hidden))
        objective[i] = 1
        bounds = []
        for sign in (1, -1):
            result = linprog(
                sign * objective, A_eq=np.array(rows), b_eq=np.array(rhs), bounds=(0, None), method="highs"
            )
            assert result.status in (0, 3), result.message
            bounds.append(math.inf if result.status == 3 else sign * result.fun)
        ranges[key] = (bounds[0], bounds[1])
    return ranges


def assert_protected(released: ProtectedTable, dims: list[str], k: int) -> None:
    for key, (low, high) in feasible_ranges(released, dims).items():
        assert high - low > 1e-6, f"suppressed entry {key} is pinned at {low}"
        assert high >= k - 1e-6, f"suppressed entry {key} is shown below k (at most {high})"


@st.composite
def count_tables(draw: st.DrawFn) -> tuple[pl.DataFrame, list[str], int]:
    d = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 5 if d == 1 else 4 if d == 2 else 3)) for _ in range(d)]
    dims = ["district", "band", "partner"][:d]
    combos = list(itertools.product(*[range(n) for n in sizes]))
    small = st.integers(0, 12)
    counts = draw(st.lists(st.one_of(small, small, st.integers(0, 80)), min_size=len(combos), max_size=len(combos)))
    frame = pl.DataFrame([pl.Series(name, [f"{name[0]}{c[i]}" for c in combos]) for i, name in enumerate(dims)])
    k = draw(st.sampled_from([3, 5, 10]))
    return frame.with_columns(pl.Series("count", counts, dtype=pl.Int64)), dims, k


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count_tables())
def test_no_suppressed_entry_recoverable(case: tuple[pl.DataFrame, list[str], int]) -> None:
    table, dims, k = case
    released = protect_table(table, dims, policy=PrivacyPolicy(k=k, dp=False), epsilon=None)
    assert_protected(released, dims, k)
    shown = released.cells.filter(~pl.col("suppressed"))
    assert (shown.get_column("count") >= k).all()
    truth = table.join(shown, on=dims, suffix="_shown")
    assert (truth.get_column("count") == truth.get_column("count_shown")).all()
    assert (released.margins.filter(~pl.col("suppressed")).get_column("count") >= k).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count_tables())
def test_no_suppressed_entry_recoverable_with_noise(case: tuple[pl.DataFrame, list[str], int]) -> None:
    table, dims, k = case
    released = protect_table(table, dims, policy=PrivacyPolicy(k=k), epsilon=0.5, sensitivity=2)
    assert_protected(released, dims, k)
    assert released.protections["dp"] and released.protections["noise_scale"] == 4.0


BRIDGE = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3), (0, 2)]


def bridge_table() -> pl.DataFrame:
    grid = np.full((4, 4), 60)
    for cell in BRIDGE:
        grid[cell] = 3
    return pl.DataFrame(
        {
            "row": [f"r{i}" for i in range(4) for _ in range(4)],
            "col": [f"c{j}" for _ in range(4) for j in range(4)],
            "count": grid.ravel(),
        }
    )


def test_two_suppressions_per_line_can_still_pin_a_cell() -> None:
    """The checker sees what the simple line rule misses: a cell bridging two blocks is pinned."""
    table = bridge_table()
    hidden = pl.Series([(i, j) in BRIDGE for i in range(4) for j in range(4)])
    cells = table.with_columns(
        pl.when(hidden).then(None).otherwise(pl.col("count")).alias("count"), hidden.alias("suppressed")
    )
    full = protect_table(table, ["row", "col"], policy=PrivacyPolicy(k=1, dp=False), epsilon=None)
    naive = ProtectedTable(cells=cells, margins=full.margins, protections={})
    ranges = feasible_ranges(naive, ["row", "col"])
    assert ranges[("r0", "c2")] == pytest.approx((3, 3))
    assert all(high - low > 0 for key, (low, high) in ranges.items() if key != ("r0", "c2"))


def test_bridge_pattern_is_protected() -> None:
    released = protect_table(bridge_table(), ["row", "col"], policy=PrivacyPolicy(k=10, dp=False), epsilon=None)
    assert_protected(released, ["row", "col"], 10)


def test_layout_and_record() -> None:
    table = pl.DataFrame({"county": ["A", "A", "B", "B"], "party": ["D", "R", "D", "R"], "n": [50, 40, 30, 20]})
    released = protect_table(table, ["county", "party"], policy=PrivacyPolicy(dp=False), count="n", epsilon=None)
    assert released.cells.columns == ["county", "party", "n", "suppressed"]
    assert released.margins.columns == ["level", "county", "party", "n", "suppressed"]
    assert released.margins.get_column("level").to_list() == ["county", "county", "party", "party", ""]
    assert released.margins.get_column("n").to_list() == [90, 50, 80, 60, 140]
    assert released.protections["suppressed_cells"] == 0 and released.protections["dp"] is False


def test_null_category_is_a_category() -> None:
    table = pl.DataFrame({"band": ["a", None, "b"], "count": [30, 4, 25]})
    released = protect_table(table, ["band"], policy=PrivacyPolicy(dp=False), epsilon=None)
    assert released.cells.filter(pl.col("band").is_null()).get_column("suppressed").item()
    assert_protected(released, ["band"], 10)


def test_noisy_margins_are_sums_of_noisy_cells() -> None:
    table = pl.DataFrame({"x": list(range(20)), "count": [1000 + i for i in range(20)]})
    released = protect_table(table, ["x"], policy=PrivacyPolicy(), epsilon=0.5)
    total = released.margins.filter(pl.col("level") == "").get_column("count").item()
    assert total == released.cells.get_column("count").sum()


@pytest.mark.parametrize(
    ("table", "error"),
    [
        (pl.DataFrame({"a": ["x", "x"], "count": [20, 30]}), InputError),
        (pl.DataFrame({"a": ["x", "y", "x"], "b": [1, 1, 2], "count": [20, 30, 40]}), InputError),
        (pl.DataFrame({"a": ["x", "y"], "count": [20, -1]}), InputError),
        (pl.DataFrame({"a": ["x", "y"], "count": [20.0, 1.0]}), InputError),
        (pl.DataFrame({"a": [], "count": []}, schema={"a": pl.String, "count": pl.Int64}), InputError),
    ],
)
def test_bad_tables_are_refused(table: pl.DataFrame, error: type[Exception]) -> None:
    with pytest.raises(error):
        protect_table(table, [c for c in table.columns if c != "count"], policy=PrivacyPolicy(dp=False), epsilon=None)


@pytest.mark.parametrize("epsilon", [None, 0.6])
def test_dp_needs_a_share_of_the_report_epsilon(epsilon: float | None) -> None:
    with pytest.raises(SpecError):
        protect_table(pl.DataFrame({"a": ["x"], "count": [20]}), ["a"], policy=PrivacyPolicy(), epsilon=epsilon)


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError):
        PrivacyPolicy(k=0)
    with pytest.raises(ValueError):
        PrivacyPolicy(epsilon_per_report=6, epsilon_budget=5)
    with pytest.raises(ValueError):
        PrivacyPolicy(kk=3)
