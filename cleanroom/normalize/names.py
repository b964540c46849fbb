"""Person names: cleaned first/last names, canonical first name, NYSIIS codes, initials.

Cleaning: fold to ASCII, lowercase, apostrophes removed (O'Brien -> obrien),
other punctuation and hyphens -> space, leading titles (mr, mrs, dr, ...) and
trailing suffixes (jr, sr, ii, iii, iv, esq, md, phd, ...) dropped when another
word remains, then the remaining words are joined *without* spaces so that
"De La Cruz", "de la Cruz" and "Delacruz" agree. For first names, trailing
one-letter words (a middle initial: "John Q.") are dropped first.

``first_canon`` maps a first name through the nickname table of the
``nicknames`` package (see ``canonical_table``). Phonetic codes are jellyfish's
NYSIIS (full length, not truncated to six), lowercased.
"""

from __future__ import annotations

import re
from functools import cache

import jellyfish
import polars as pl
from nicknames import NickNamer

from cleanroom.normalize.generic import (
    as_text,
    ascii_fold,
    collapse_spaces,
    map_distinct,
    null_if_empty,
    via_distinct,
)

VERSION = "1"

_TITLES = "mr|mrs|ms|miss|mx|dr|prof|rev|fr|sir|hon|sr"
_SUFFIXES = "jr|sr|ii|iii|iv|2nd|3rd|4th|esq|md|phd|dds|dvm|cpa|ret"


def _words(expr: pl.Expr) -> pl.Expr:
    """ASCII lowercase words separated by single spaces, titles and suffixes dropped."""
    s = ascii_fold(as_text(expr)).str.replace_all(r"['`’]", "").str.replace_all(r"[^a-z]+", " ")
    s = collapse_spaces(s)
    s = s.str.replace(rf"^(?:(?:{_TITLES}) )+", "")
    return s.str.replace(rf"(?: (?:{_SUFFIXES}))+$", "")


def _join(words: pl.Expr) -> pl.Expr:
    return null_if_empty(words.str.replace_all(" ", "", literal=True))


def _first(expr: pl.Expr) -> pl.Expr:
    return _join(_words(expr).str.replace(r"(?: [a-z])+$", ""))


def _last(expr: pl.Expr) -> pl.Expr:
    return _join(_words(expr))


def _nysiis(value: str) -> str | None:
    return jellyfish.nysiis(value).lower() or None


def first(expr: pl.Expr) -> pl.Expr:
    """Cleaned first name (trailing initials dropped)."""
    return via_distinct(expr, _first)


def first_canon(expr: pl.Expr) -> pl.Expr:
    """Canonical first name through the nickname table (see ``canonical_table``, built on first evaluation)."""

    def canonical(e: pl.Expr) -> pl.Expr:
        table = canonical_table()
        return _first(e).replace(list(table), list(table.values()))

    return via_distinct(expr, canonical)


def first_phonetic(expr: pl.Expr) -> pl.Expr:
    """NYSIIS code of the cleaned first name."""
    return via_distinct(expr, lambda e: map_distinct(_first(e), _nysiis))


def first_initial(expr: pl.Expr) -> pl.Expr:
    """First letter of the cleaned first name."""
    return via_distinct(expr, lambda e: _first(e).str.slice(0, 1))


def last(expr: pl.Expr) -> pl.Expr:
    """Cleaned last name."""
    return via_distinct(expr, _last)


def last_phonetic(expr: pl.Expr) -> pl.Expr:
    """NYSIIS code of the cleaned last name."""
    return via_distinct(expr, lambda e: map_distinct(_last(e), _nysiis))


def middle_initial(expr: pl.Expr) -> pl.Expr:
    """First letter of a middle name."""
    return via_distinct(expr, lambda e: _last(e).str.slice(0, 1))


@cache
def canonical_table() -> dict[str, str]:
    """Cleaned name -> canonical first name, derived from the nicknames package.

    The package lists, for a name x, several "canonical" names (bob -> robert,
    bobby, bert). We pick deterministically: among x's canonicals longer than x,
    the one sharing the most directly linked names with x, then the one with the
    most nicknames, then the shortest, then the alphabetically first; repeat
    from the result until it is stable. A name with no longer canonical is its
    own canonical. Names absent from the table are unchanged.
    """
    nick, canon = _package()
    clean = {n: _letters(n) for n in set(nick) | set(canon)}

    def step(x: str) -> str:
        cands = [c for c in canon.get(x, ()) if len(c) > len(x)]
        if not cands:
            return x
        return min(cands, key=lambda c: (-len(_linked(x) & _linked(c)), -len(nick.get(c, ())), len(c), c))

    table: dict[str, str] = {}
    for name in sorted(clean):
        target = name
        while (nxt := step(target)) != target:
            target = nxt
        key = clean[name]
        if key and key not in table:
            table[key] = clean[target]
    return {k: v for k, v in table.items() if k != v}


@cache
def nickname_links() -> dict[str, list[str]]:
    """Canonical first name -> itself, then the canonical names of every name the nicknames package links
    directly to a name of its group (its nicknames and formal forms), sorted; only names with links.

    Two names a nickname relation joins (Bill and Robert, Sam and Samuel) list each other even where
    `canonical_table` took them to different canonical names (the relation is symmetric in the package).
    """
    nick, canon = _package()
    table = canonical_table()

    def canonical(name: str) -> str:
        return table.get(_letters(name), _letters(name))

    links: dict[str, set[str]] = {}
    for name in set(nick) | set(canon):
        links.setdefault(canonical(name), set()).update(canonical(n) for n in _linked(name))
    return {k: [k, *sorted(v - {k, ""})] for k, v in links.items() if k and v - {k, ""}}


@cache
def _package() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The nicknames package's tables: name -> its formal forms, name -> its nicknames."""
    nn = NickNamer()
    return nn.nickname_lookup, nn.canonical_lookup


def _linked(name: str) -> set[str]:
    """The name and every name the package links to it directly."""
    nick, canon = _package()
    return {name} | nick.get(name, set()) | canon.get(name, set())


def _letters(name: str) -> str:
    return re.sub(r"[^a-z]", "", name)
