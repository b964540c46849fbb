"""Shared building blocks and the generic exact field (trim, casefold, collapse spaces)."""

from __future__ import annotations

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
    idx = s.str.contains(r"[^\x00-\x7f]").fill_null(False).arg_true()
    if idx.len() == 0:
        return s
    return s.scatter(idx, s.gather(idx).str.normalize("NFKC"))


def _distinct(s: pl.Series, fn: Callable[[pl.Series], pl.Series]) -> pl.Series:
    uniq = s.drop_nulls().unique()
    return s.replace_strict(uniq, fn(uniq), default=None, return_dtype=pl.String)


def map_distinct(expr: pl.Expr, fn: Callable[[str], str | None]) -> pl.Expr:
    """Apply a per-value Python function once per distinct non-null value of each batch."""

    def mapped(uniq: pl.Series) -> pl.Series:
        return pl.Series([fn(v) for v in uniq.to_list()], dtype=pl.String)

    return expr.map_batches(lambda s: _distinct(s, mapped), return_dtype=pl.String, is_elementwise=True)


def via_distinct(expr: pl.Expr, normalizer: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """Evaluate a polars normalizer on the distinct values of each batch and join back.

    For repetitive fields (names, dates, zips) this turns a million rows into a
    few thousand before any string work runs.
    """

    def run(uniq: pl.Series) -> pl.Series:
        return pl.DataFrame({"v": uniq}).select(normalizer(pl.col("v"))).to_series()

    return expr.map_batches(lambda s: _distinct(s, run), return_dtype=pl.String, is_elementwise=True)


def _generic(expr: pl.Expr) -> pl.Expr:
    s = as_text(expr).str.normalize("NFKC").str.to_lowercase()
    s = s.str.replace_all("ß", "ss").str.normalize("NFKC")
    return null_if_empty(collapse_spaces(s))


def generic(expr: pl.Expr) -> pl.Expr:
    """Exact field: NFKC, trim, casefold (Unicode lowercase, ß -> ss), collapse whitespace."""
    return via_distinct(expr, _generic)
