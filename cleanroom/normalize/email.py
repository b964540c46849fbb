"""Email addresses: canonical lowercase form, or null with a reason when invalid.

Rules: trim, NFKC, lowercase, keep the address of a ``Name <address>`` form,
strip ``mailto:`` and surrounding ``<>``; drop a
``+tag`` for every provider (plus addressing is a sub-address almost everywhere,
and keeping tags splits one person into several tokens); for gmail.com and
googlemail.com remove dots from the local part and map the domain to gmail.com.
Only ASCII addresses are accepted (local part: RFC 5322 atext and dots; domain:
LDH labels and an alphabetic TLD). ASCII values are canonicalized by one
compiled pass; the stepwise polars expressions (`_frame`) handle the others,
give the reasons, and pin the rules in property tests.
"""

from __future__ import annotations

import numba
import numpy as np
import polars as pl

from cleanroom.compiled import DONE, NOT_ASCII, NULL, compiled, is_ascii, map_strings
from cleanroom.normalize.generic import nfkc

VERSION = "2"  # 2: "Name <address>" and "<mailto:address>" keep the address

_LOCAL_OK = r"^[a-z0-9!#$%&'*/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*/=?^_`{|}~-]+)*$"
_DOMAIN_OK = r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
_GMAIL = ("gmail.com", "googlemail.com")
# A valid address in one pattern: local part, an optional +tag (anything but '@'), '@', domain.
_VALID = rf"^{_LOCAL_OK[1:-1]}(?:\+[^@]*)?@{_DOMAIN_OK[1:-1]}$"


def _clean(s: pl.Expr) -> pl.Expr:
    s = s.str.strip_chars().str.to_lowercase()
    s = pl.coalesce(s.str.extract(r"<([^<]*)>$", 1), s)  # "Name <address>": the address in the last <...>
    return s.str.strip_prefix("mailto:").str.strip_chars(" \t<>")


def _frame(raw: pl.Series) -> pl.DataFrame:
    """Columns ``email`` (canonical or null) and ``reason`` (null when valid)."""
    s, at, local, domain = pl.col("s"), pl.col("at"), pl.col("local"), pl.col("domain")
    return (
        pl.LazyFrame({"s": nfkc(raw.cast(pl.String))})
        .with_columns(_clean(s))
        .with_columns(
            at=s.str.count_matches("@", literal=True),
            parts=s.str.split_exact("@", 1).struct.rename_fields(["local", "domain"]),
        )
        .unnest("parts")
        .with_columns(local=local.str.split_exact("+", 1).struct.field("field_0"))
        .with_columns(
            reason=pl.when(s.is_null() | (s.str.len_bytes() == 0)).then(pl.lit("missing"))
            .when(at == 0).then(pl.lit("no_at"))
            .when(at > 1).then(pl.lit("multiple_at"))
            .when(~local.str.contains(_LOCAL_OK) | (local.str.len_bytes() > 64)).then(pl.lit("bad_local"))
            .when(~domain.str.contains(_DOMAIN_OK) | (domain.str.len_bytes() > 253)).then(pl.lit("bad_domain"))
            .when(local.str.len_bytes() + domain.str.len_bytes() > 253).then(pl.lit("too_long")),
            gmail=domain.is_in(_GMAIL),
        )
        .select(
            pl.when(pl.col("reason").is_null())
            .then(
                pl.when(pl.col("gmail"))
                .then(local.str.replace_all(".", "", literal=True) + "@gmail.com")
                .otherwise(local + "@" + domain)
            )
            .alias("email"),
            "reason",
        )
        .collect()
    )


_ATEXT = np.zeros(128, dtype=np.bool_)  # RFC 5322 atext, lowercase (no '+': it starts the tag)
for _c in "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*/=?^_`{|}~-":
    _ATEXT[ord(_c)] = True
_GMAIL_BYTES = tuple(np.frombuffer(d.encode(), dtype=np.uint8) for d in _GMAIL)
_MAILTO = np.frombuffer(b"mailto:", dtype=np.uint8)
_CANONICAL_GMAIL = np.frombuffer(b"@gmail.com", dtype=np.uint8)


@numba.njit(inline="always")
def _lower(c):
    return c + 32 if 65 <= c <= 90 else c


@numba.njit(inline="always")
def _domain_ok(data, lo, hi):
    """LDH labels (1-63, no hyphen at either end) then an alphabetic TLD of 2-63 letters."""
    start, labels = lo, 0
    for i in range(lo, hi + 1):
        if i < hi and data[i] != 46:  # '.'
            continue
        n = i - start
        if i == hi:  # the TLD
            if labels == 0 or n < 2 or n > 63:
                return False
            for k in range(start, i):
                if not 97 <= _lower(data[k]) <= 122:
                    return False
            return True
        if n < 1 or n > 63 or data[start] == 45 or data[i - 1] == 45:
            return False
        for k in range(start, i):
            c = _lower(data[k])
            if not (97 <= c <= 122 or 48 <= c <= 57 or c == 45):
                return False
        labels += 1
        start = i + 1
    return False


@numba.njit(inline="always")
def _is(data, lo, hi, word):
    if hi - lo != len(word):
        return False
    for k in range(len(word)):
        if _lower(data[lo + k]) != word[k]:
            return False
    return True


@compiled
def _canonical_ascii(offsets, data, valid, atext, mailto, gmail, googlemail, canonical_gmail, out_offsets, out_data, status):
    """The rules of `_frame` for ASCII values in one pass; status per row: null, done, or not ASCII."""
    pos = 0
    for row in range(len(offsets) - 1):
        out_offsets[row] = pos
        status[row] = NULL
        if not valid[row]:
            continue
        lo, hi = offsets[row], offsets[row + 1]
        if not is_ascii(data, lo, hi):
            status[row] = NOT_ASCII
            continue
        while lo < hi and (9 <= data[lo] <= 13 or data[lo] == 32):
            lo += 1
        while hi > lo and (9 <= data[hi - 1] <= 13 or data[hi - 1] == 32):
            hi -= 1
        if hi > lo and data[hi - 1] == 62:  # '>': keep what the last '<' opens, if any
            i = hi - 2
            while i >= lo and data[i] != 60:
                i -= 1
            if i >= lo:
                lo, hi = i + 1, hi - 1
        if hi - lo >= len(mailto) and _is(data, lo, lo + len(mailto), mailto):
            lo += len(mailto)
        while lo < hi and (data[lo] == 32 or data[lo] == 9 or data[lo] == 60 or data[lo] == 62):
            lo += 1
        while hi > lo and (data[hi - 1] == 32 or data[hi - 1] == 9 or data[hi - 1] == 60 or data[hi - 1] == 62):
            hi -= 1
        i, after_dot = lo, True
        while i < hi and data[i] != 43 and data[i] != 64:  # the local part ends at '+' or '@'
            c = _lower(data[i])
            if c == 46:
                if after_dot:
                    break
                after_dot = True
            elif atext[c]:
                after_dot = False
            else:
                break
            i += 1
        local_end = i
        if local_end == lo or after_dot or (i < hi and data[i] != 43 and data[i] != 64):
            continue
        while i < hi and data[i] != 64:  # the tag: anything but '@'
            i += 1
        if i == hi:
            continue
        at = i
        local_n, domain_n = local_end - lo, hi - at - 1
        if local_n > 64 or domain_n > 253 or local_n + domain_n > 253 or not _domain_ok(data, at + 1, hi):
            continue
        is_gmail = _is(data, at + 1, hi, gmail) or _is(data, at + 1, hi, googlemail)
        for k in range(lo, local_end):
            if not (is_gmail and data[k] == 46):
                out_data[pos] = _lower(data[k])
                pos += 1
        if is_gmail:
            for c in canonical_gmail:
                out_data[pos] = c
                pos += 1
        else:
            for k in range(at, hi):
                out_data[pos] = _lower(data[k])
                pos += 1
        status[row] = DONE
    out_offsets[len(offsets) - 1] = pos


def _canonical(raw: pl.Series) -> pl.Series:
    """Canonical email or null; the same as ``_frame(raw)["email"]``, in one compiled pass.

    ASCII values (nearly all) go through `_canonical_ascii`; the others through `_frame`.
    """
    constants = (_ATEXT, _MAILTO, *_GMAIL_BYTES, _CANONICAL_GMAIL)
    return map_strings(raw, _canonical_ascii, constants, lambda others: _frame(others)["email"])


def email_invalid_reason(expr: pl.Expr) -> pl.Expr:
    """Short reason why the email is unusable, or null when it normalizes to a value.

    Reasons: missing, no_at, multiple_at, bad_local, bad_domain, too_long.
    """
    return expr.map_batches(lambda s: _frame(s)["reason"], return_dtype=pl.String, is_elementwise=True)


def email(expr: pl.Expr) -> pl.Expr:
    """Canonical email, null when missing or invalid."""
    return expr.map_batches(_canonical, return_dtype=pl.String, is_elementwise=True)
