"""Protect a count table: noise, margins from the noisy cells, primary and complementary suppression.

The table and its margins are held as one "extended" array with one extra
index per dimension, the margin (`T`): `ext[i, T]` is row i's total,
`ext[T, T]` the grand total. Complementary suppression uses hypercubes in that
array: a cube picks, in every dimension, the suppressed entry's own index and
one alternative (possibly `T`); adding +t/-t to its 2^d corners in the
alternating pattern keeps every line sum and every margin consistent, so
nothing released can tell the corners apart from values moved along the cube.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from cleanroom.errors import InputError, SpecError
from cleanroom.privacy.noise import noisy_counts
from cleanroom.privacy.policy import PrivacyPolicy

_MAX_CUBES = 20_000  # candidate hypercubes examined per suppressed entry
_INF = np.iinfo(np.int64).max


@dataclass(frozen=True)
class ProtectedTable:
    """A count table that may be released.

    cells: the input's dims columns, the count column (Int64, null where
        suppressed) and `suppressed`, in the input's row order.
    margins: `level` (the dims the margin keeps, joined by ","; "" is the
        grand total), the dims columns (null for the dims summed over), the
        count column and `suppressed`; the most detailed levels first.
    protections: what was applied, to be printed with the report.
    """

    cells: pl.DataFrame
    margins: pl.DataFrame
    protections: dict[str, Any]


def protect_table(
    table: pl.DataFrame,
    dims: list[str],
    *,
    policy: PrivacyPolicy,
    count: str = "count",
    epsilon: float | None,
    sensitivity: int = 1,
) -> ProtectedTable:
    """Noise (if `policy.dp`), margins, primary and complementary suppression of a count table.

    `table` has one row per combination of the `dims` values (all present,
    zeros included) and an integer `count` column. `epsilon` is this table's
    share of the report's epsilon; `sensitivity` the most cells one person can
    change. Every decision after the noise is made on the noisy values only.
    """
    codes, levels = _encode(table, dims, count)
    values = table.get_column(count).to_numpy().astype(np.int64)
    if policy.dp:
        if epsilon is None or epsilon > policy.epsilon_per_report * (1 + 1e-9):
            raise SpecError("with differential privacy on, a table needs a share of the report's epsilon")
        values = noisy_counts(values, epsilon=epsilon, sensitivity=sensitivity)
    grid = np.zeros(tuple(len(level) for level in levels), dtype=np.int64)
    grid[codes] = values
    ext = _with_margins(grid)
    suppressed = _suppress(ext, policy.k)

    cells = _released(table.select(dims), ext[codes], suppressed[codes], count)
    margins = pl.concat(
        [_margin_level(ext, suppressed, dims, levels, kept, count) for kept in _levels(len(dims))],
        how="vertical",
    )
    protections = {
        "k": policy.k,
        "dp": policy.dp,
        "mechanism": "discrete_laplace" if policy.dp else None,
        "epsilon": epsilon if policy.dp else None,
        "sensitivity": sensitivity if policy.dp else None,
        "noise_scale": sensitivity / epsilon if policy.dp and epsilon else None,
        "negative_noisy_counts": "clipped to 0" if policy.dp else None,
        "margins": "sums of the released cells" + (" (after noise)" if policy.dp else ""),
        "suppression": "below k, then complementary by hypercubes",
        "suppressed_cells": int(cells.get_column("suppressed").sum()),
        "suppressed_margins": int(margins.get_column("suppressed").sum()),
    }
    return ProtectedTable(cells=cells, margins=margins, protections=protections)


def _encode(table: pl.DataFrame, dims: list[str], count: str) -> tuple[tuple[np.ndarray, ...], list[pl.Series]]:
    """Check the table's shape; return each row's index per dim and each dim's values."""
    if not 1 <= len(dims) <= 3 or len(set(dims)) != len(dims):
        raise InputError("a count table needs 1 to 3 distinct dimension columns")
    missing = [c for c in [*dims, count] if c not in table.columns]
    if missing:
        raise InputError(f"count table lacks column(s) {', '.join(missing)}")
    counts = table.get_column(count)
    if not counts.dtype.is_integer() or counts.null_count() or (counts < 0).any():
        raise InputError(f"column {count!r} must hold non-negative integers without nulls")
    levels = [table.get_column(d).unique(maintain_order=True) for d in dims]
    if (
        table.height == 0
        or table.height != int(np.prod([len(level) for level in levels]))
        or table.select(dims).is_duplicated().any()
    ):
        raise InputError("a count table needs exactly one row per combination of its dimensions, and some rows")
    codes = tuple(
        table.select(d)
        .join(level.to_frame().with_row_index("_code"), on=d, how="left", nulls_equal=True, maintain_order="left")
        .get_column("_code")
        .to_numpy()
        .astype(np.intp)
        for d, level in zip(dims, levels, strict=True)
    )
    return codes, levels


def _with_margins(grid: np.ndarray) -> np.ndarray:
    """The extended array: `grid` plus, at the last index of every axis, the sums along it."""
    ext = np.zeros(tuple(n + 1 for n in grid.shape), dtype=np.int64)
    ext[tuple(slice(0, n) for n in grid.shape)] = grid
    for axis, n in enumerate(grid.shape):
        total = [slice(None)] * ext.ndim
        body = [slice(None)] * ext.ndim
        total[axis], body[axis] = n, slice(0, n)
        ext[tuple(total)] = ext[tuple(body)].sum(axis=axis)
    return ext


def _suppress(ext: np.ndarray, k: int) -> np.ndarray:
    """Suppress every entry below k, then protect each of them with a hypercube, smallest first."""
    suppressed = ext < k
    primary = sorted(zip(*np.nonzero(suppressed), strict=True), key=lambda p: (ext[p], p))
    for p in primary:
        _protect(ext, suppressed, tuple(int(i) for i in p), k)
    return suppressed


def _protect(ext: np.ndarray, suppressed: np.ndarray, p: tuple[int, ...], k: int) -> None:
    """Suppress the cheapest hypercube through `p` that lets `p` rise by t > 0 to at least k.

    A cube whose corners are all suppressed costs nothing, so a `p` that is
    already protected adds no suppression. Suppressing more entries only widens
    the feasible values of the others, so earlier protections stay valid.
    """
    d = ext.ndim
    ends = [n - 1 for n in ext.shape]
    cap = max(2, int(_MAX_CUBES ** (1 / d)))
    alternatives = [_alternatives(ext, suppressed, p, axis, cap) for axis in range(d)]
    grids = np.ix_(*alternatives)
    shape = tuple(len(a) for a in alternatives)
    margins_in_p = sum(p[i] == ends[i] for i in range(d))
    headroom = np.full(shape, _INF)  # how far p can rise: the smallest corner that must fall
    cost = np.zeros(shape, dtype=np.int64)
    for corner in itertools.product((0, 1), repeat=d):
        if not any(corner):
            continue
        index = tuple(grids[i] if corner[i] else p[i] for i in range(d))
        value = np.broadcast_to(ext[index], shape)
        margins_in_corner = sum((grids[i] == ends[i]) if corner[i] else int(p[i] == ends[i]) for i in range(d))
        falls = (margins_in_corner + margins_in_p + sum(corner)) % 2 == 1
        headroom = np.where(falls, np.minimum(headroom, value), headroom)
        cost = cost + np.where(np.broadcast_to(suppressed[index], shape), 0, value + 1)
    feasible = (headroom > 0) & (headroom >= k - ext[p])
    if not feasible.any():
        raise RuntimeError("no protecting hypercube found; the all-margins cube should always qualify")
    best = np.unravel_index(int(np.argmin(np.where(feasible, cost, _INF))), shape)
    for corner in itertools.product((0, 1), repeat=d):
        suppressed[tuple(int(alternatives[i][best[i]]) if corner[i] else p[i] for i in range(d))] = True


def _alternatives(ext: np.ndarray, suppressed: np.ndarray, p: tuple[int, ...], axis: int, cap: int) -> np.ndarray:
    """Indices a cube through `p` may use on `axis`: all, or the `cap` cheapest along p's line plus the margin."""
    others = np.array([b for b in range(ext.shape[axis]) if b != p[axis]])
    if len(others) <= cap:
        return others
    line = tuple(slice(None) if i == axis else p[i] for i in range(ext.ndim))
    weight = np.where(suppressed[line], 0, ext[line] + 1)[others]
    keep = others[np.argsort(weight, kind="stable")[:cap]]
    end = ext.shape[axis] - 1
    if end != p[axis] and end not in keep:
        keep[-1] = end
    return np.sort(keep)


def _levels(d: int) -> list[tuple[int, ...]]:
    """Margin levels as the dims they keep, most detailed first, the grand total last."""
    return [kept for r in range(d - 1, -1, -1) for kept in itertools.combinations(range(d), r)]


def _margin_level(
    ext: np.ndarray,
    suppressed: np.ndarray,
    dims: list[str],
    levels: list[pl.Series],
    kept: tuple[int, ...],
    count: str,
) -> pl.DataFrame:
    """One margin level as released rows."""
    sizes = [len(levels[i]) for i in kept]
    rows = int(np.prod(sizes))
    positions = np.indices(sizes).reshape(len(kept), rows)
    index = tuple(
        positions[kept.index(i)] if i in kept else np.full(rows, len(levels[i]), dtype=np.intp)
        for i in range(len(dims))
    )
    keys = pl.DataFrame(
        [
            levels[i].gather(positions[kept.index(i)])
            if i in kept
            else pl.Series(d, [None] * rows, dtype=levels[i].dtype)
            for i, d in enumerate(dims)
        ]
    ).select(pl.lit(",".join(dims[i] for i in kept)).alias("level"), *dims)
    return _released(keys, ext[index], suppressed[index], count)


def _released(keys: pl.DataFrame, values: np.ndarray, hidden: np.ndarray, count: str) -> pl.DataFrame:
    """`keys` with the count (null where hidden) and the `suppressed` flag."""
    return keys.with_columns(
        pl.Series(count, values, dtype=pl.Int64), pl.Series("suppressed", hidden, dtype=pl.Boolean)
    ).with_columns(pl.when(pl.col("suppressed")).then(None).otherwise(pl.col(count)).alias(count))
