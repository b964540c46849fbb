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

from cleanroom.normalize.generic import as_text

VERSION = "1"

_MIN_YEAR, _MAX_YEAR = 1901, 2099
# (regex, replacement giving Y-M-D); shapes are anchored and mutually exclusive.
_SHAPES = (
    (r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[T ][0-9:.+\-Z ]*)?$", "$1-$2-$3"),
    (r"^(\d{4})(\d{2})(\d{2})(?:\.0+)?$", "$1-$2-$3"),
    (r"^(\d{1,2})[/-](\d{1,2})[/-](\d{4})$", "$3-$1-$2"),
    (r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$", "$3-$2-$1"),
)


def dob(expr: pl.Expr) -> pl.Expr:
    """ISO date string, null when missing, unparseable or impossible."""
    s = as_text(expr)
    for pattern, replacement in _SHAPES:
        s = s.str.replace(pattern, replacement)
    date = s.str.to_date("%Y-%m-%d", strict=False)
    ok = s.str.contains(r"^\d{4}-\d{1,2}-\d{1,2}$") & date.dt.year().is_between(_MIN_YEAR, _MAX_YEAR)
    return pl.when(ok).then(date.dt.to_string("%Y-%m-%d"))


def year_of(iso_date: pl.Expr) -> pl.Expr:
    """``YYYY`` of an ISO date string."""
    return iso_date.str.slice(0, 4)


def birth_year(expr: pl.Expr) -> pl.Expr:
    """Four-digit year from a year-only value (``1980``, ``1980.0``) or any accepted date."""
    s = as_text(expr)
    y = s.str.extract(r"^(\d{4})(?:\.0+)?$", 1)
    year = pl.coalesce(y, year_of(dob(expr)))
    return pl.when(year.cast(pl.Int32, strict=False).is_between(_MIN_YEAR, _MAX_YEAR)).then(year)
