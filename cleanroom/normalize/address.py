"""US address parts: house number, standardized street, city, state, zip5.

A street line ("123 1/2 North Main Street Apt 4B") is parsed by regular
expressions in polars: a leading house number (digits, an optional letter, an
optional range "12-14" and an optional fraction "1/2"), then a trailing unit
("apt 4b", "# 12", "suite 100", "unit c") is dropped, then the street becomes
``[pre-directional] name [suffix] [post-directional]`` with directionals and
suffixes abbreviated per USPS Publication 28 (see ``usps``). The suffix is only
abbreviated in last position (after the name), so "Avenue of the Americas"
keeps its first word.

``street_name`` is the standardized street without its trailing suffixes and
directionals and without leading directionals ("N Main St", "Main Ave" and
"Main" all give "main"), at least one word always kept ("E St NW" gives "e"):
an error-tolerant variant of the street for match keys, where a list writes a
wrong or no suffix or drops the directional.
"""

from __future__ import annotations

import polars as pl

from cleanroom.normalize.generic import as_text, ascii_fold, collapse_spaces, null_if_empty, via_distinct
from cleanroom.normalize.usps import DIRECTIONAL, STATES, SUFFIX

VERSION = "1"

_HOUSE = r"[0-9]+[a-z]?(?:-[0-9]+[a-z]?)?(?: [0-9]+/[0-9]+)?"
_UNIT_WORDS = "apt|apartment|unit|ste|suite|rm|room|bldg|building|fl|floor|lot|trlr|spc|space|dept|ph|penthouse|no"
_UNIT = rf"(?: #|(?: (?:{_UNIT_WORDS}))(?: ?#)?) ?(?:[a-z0-9]*[0-9][a-z0-9-]*|[a-z])(?: .*)?$"
_DIR = "|".join(sorted(DIRECTIONAL, key=len, reverse=True))
_SUF = "|".join(sorted(SUFFIX, key=len, reverse=True))
_STREET = rf"^(?:({_DIR}) )?(.+?)(?: ({_SUF}))?(?: ({_DIR}))?$"
_TRAILING = rf"^(.+?)(?: (?:{_SUF}|{_DIR}))*$"  # the shortest head (one word at least) before suffixes, directionals
_LEADING = rf"^(?:(?:{_DIR}) )+"  # directionals followed by another word


def _text(expr: pl.Expr) -> pl.Expr:
    """ASCII lowercase; fraction slash -> '/', '#' kept, other punctuation -> space."""
    s = ascii_fold(as_text(expr)).str.replace_all("\u2044", "/", literal=True)
    s = s.str.replace_all(r"\s*/\s*", "/").str.replace_all(r"\s*-\s*", "-")
    return collapse_spaces(s.str.replace_all(r"[^a-z0-9/# -]+", " ").str.replace_all("#", " #", literal=True))


def _house(s: pl.Expr) -> pl.Expr:
    """Canonical house number text: space only before a fraction."""
    fraction = s.str.extract(r" ([0-9]+/[0-9]+)$", 1)
    base = s.str.replace(r" [0-9]+/[0-9]+$", "").str.replace_all(r"[ #]", "").str.strip_chars("-/")
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


def _street_name(street: pl.Expr) -> pl.Expr:
    """A standardized street without trailing suffixes and directionals, then without leading directionals.

    Trailing words go first, so that a street named by a letter keeps it ("e st nw" -> "e"). Every word
    that could go again is gone, so the result maps to itself.
    """
    return street.str.extract(_TRAILING, 1).str.replace(_LEADING, "")


def house_number(expr: pl.Expr) -> pl.Expr:
    """House number given as its own column."""
    return via_distinct(expr, lambda e: _house(_text(e)))


def street(expr: pl.Expr) -> pl.Expr:
    """Street given as its own column (a unit, if present, is dropped)."""
    return via_distinct(expr, lambda e: _street(_text(e).str.replace(_UNIT, "")))


def street_name(expr: pl.Expr) -> pl.Expr:
    """Street name without suffix and directionals, from a street given as its own column."""
    return via_distinct(expr, lambda e: _street_name(_street(_text(e).str.replace(_UNIT, ""))))


def address_house_number(expr: pl.Expr) -> pl.Expr:
    """House number from a full street line."""
    return _house(_text(expr).str.extract(rf"^({_HOUSE})(?: |$)", 1))


def address_street(expr: pl.Expr) -> pl.Expr:
    """Standardized street from a full street line (house number and unit dropped)."""
    rest = _text(expr).str.replace(rf"^{_HOUSE}(?: |$)", "").str.replace(_UNIT, "")
    return via_distinct(rest, _street)


def address_street_name(expr: pl.Expr) -> pl.Expr:
    """Street name without suffix and directionals, from a full street line."""
    rest = _text(expr).str.replace(rf"^{_HOUSE}(?: |$)", "").str.replace(_UNIT, "")
    return via_distinct(rest, lambda e: _street_name(_street(e)))


def _city(expr: pl.Expr) -> pl.Expr:
    return null_if_empty(collapse_spaces(ascii_fold(as_text(expr)).str.replace_all(r"[^a-z0-9]+", " ")))


def city(expr: pl.Expr) -> pl.Expr:
    """City: ASCII lowercase words, punctuation removed, single spaces."""
    return via_distinct(expr, _city)


def _state(expr: pl.Expr) -> pl.Expr:
    s = _city(as_text(expr).str.replace_all(".", "", literal=True))
    return pl.when(s.is_in(set(STATES.values()))).then(s).otherwise(s.replace_strict(STATES, default=None))


def state(expr: pl.Expr) -> pl.Expr:
    """Two-letter lowercase USPS code from a code or a full name; null when unknown."""
    return via_distinct(expr, _state)


def zip5(expr: pl.Expr) -> pl.Expr:
    """First five digits of a ZIP or ZIP+4; lost leading zeros restored; null when invalid."""
    return via_distinct(expr, _zip5)


def _zip5(expr: pl.Expr) -> pl.Expr:
    s = as_text(expr).str.replace(r"\.0+$", "").str.replace_all(r"\s", "")
    five = (
        pl.when(s.str.contains(r"^[0-9]{3,5}(?:-[0-9]{4})?$")).then(s.str.extract(r"^([0-9]+)", 1).str.zfill(5))
        .when(s.str.contains(r"^[0-9]{7,9}$")).then(s.str.zfill(9).str.slice(0, 5))
    )
    return pl.when(five != "00000").then(five)

