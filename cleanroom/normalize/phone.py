"""Phone numbers -> E.164 (``+12025550123``), null when not a valid number.

Polars strips extensions and every character but digits and a leading ``+``.
North American numbers (``+1`` and ten digits, or ten digits with an optional
leading 1 when the default region is in the +1 plan) are validated in polars
against a regular expression built from the phonenumbers metadata, which gives
the same answer as ``phonenumbers.is_valid_number`` (a test pins this). Every
other value goes through ``phonenumbers`` once per distinct cleaned value.
"""

from __future__ import annotations

from functools import cache, partial

import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

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


def clean(raw: pl.Series) -> pl.Series:
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
