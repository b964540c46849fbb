"""Shared building blocks and the generic exact field (trim, casefold, collapse spaces)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import polars as pl

VERSION = "1"

# Letters that NFKD does not decompose into an ASCII base letter plus marks.
_ASCII_EXTRA = {
    "ß": "ss", "ẞ": "ss", "æ": "ae", "Æ": "ae", "ø": "o", "Ø": "o", "œ": "oe", "Œ": "oe",
    "ł": "l", "Ł": "l", "đ": "d", "Đ": "d", "ð": "d", "Ð": "d", "þ": "th", "Þ": "th",
    "ı": "i", "ħ": "h", "Ħ": "h", "ŋ": "n", "Ŋ": "n",
}


def as_text(expr: pl.Expr) -> pl.Expr:
    """Any dtype -> trimmed String; empty or blank -> null."""
    s = expr.cast(pl.String).str.strip_chars()
    return pl.when(s.str.len_bytes() > 0).then(s)


def null_if_empty(expr: pl.Expr) -> pl.Expr:
    """Null where the string is empty."""
    return pl.when(expr.str.len_bytes() > 0).then(expr)


def ascii_fold(expr: pl.Expr) -> pl.Expr:
    """Lowercase and fold to ASCII letters where possible (é -> e, ß -> ss, ø -> o)."""
    s = expr.str.normalize("NFKD").str.replace_all(r"\p{M}", "")
    s = s.str.replace_many(list(_ASCII_EXTRA), list(_ASCII_EXTRA.values()))
    return s.str.to_lowercase()


def collapse_spaces(expr: pl.Expr) -> pl.Expr:
    """Runs of whitespace -> one space, trimmed."""
    return expr.str.replace_all(r"\s+", " ").str.strip_chars(" ")


def nfkc(s: pl.Series) -> pl.Series:
    """NFKC normalization that only spends time on the non-ASCII values."""
    idx = (s.str.len_bytes() != s.str.len_chars()).fill_null(False).arg_true()
    if idx.len() == 0:
        return s
    return s.scatter(idx, s.gather(idx).str.normalize("NFKC"))


def _exact_codes(s: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Distinct values of ``s`` (null included) and each row's index into them, by string equality."""
    values = s.unique(maintain_order=True)
    lookup = pl.DataFrame({"v": values, "i": pl.int_range(values.len(), dtype=pl.UInt32, eager=True)})
    codes = pl.DataFrame({"v": s}).join(lookup, on="v", how="left", nulls_equal=True, maintain_order="left")
    return values, codes["i"]


def _row_hash(s: pl.Series) -> pl.Series:
    return s.hash()


_RECENT: dict[tuple[int, int], tuple[pl.Series, pl.Series, pl.Series]] = {}
_RECENT_MAX = 8
_RECENT_LOCK = threading.Lock()


def distinct_codes(s: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Distinct values of a String series (null included) and each row's index into them.

    Rows are grouped by a 64-bit hash, then every row is checked against its
    group's value, so a hash collision only costs the exact (slower) path and
    never changes a result. The last few encodings are kept: the several fields
    derived from one column (first, first_canon, ...) share one encoding.
    """
    h = _row_hash(s)
    key = (s.len(), h.sum())
    with _RECENT_LOCK:
        hit = _RECENT.get(key)
    if hit is not None and hit[0].equals(s, check_names=False):
        return hit[1], hit[2]
    first = h.arg_unique()
    values = s.gather(first)
    codes = h.replace_strict(h.gather(first), pl.int_range(first.len(), dtype=pl.UInt32, eager=True))
    if not values.gather(codes).eq_missing(s).all():
        values, codes = _exact_codes(s)
    with _RECENT_LOCK:
        while len(_RECENT) >= _RECENT_MAX:
            del _RECENT[next(iter(_RECENT))]
        _RECENT[key] = (s, values, codes)
    return values, codes


_REMEMBER_MAX = 1_000_000


class _Remembered:
    """A normalizer of distinct values that keeps its results across the batches of one run.

    Names, dates and zips repeat from batch to batch, so each distinct value
    is normalized once; past `_REMEMBER_MAX` values it stops adding to what
    it keeps (and still normalizes what it has not seen).
    """

    def __init__(self, fn: Callable[[pl.Series], pl.Series]) -> None:
        self.fn, self.lock = fn, threading.Lock()
        self.known = pl.DataFrame(schema={"v": pl.String, "out": pl.String, "seen": pl.Boolean})

    def __call__(self, values: pl.Series) -> pl.Series:
        with self.lock:
            joined = pl.DataFrame({"v": values}).join(self.known, on="v", how="left", maintain_order="left")
            new = joined["seen"].is_null()
            if not new.any():
                return joined["out"]
            fresh_values = values.filter(new)
            fresh = self.fn(fresh_values)
            if self.known.height + fresh.len() <= _REMEMBER_MAX:
                learned = pl.DataFrame({"v": fresh_values, "out": fresh, "seen": True}).drop_nulls("v")
                self.known = pl.concat([self.known, learned])
            return joined["out"].scatter(new.arg_true(), fresh)


def _via_codes(s: pl.Series, fn: Callable[[pl.Series], pl.Series]) -> pl.Series:
    s = s.cast(pl.String)
    values, codes = distinct_codes(s)
    out = fn(values)
    return out.zip_with(values.is_not_null(), pl.Series([None], dtype=pl.String)).gather(codes).alias(s.name)


def map_distinct(expr: pl.Expr, fn: Callable[[str], str | None]) -> pl.Expr:
    """Apply a per-value Python function once per distinct non-null value of each batch.

    Not declared elementwise: polars would split a column into pieces and
    deduplicate each piece on its own, repeating the work for shared values.
    """

    def mapped(values: pl.Series) -> pl.Series:
        return pl.Series([None if v is None else fn(v) for v in values.to_list()], dtype=pl.String)

    remembered = _Remembered(mapped)
    return expr.map_batches(lambda s: _via_codes(s, remembered), return_dtype=pl.String)


def via_distinct(expr: pl.Expr, normalizer: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """Evaluate a polars normalizer on the distinct values of each batch and map back.

    For repetitive fields (names, dates, zips) this turns a million rows into a
    few thousand before any string work runs. The normalizer must begin by
    casting to String (``as_text``), so that running it on the String form of
    the values gives what it gives on the values themselves, and must map null
    to null. Not declared elementwise, for the reason given in `map_distinct`.
    """

    def run(values: pl.Series) -> pl.Series:
        return pl.DataFrame({"v": values}).select(normalizer(pl.col("v"))).to_series()

    remembered = _Remembered(run)
    return expr.map_batches(lambda s: _via_codes(s, remembered), return_dtype=pl.String)


def _generic(expr: pl.Expr) -> pl.Expr:
    s = as_text(expr).str.normalize("NFKC").str.to_lowercase()
    s = s.str.replace_all("ß", "ss").str.normalize("NFKC")
    return null_if_empty(collapse_spaces(s))


def generic(expr: pl.Expr) -> pl.Expr:
    """Exact field: NFKC, trim, casefold (Unicode lowercase, ß -> ss), collapse whitespace."""
    return via_distinct(expr, _generic)
