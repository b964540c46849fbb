"""Field normalizers: polars expressions from a raw column to versioned canonical strings.

Every derived expression is ``pl.String``, null when the input is missing or
invalid, built only from the given expression (no column names, no alias), so
many compose in one ``select``. Per-value Python runs only inside libraries
(phonenumbers for non-North-American numbers, jellyfish NYSIIS) and then once
per distinct value of a batch; email and phone cleaning of ASCII values are
compiled per-value passes (``cleanroom.compiled``).
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from cleanroom.errors import SpecError
from cleanroom.normalize import address, dates, email, generic, names, phone
from cleanroom.normalize.email import email_invalid_reason

__all__ = ["FIELD_TYPES", "FAMILIES", "derive", "email_invalid_reason", "versions"]

FIELD_TYPES: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "phone": ("phone",),
    "first_name": ("first", "first_canon", "first_phonetic", "first_initial"),
    "middle_name": ("middle_initial",),
    "last_name": ("last", "last_phonetic"),
    "dob": ("dob", "birth_year"),
    "birth_year": ("birth_year",),
    "address": ("house_number", "street", "street_name"),
    "house_number": ("house_number",),
    "street": ("street", "street_name"),
    "city": ("city",),
    "state": ("state",),
    "zip": ("zip5",),
    "generic": (),
}
"""Input field type -> the derived fields it produces ("generic": named by the caller)."""

FAMILIES: dict[str, str] = {
    "email": "email", "phone": "phone", "first_name": "names", "middle_name": "names",
    "last_name": "names", "dob": "dates", "birth_year": "dates", "address": "address",
    "house_number": "address", "street": "address", "city": "address", "state": "address",
    "zip": "address", "generic": "generic",
}
"""Input field type -> normalizer family whose version governs its output."""

_MODULES = {"email": email, "phone": phone, "names": names, "dates": dates, "address": address, "generic": generic}


def versions() -> dict[str, str]:
    """Normalizer family -> version; any change of output for any input bumps it."""
    return {family: module.VERSION for family, module in _MODULES.items()}


_DERIVERS: dict[str, Callable[[pl.Expr], dict[str, pl.Expr]]] = {
    "email": lambda e: {"email": email.email(e)},
    "first_name": lambda e: {
        "first": names.first(e),
        "first_canon": names.first_canon(e),
        "first_phonetic": names.first_phonetic(e),
        "first_initial": names.first_initial(e),
    },
    "middle_name": lambda e: {"middle_initial": names.middle_initial(e)},
    "last_name": lambda e: {"last": names.last(e), "last_phonetic": names.last_phonetic(e)},
    "dob": lambda e: {"dob": dates.dob(e), "birth_year": dates.dob_year(e)},
    "birth_year": lambda e: {"birth_year": dates.birth_year(e)},
    "address": lambda e: {
        "house_number": address.address_house_number(e),
        "street": address.address_street(e),
        "street_name": address.address_street_name(e),
    },
    "house_number": lambda e: {"house_number": address.house_number(e)},
    "street": lambda e: {"street": address.street(e), "street_name": address.street_name(e)},
    "city": lambda e: {"city": address.city(e)},
    "state": lambda e: {"state": address.state(e)},
    "zip": lambda e: {"zip5": address.zip5(e)},
    "generic": lambda e: {"value": generic.generic(e)},
}


def derive(field_type: str, expr: pl.Expr, *, default_region: str = "US") -> dict[str, pl.Expr]:
    """Derived field name -> normalized String expression (null when missing or invalid).

    ``default_region`` (ISO 3166 alpha-2) is used for phone numbers written
    without a country code. "generic" returns ``{"value": ...}``.
    """
    if field_type == "phone":
        return {"phone": phone.phone(expr, default_region)}
    try:
        return _DERIVERS[field_type](expr)
    except KeyError:
        raise SpecError(
            f"unknown field type {field_type!r}; expected one of: {', '.join(FIELD_TYPES)}"
        ) from None
