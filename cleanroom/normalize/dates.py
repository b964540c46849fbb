"""Dates of birth -> ISO ``YYYY-MM-DD``; birth years -> ``YYYY``.

Accepted shapes (an optional time after an ISO or year-first date is ignored):
``YYYY-MM-DD``, ``YYYY/MM/DD``, ``YYYYMMDD``, ``M/D/YYYY`` and ``M-D-YYYY``
(slashes and dashes after a day-month pair are US month/day order),
``D.M.YYYY`` (dots are day.month, the European convention). Two-digit years are
refused. A date that does not exist (February 30) or whose year is outside
1901-2099 is null: the window is fixed, not relative to today, so output never
depends on the clock, and it rejects the common 1900-01-01 placeholder.
"""

from __future__ import annotations

import polars as pl

from cleanroom.normalize.generic import as_text, via_distinct

VERSION = "1"

_MIN_YEAR, _MAX_YEAR = 1901, 2099
# (regex, replacement giving Y-M-D); shapes are anchored and mutually exclusive.
_SHAPES = (
    (r"^([0-9]{4})[-/]([0-9]{1,2})[-/]([0-9]{1,2})(?:[T ][0-9:.+\-Z ]*)?$", "$1-$2-$3"),
    (r"^([0-9]{4})([0-9]{2})([0-9]{2})(?:\.0+)?$", "$1-$2-$3"),
    (r"^([0-9]{1,2})[/-]([0-9]{1,2})[/-]([0-9]{4})$", "$3-$1-$2"),
    (r"^([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{4})$", "$3-$2-$1"),
)


def _dob(expr: pl.Expr) -> pl.Expr:
    s = as_text(expr)
    for pattern, replacement in _SHAPES:
        s = s.str.replace(pattern, replacement)
    date = s.str.to_date("%Y-%m-%d", strict=False)
    ok = s.str.contains(r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}$") & date.dt.year().is_between(_MIN_YEAR, _MAX_YEAR)
    return pl.when(ok).then(date.dt.to_string("%Y-%m-%d"))


def _birth_year(expr: pl.Expr) -> pl.Expr:
    year = pl.coalesce(as_text(expr).str.extract(r"^([0-9]{4})(?:\.0+)?$", 1), _dob(expr).str.slice(0, 4))
    return pl.when(year.cast(pl.Int32, strict=False).is_between(_MIN_YEAR, _MAX_YEAR)).then(year)


def dob(expr: pl.Expr) -> pl.Expr:
    """ISO date string, null when missing, unparseable or impossible."""
    return via_distinct(expr, _dob)


def dob_year(expr: pl.Expr) -> pl.Expr:
    """``YYYY`` of the date of birth."""
    return via_distinct(expr, lambda e: _dob(e).str.slice(0, 4))


def birth_year(expr: pl.Expr) -> pl.Expr:
    """Four-digit year from a year-only value (``1980``, ``1980.0``) or any accepted date."""
    return via_distinct(expr, _birth_year)
