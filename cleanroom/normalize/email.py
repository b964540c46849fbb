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

from cleanroom.normalize.generic import nfkc

VERSION = "1"

_LOCAL_OK = r"^[a-z0-9!#$%&'*/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*/=?^_`{|}~-]+)*$"
_DOMAIN_OK = r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
_GMAIL = ("gmail.com", "googlemail.com")


def _frame(raw: pl.Series) -> pl.DataFrame:
    """Columns ``email`` (canonical or null) and ``reason`` (null when valid)."""
    s = raw.cast(pl.String).str.strip_chars()
    s = nfkc(s).str.to_lowercase().str.strip_prefix("mailto:").str.strip_chars()
    s = s.str.strip_prefix("<").str.strip_suffix(">").str.strip_chars()
    at = s.str.count_matches("@", literal=True)
    parts = s.str.split_exact("@", 1).struct.rename_fields(["local", "domain"]).struct.unnest()
    local = parts["local"].str.split_exact("+", 1).struct.field("field_0")
    domain = parts["domain"]
    return (
        pl.DataFrame({"s": s, "at": at, "local": local, "domain": domain})
        .lazy()
        .with_columns(
            reason=pl.when(pl.col("s").is_null() | (pl.col("s").str.len_bytes() == 0)).then(pl.lit("missing"))
            .when(pl.col("at") == 0).then(pl.lit("no_at"))
            .when(pl.col("at") > 1).then(pl.lit("multiple_at"))
            .when(~pl.col("local").str.contains(_LOCAL_OK) | (pl.col("local").str.len_bytes() > 64))
            .then(pl.lit("bad_local"))
            .when(~pl.col("domain").str.contains(_DOMAIN_OK) | (pl.col("domain").str.len_bytes() > 253))
            .then(pl.lit("bad_domain"))
            .when(pl.col("local").str.len_bytes() + pl.col("domain").str.len_bytes() > 253)
            .then(pl.lit("too_long")),
            gmail=pl.col("domain").is_in(_GMAIL),
        )
        .with_columns(
            email=pl.when(pl.col("reason").is_null()).then(
                pl.when(pl.col("gmail"))
                .then(pl.col("local").str.replace_all(".", "", literal=True) + "@gmail.com")
                .otherwise(pl.col("local") + "@" + pl.col("domain"))
            )
        )
        .select("email", "reason")
        .collect()
    )


def email_invalid_reason(expr: pl.Expr) -> pl.Expr:
    """Short reason why the email is unusable, or null when it normalizes to a value.

    Reasons: missing, no_at, multiple_at, bad_local, bad_domain, too_long.
    """
    return expr.map_batches(lambda s: _frame(s)["reason"], return_dtype=pl.String, is_elementwise=True)


def email(expr: pl.Expr) -> pl.Expr:
    """Canonical email, null when missing or invalid."""
    return expr.map_batches(lambda s: _frame(s)["email"], return_dtype=pl.String, is_elementwise=True)
