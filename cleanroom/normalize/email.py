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
# A valid address in one pattern: local part, an optional +tag (anything but '@'), '@', domain.
_VALID = rf"^{_LOCAL_OK[1:-1]}(?:\+[^@]*)?@{_DOMAIN_OK[1:-1]}$"


def _clean(s: pl.Expr) -> pl.Expr:
    return s.str.strip_chars().str.to_lowercase().str.strip_prefix("mailto:").str.strip_chars(" \t<>")


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


def _canonical(raw: pl.Series) -> pl.Series:
    """Canonical email or null; the same as ``_frame(raw)["email"]``, in fewer passes.

    One regular expression decides validity (exactly one '@', a valid local
    part before an optional +tag, a valid domain); byte offsets of the first
    '+' and '@' then cut the local part and the domain, which are ASCII
    whenever the address is valid.
    """
    s, at, n = pl.col("s"), pl.col("at"), pl.col("n")
    local_n = pl.coalesce(pl.col("plus"), at)
    domain_n = n - at - 1
    local, domain = pl.col("local"), pl.col("domain")
    return (
        pl.LazyFrame({"s": nfkc(raw.cast(pl.String))})
        .with_columns(_clean(s))
        .with_columns(
            ok=s.str.contains(_VALID).fill_null(False),
            at=s.str.find("@", literal=True),
            plus=s.str.find("+", literal=True),
            n=s.str.len_bytes(),
        )
        .with_columns(ok=pl.col("ok") & (local_n <= 64) & (domain_n <= 253) & (local_n + domain_n <= 253))
        .select(
            local=pl.when("ok").then(s.str.head(local_n)),
            domain=pl.when("ok").then(s.str.tail(domain_n)),
        )
        .select(
            pl.when(domain.is_in(_GMAIL))
            .then(local.str.replace_all(".", "", literal=True) + "@gmail.com")
            .otherwise(local + "@" + domain)
            .alias(raw.name)
        )
        .collect()
        .to_series()
    )


def email_invalid_reason(expr: pl.Expr) -> pl.Expr:
    """Short reason why the email is unusable, or null when it normalizes to a value.

    Reasons: missing, no_at, multiple_at, bad_local, bad_domain, too_long.
    """
    return expr.map_batches(lambda s: _frame(s)["reason"], return_dtype=pl.String, is_elementwise=True)


def email(expr: pl.Expr) -> pl.Expr:
    """Canonical email, null when missing or invalid."""
    return expr.map_batches(_canonical, return_dtype=pl.String, is_elementwise=True)
