"""Email addresses: canonical lowercase form, or null with a reason when invalid.

Rules: trim, NFKC, lowercase, strip ``mailto:`` and surrounding ``<>``; drop a
``+tag`` for every provider (plus addressing is a sub-address almost everywhere,
and keeping tags splits one person into several tokens); for gmail.com and
googlemail.com remove dots from the local part and map the domain to gmail.com.
Only ASCII addresses are accepted (local part: RFC 5322 atext and dots; domain:
LDH labels and an alphabetic TLD).
"""

from __future__ import annotations

import polars as pl

from cleanroom.normalize.generic import as_text

VERSION = "1"

_LOCAL_OK = r"^[a-z0-9!#$%&'*/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*/=?^_`{|}~-]+)*$"
_DOMAIN_OK = r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
_GMAIL = ("gmail.com", "googlemail.com")


def _parts(expr: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """(cleaned text, number of '@', local part without +tag, domain)."""
    s = as_text(expr).str.normalize("NFKC").str.to_lowercase()
    s = s.str.replace(r"^mailto:", "").str.strip_chars().str.strip_prefix("<").str.strip_suffix(">")
    s = s.str.strip_chars()
    at = s.str.count_matches("@", literal=True)
    local = s.str.extract(r"^([^@]*)@", 1).str.replace(r"\+.*$", "")
    domain = s.str.extract(r"@([^@]*)$", 1)
    return s, at, local, domain


def _reason(s: pl.Expr, at: pl.Expr, local: pl.Expr, domain: pl.Expr) -> pl.Expr:
    return (
        pl.when(s.is_null() | (s.str.len_bytes() == 0)).then(pl.lit("missing"))
        .when(at == 0).then(pl.lit("no_at"))
        .when(at > 1).then(pl.lit("multiple_at"))
        .when(~local.str.contains(_LOCAL_OK) | (local.str.len_bytes() > 64)).then(pl.lit("bad_local"))
        .when(~domain.str.contains(_DOMAIN_OK) | (domain.str.len_bytes() > 253)).then(pl.lit("bad_domain"))
        .when(local.str.len_bytes() + domain.str.len_bytes() > 253).then(pl.lit("too_long"))
    )


def email_invalid_reason(expr: pl.Expr) -> pl.Expr:
    """Short reason why the email is unusable, or null when it normalizes to a value.

    Reasons: missing, no_at, multiple_at, bad_local, bad_domain, too_long.
    """
    return _reason(*_parts(expr))


def email(expr: pl.Expr) -> pl.Expr:
    """Canonical email, null when missing or invalid."""
    s, at, local, domain = _parts(expr)
    valid = _reason(s, at, local, domain).is_null()
    gmail = domain.is_in(_GMAIL)
    local = pl.when(gmail).then(local.str.replace_all(".", "", literal=True)).otherwise(local)
    domain = pl.when(gmail).then(pl.lit("gmail.com")).otherwise(domain)
    return pl.when(valid).then(pl.concat_str(local, pl.lit("@"), domain))
