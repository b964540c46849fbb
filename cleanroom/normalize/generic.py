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


def map_distinct(expr: pl.Expr, fn: Callable[[str], str | None]) -> pl.Expr:
    """Apply a per-value Python function once per distinct non-null value of each batch."""

    def batch(s: pl.Series) -> pl.Series:
        uniq = s.drop_nulls().unique()
        mapped = pl.Series([fn(v) for v in uniq.to_list()], dtype=pl.String)
        return s.replace_strict(uniq, mapped, default=None, return_dtype=pl.String)

    return expr.map_batches(batch, return_dtype=pl.String, is_elementwise=True)


def generic(expr: pl.Expr) -> pl.Expr:
    """Exact field: NFKC, trim, casefold (Unicode lowercase, ß -> ss), collapse whitespace."""
    s = as_text(expr).str.normalize("NFKC").str.to_lowercase()
    s = s.str.replace_all("ß", "ss").str.normalize("NFKC")
    return null_if_empty(collapse_spaces(s))
