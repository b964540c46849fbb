"""US address parts: house number, standardized street, city, state, zip5.

A street line ("123 1/2 North Main Street Apt 4B") is parsed by regular
expressions in polars: a leading house number (digits, an optional letter, an
optional range "12-14" and an optional fraction "1/2"), then a trailing unit
("apt 4b", "# 12", "suite 100", "unit c") is dropped, then the street becomes
``[pre-directional] name [suffix] [post-directional]`` with directionals and
suffixes abbreviated per USPS Publication 28 (see ``usps``). The suffix is only
abbreviated in last position (after the name), so "Avenue of the Americas"
keeps its first word.
"""

from __future__ import annotations

import re

import polars as pl

from cleanroom.normalize.generic import as_text, ascii_fold, collapse_spaces, null_if_empty
from cleanroom.normalize.usps import DIRECTIONAL, STATES, SUFFIX

VERSION = "1"

_HOUSE = r"\d+[a-z]?(?:-\d+[a-z]?)?(?: \d+/\d+)?"
_UNIT_WORDS = "apt|apartment|unit|ste|suite|rm|room|bldg|building|fl|floor|lot|trlr|spc|space|dept|ph|penthouse|no"
_UNIT = rf"(?: #|(?: (?:{_UNIT_WORDS}))(?: ?#)?) ?(?:[a-z0-9]*\d[a-z0-9-]*|[a-z])(?: .*)?$"
_DIR = "|".join(sorted(DIRECTIONAL, key=len, reverse=True))
_SUF = "|".join(sorted(SUFFIX, key=len, reverse=True))
_STREET = rf"^(?:({_DIR}) )?(.+?)(?: ({_SUF}))?(?: ({_DIR}))?$"


def _text(expr: pl.Expr) -> pl.Expr:
    """ASCII lowercase; fraction slash -> '/', '#' kept, other punctuation -> space."""
    s = ascii_fold(as_text(expr)).str.replace_all("\u2044", "/", literal=True)
    s = s.str.replace_all(r"\s*/\s*", "/").str.replace_all(r"\s*-\s*", "-")
    return collapse_spaces(s.str.replace_all(r"[^a-z0-9/# -]+", " ").str.replace_all("#", " #", literal=True))


def _house(s: pl.Expr) -> pl.Expr:
    """Canonical house number text: space only before a fraction."""
    fraction = s.str.extract(r" (\d+/\d+)$", 1)
    base = s.str.replace(r" \d+/\d+$", "").str.replace_all(r"[ #]", "").str.strip_chars("-/")
    return null_if_empty(pl.concat_str(null_if_empty(base), fraction, separator=" ", ignore_nulls=True))


def _street(s: pl.Expr) -> pl.Expr:
    """Standardize a street (no house number, no unit)."""
    s = collapse_spaces(s.str.replace_all(r"[#/-]", " "))
    parts = s.str.extract_groups(_STREET)
    pre = parts.struct[0].replace_strict(DIRECTIONAL, default=None)
    name = parts.struct[1]
    suf = parts.struct[2].replace_strict(SUFFIX, default=None)
    post = parts.struct[3].replace_strict(DIRECTIONAL, default=None)
    return null_if_empty(pl.concat_str(pre, name, suf, post, separator=" ", ignore_nulls=True))


def house_number(expr: pl.Expr) -> pl.Expr:
    """House number given as its own column."""
    return _house(_text(expr))


def street(expr: pl.Expr) -> pl.Expr:
    """Street given as its own column (a unit, if present, is dropped)."""
    return _street(_text(expr).str.replace(_UNIT, ""))


def split_address(expr: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(house_number, street) from a full street line."""
    s = _text(expr)
    number = s.str.extract(rf"^({_HOUSE})(?: |$)", 1)
    rest = pl.when(number.is_null()).then(s).otherwise(s.str.replace(rf"^{_HOUSE} ?", ""))
    return _house(number), _street(rest.str.replace(_UNIT, ""))


def city(expr: pl.Expr) -> pl.Expr:
    """City: ASCII lowercase words, punctuation removed, single spaces."""
    return null_if_empty(collapse_spaces(ascii_fold(as_text(expr)).str.replace_all(r"[^a-z0-9]+", " ")))


def state(expr: pl.Expr) -> pl.Expr:
    """Two-letter lowercase USPS code from a code or a full name; null when unknown."""
    s = city(as_text(expr).str.replace_all(".", "", literal=True))
    codes = set(STATES.values())
    return pl.when(s.is_in(codes)).then(s).otherwise(s.replace_strict(STATES, default=None))


def zip5(expr: pl.Expr) -> pl.Expr:
    """First five digits of a ZIP or ZIP+4; lost leading zeros restored; null when invalid."""
    s = as_text(expr).str.replace(r"\.0+$", "").str.replace_all(r"\s", "")
    five = (
        pl.when(s.str.contains(r"^\d{3,5}(?:-\d{4})?$")).then(s.str.extract(r"^(\d+)", 1).str.zfill(5))
        .when(s.str.contains(r"^\d{6,9}$")).then(s.str.zfill(9).str.slice(0, 5))
    )
    return pl.when(five != "00000").then(five)


assert re.compile(_STREET)  # the pattern is also valid for Python's engine (used in tests)
