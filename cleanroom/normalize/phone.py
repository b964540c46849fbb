"""Phone numbers -> E.164 (``+12025550123``), null when not a valid number.

Extensions and every character but digits and a leading ``+`` are stripped
(one compiled pass per ASCII value, the equivalent polars steps for others).
North American numbers (``+1`` and ten digits, or ten digits with an optional
leading 1 when the default region is in the +1 plan) are validated in polars
against a regular expression built from the phonenumbers metadata, which gives
the same answer as ``phonenumbers.is_valid_number`` (a test pins this). Every
other value goes through ``phonenumbers`` once per distinct cleaned value.
"""

from __future__ import annotations

from functools import cache, partial

import numba
import numpy as np
import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from cleanroom.compiled import DONE, NOT_ASCII, NULL, compiled, is_ascii, map_strings
from cleanroom.errors import SpecError
from cleanroom.normalize.generic import map_distinct

VERSION = "1"

_TYPES = (
    "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number",
    "voip", "pager", "uan", "voicemail",
)
_EXTENSION = r"(?i)\s*(?:ext\.?|extension|x|#)\s*[0-9]{1,7}$"
_SEPARATORS = [" ", "-", "(", ")", ".", "/", "+", "\t"]


@cache
def _nanp_valid_pattern() -> str:
    """Anchored regex of the ten-digit national numbers valid in any +1 region."""
    alternatives: dict[str, None] = {}
    for region in COUNTRY_CODE_TO_REGION_CODE[1]:
        meta = PhoneMetadata.metadata_for_region(region)
        for name in _TYPES:
            desc = getattr(meta, name)
            if desc is not None and desc.national_number_pattern and 10 in (desc.possible_length or (10,)):
                alternatives[desc.national_number_pattern] = None
    return "^(?:" + "|".join(f"(?:{a})" for a in alternatives) + ")$"


def _check_region(region: str) -> int:
    code = phonenumbers.country_code_for_region(region.upper())
    if code == 0:
        raise SpecError("default_region is not a known ISO 3166 region code")
    return code


def _parse(value: str, region: str) -> str | None:
    try:
        num = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(num):
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


def _clean_stepwise(raw: pl.Series) -> pl.Series:
    """Digits with an optional leading '+'; extension and a float's ``.0`` removed; null unless 3-17 digits."""
    s, digits = pl.col("s"), pl.col("digits")
    frame = (
        pl.LazyFrame({"s": raw.cast(pl.String)})
        .with_columns(s.str.strip_chars().str.strip_suffix(".0").str.replace(_EXTENSION, ""))
        .with_columns(
            digits=s.str.replace_many(_SEPARATORS, [""] * len(_SEPARATORS)),
            plus=s.str.contains(r"^[^0-9]*\+"),
        )
        .with_columns(odd=~digits.str.contains(r"^[0-9]*$").fill_null(True))
        .collect()
    )
    digits_s = frame["digits"]
    odd = frame["odd"].arg_true()
    if odd.len():
        digits_s = digits_s.scatter(odd, digits_s.gather(odd).str.replace_all(r"[^0-9]+", ""))
    return (
        pl.LazyFrame({"digits": digits_s, "plus": frame["plus"]})
        .select(
            pl.when(digits.str.len_bytes().is_between(3, 17))
            .then(pl.when(pl.col("plus")).then("+" + digits).otherwise(digits))
        )
        .collect()
        .to_series()
    )


_EXTENSION_WORDS = tuple(np.frombuffer(w, dtype=np.uint8) for w in (b"extension", b"ext.", b"ext", b"x", b"#"))


@numba.njit(inline="always")
def _space(c):
    return 9 <= c <= 13 or c == 32


@numba.njit(inline="always")
def _ends_with(data, lo, end, word):
    """data[lo:end] ends with `word` (ASCII letters compared case-insensitively)."""
    if end - lo < len(word):
        return False
    for k in range(len(word)):
        c = data[end - len(word) + k]
        if (c + 32 if 65 <= c <= 90 else c) != word[k]:
            return False
    return True


@compiled
def _clean_ascii(offsets, data, valid, words, out_offsets, out_data, status):
    """The rules of `_clean_stepwise` for ASCII values in one pass; status per row: null, done, or not ASCII."""
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
        while lo < hi and _space(data[lo]):
            lo += 1
        while hi > lo and _space(data[hi - 1]):
            hi -= 1
        if hi - lo >= 2 and data[hi - 2] == 46 and data[hi - 1] == 48:  # a float's ".0"
            hi -= 2
        end = hi  # an extension: a keyword, optional space, then 1-7 final digits
        while end > lo and 48 <= data[end - 1] <= 57:
            end -= 1
        if 1 <= hi - end <= 7:
            while end > lo and _space(data[end - 1]):
                end -= 1
            for word in words:
                if _ends_with(data, lo, end, word):
                    hi = end - len(word)
                    break
        plus, digits = False, 0
        for i in range(lo, hi):
            if 48 <= data[i] <= 57:
                digits += 1
            elif data[i] == 43 and digits == 0:
                plus = True
        if not 3 <= digits <= 17:
            continue
        if plus:
            out_data[pos] = 43
            pos += 1
        for i in range(lo, hi):
            if 48 <= data[i] <= 57:
                out_data[pos] = data[i]
                pos += 1
        status[row] = DONE
    out_offsets[len(offsets) - 1] = pos


def clean(raw: pl.Series) -> pl.Series:
    """Digits with an optional leading '+'; extension and a float's ``.0`` removed; null unless 3-17 digits.

    ASCII values (nearly all) go through `_clean_ascii`; the others through `_clean_stepwise`.
    """
    return map_strings(raw, _clean_ascii, (_EXTENSION_WORDS,), _clean_stepwise)


def _series(raw: pl.Series, region: str, code: int) -> pl.Series:
    c = pl.col("c")
    frame = (
        pl.LazyFrame({"c": clean(raw)})
        .with_columns(
            fast=c.str.contains(r"^(?:\+1|1)?[0-9]{10}$" if code == 1 else r"^\+1[0-9]{10}$").fill_null(False),
            nsn=c.str.slice(-10),
        )
        .with_columns(
            out=pl.when(pl.col("nsn").str.contains(_nanp_valid_pattern())).then("+1" + pl.col("nsn")),
            slow=~pl.col("fast") & c.is_not_null(),
        )
        .collect()
    )
    out = frame["out"]
    idx = frame["slow"].arg_true()
    if idx.len() == 0:
        return out.alias(raw.name)
    slow = pl.select(map_distinct(pl.lit(frame["c"].gather(idx)), partial(_parse, region=region))).to_series()
    return out.scatter(idx, slow).alias(raw.name)


def phone(expr: pl.Expr, default_region: str = "US") -> pl.Expr:
    """E.164 number, or null when missing or invalid for the default region."""
    code = _check_region(default_region)
    return expr.map_batches(
        partial(_series, region=default_region.upper(), code=code), return_dtype=pl.String, is_elementwise=True
    )
