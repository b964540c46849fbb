"""Error-tolerant variants of a match key, each an exact keyed token of its own.

A key may add tokens for: first and last name exchanged (swap_names), the
names an email address spells (email_names: maria.garcia@... reads as Maria
Garcia, and so does mariagarcia@... on a row whose last name is Garcia or
first name Maria), day and month exchanged (dob_dm_swap), the birth date with
one of its parts unknown (dob_partial: a date with a wrong day, month or year
still meets the true one; the scorer reads such a key as showing
`dob_partial`, not the birth date), the canonical first name paired with each name the nickname
table links to its group (nicknames: Bill meets Robert, where the table's
canonical forms differ), and every single-character deletion of one field
(deletions:<field>; two values within one insert, delete, substitute or
transpose share a deletion). The broker explodes a row's tokens for a key, so
any variant that meets the other side's tokens is a hit.

The street name without suffix and directionals is not a variant of a key but
a field of its own (`spec.VARIANT_FIELDS`): a key holds it in place of the
street, and a spec whose keys leave it out switches that family off.
"""

from __future__ import annotations

from functools import cache, partial

import polars as pl

from cleanroom import normalize
from cleanroom.bundle import KeyInfo
from cleanroom.normalize import names as names_clean
from cleanroom.normalize.generic import via_distinct
from cleanroom.normalize.names import nickname_links
from cleanroom.spec import NICKNAMES, PARTIAL_DOB, MatchKey, MatchSpec

MAX_DELETIONS = 12  # deletion variants cover the first 12 characters of a value
# a field's deletions are also read from its value as written: a typo keeps a name from its canonical form
# ("jhn" is no nickname of anyone), so one edit of "john" would not meet "johnathan"'s deletions
AS_WRITTEN = {"first_canon": "first"}
_EXCHANGE = {"first_name": "last_name", "last_name": "first_name"}


def name_readings(
    spec: MatchSpec, columns: dict[str, str], used: set[str], derived: dict[str, pl.Expr]
) -> dict[str, dict[str, list[str]]]:
    """Other readings of a row's names, per variant that asks for one: swap_names (first and last name
    columns exchanged), email_names (the names an email address spells as first.last or first_last, or run
    together beside the row's own last or first name).

    Their expressions are added to `derived`; returns variant -> field -> derived column names.
    """
    wanted = {v for k in spec.all_keys for v in k.variants}
    readings: dict[str, dict[str, list[str]]] = {}
    for i, (column, field_type) in enumerate(columns.items()):
        if "swap_names" in wanted and field_type in _EXCHANGE:
            _add(readings.setdefault("swap_names", {}), f"__s{i}",
                 normalize.derive(_EXCHANGE[field_type], pl.col(column)), used, derived)
        if "email_names" in wanted and field_type == "email":
            first, last = _email_names(pl.col(column), _column_of(columns, "first_name"),
                                       _column_of(columns, "last_name"))
            for j, (name_type, expr) in enumerate((("first_name", first), ("last_name", last))):
                _add(readings.setdefault("email_names", {}), f"__m{i}.{j}", normalize.derive(name_type, expr),
                     used, derived)
    return readings



def _add(reading: dict[str, list[str]], prefix: str, produced: dict[str, pl.Expr], used: set[str],
         derived: dict[str, pl.Expr]) -> None:
    for field, expr in produced.items():
        if field in used:
            derived[f"{prefix}:{field}"] = expr
            reading.setdefault(field, []).append(f"{prefix}:{field}")


def _column_of(columns: dict[str, str], field_type: str) -> pl.Expr | None:
    return next((pl.col(c) for c, t in columns.items() if t == field_type), None)


def _email_names(email: pl.Expr, first: pl.Expr | None, last: pl.Expr | None) -> tuple[pl.Expr, pl.Expr]:
    """First and last name spelt by an address's local part (digits dropped) as first.last, first_last or
    first-last, or run together where one end is the row's own last or first name (johnsmith on a row
    named Smith, or John; at least two letters left for the other name); null for any other shape."""
    local = email.cast(pl.String).str.to_lowercase().str.extract(r"([a-z0-9._-]+)@", 1).str.replace_all("[0-9]", "")
    parts = local.str.extract_groups(r"^([a-z]{2,})[._-]([a-z]{2,})$")
    readings = [(parts.struct.field("1"), parts.struct.field("2"))]
    joined = pl.when(local.str.contains(r"^[a-z]+$")).then(local)
    if last is not None:
        own = names_clean.last(last)
        rest = joined.str.strip_suffix(own)
        spelt = joined.str.ends_with(own) & (rest.str.len_chars() >= 2)
        readings.append((pl.when(spelt).then(rest), pl.when(spelt).then(own)))
    if first is not None:
        own = names_clean.first(first)
        rest = joined.str.strip_prefix(own)
        spelt = joined.str.starts_with(own) & (rest.str.len_chars() >= 2)
        readings.append((pl.when(spelt).then(own), pl.when(spelt).then(rest)))
    return pl.coalesce(r[0] for r in readings), pl.coalesce(r[1] for r in readings)


def _linked_names(value: pl.Expr) -> list[pl.Expr]:
    """A canonical first name as itself, then as each pair of it and a name `nickname_links` links to it
    ("robert|william"): two rows share a reading only for one name or two directly linked names, never for
    two names linked through a third. One expression per place (null past the name's links), each worked
    out once per distinct name."""
    places = max((len(names) for names in nickname_links().values()), default=1)
    return [value] + [via_distinct(value, partial(_linked_pair, place=i)) for i in range(1, places)]


def _linked_pair(value: pl.Expr, place: int) -> pl.Expr:
    pairs = _pairs_at(place)
    return value.replace_strict(list(pairs), list(pairs.values()), default=None, return_dtype=pl.String)


@cache
def _pairs_at(place: int) -> dict[str, str]:
    """Name -> the pair of it and its `place`-th linked name, for names with that many links."""
    return {name: "|".join(sorted((name, linked[place])))
            for name, linked in nickname_links().items() if len(linked) > place}


def _deletions(value: pl.Expr) -> list[pl.Expr]:
    """The value and each of its single-character deletions (null past its end)."""
    return [value] + [
        pl.when(value.str.len_chars() > i).then(value.str.slice(0, i) + value.str.slice(i + 1))
        for i in range(MAX_DELETIONS)
    ]


def variant_sources(
    key: MatchKey, sources: dict[str, list[str]], names: dict[str, dict[str, list[str]]]
) -> list[list[list[pl.Expr]]]:
    """For each way of reading the row (as given; the other `name_readings` its variants ask for), the
    alternatives per field."""
    deletion_field = next((v.split(":")[1] for v in key.variants if v.startswith("deletions:")), None)
    readings = [sources] + [{**sources, **names[v]} for v in key.variants if v in names]
    result = []
    for reading in readings:
        per_field = []
        for field in key.fields:
            exprs = [pl.col(n) for n in reading.get(field, [])]
            if field == deletion_field:
                written = [pl.col(n) for n in reading.get(AS_WRITTEN.get(field, ""), [])]
                exprs = [d for e in exprs + written for d in _deletions(e)]
            if field == "first_canon" and NICKNAMES in key.variants:
                exprs = [linked for e in exprs for linked in _linked_names(e)]
            if field == "dob" and "dob_dm_swap" in key.variants:
                exprs = exprs + [_day_month_swapped(e) for e in exprs]
            if field == "dob" and PARTIAL_DOB in key.variants:
                exprs = exprs + [masked for e in exprs for masked in _one_part_unknown(e)]
            per_field.append(exprs)
        result.append(per_field)
    return result


def shown_fields(key: MatchKey | KeyInfo) -> list[str]:
    """The key's fields as its tokens show agreement: under dob_partial, the birth date only to two of its
    three parts (the field `dob_partial`, which exact agreement on the birth date implies)."""
    if PARTIAL_DOB not in key.variants:
        return list(key.fields)
    return [PARTIAL_DOB if f == "dob" else f for f in key.fields]


def _one_part_unknown(dob: pl.Expr) -> list[pl.Expr]:
    """ISO date with the day, the month, then the year written as zeros: two dates with one wrong part share
    one. Zeros are no real day, month or year, so these never meet a full date's token."""
    year, month, day = dob.str.slice(0, 4), dob.str.slice(5, 2), dob.str.slice(8, 2)
    return [pl.concat_str(parts, separator="-") for parts in (
        [year, month, pl.lit("00")], [year, pl.lit("00"), day], [pl.lit("0000"), month, day])]


def _day_month_swapped(dob: pl.Expr) -> pl.Expr:
    """ISO date with day and month exchanged, where the day can be a month."""
    year, month, day = dob.str.slice(0, 4), dob.str.slice(5, 2), dob.str.slice(8, 2)
    return pl.when((day <= "12") & (day != month)).then(pl.concat_str([year, day, month], separator="-"))
