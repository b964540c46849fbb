"""Synthetic partner contact lists drawn from a voter file, with noise and ground truth.

Each list samples persons from a shared pool (voters plus unregistered and
out-of-state people), so lists overlap; every row is then damaged as real
contact lists are. Semantic modifications are recorded per row in the truth
frame's `noise` column; cosmetic ones (case, whitespace, gmail dots, +tags,
phone and date formats) are not, since normalization is meant to undo them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import polars as pl
from nicknames import NickNamer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cleanroom.errors import InputError
from cleanroom.synth import _tables as T

PARTNER_COLUMNS = ("email", "phone", "first_name", "last_name", "zip", "address", "dob")
MODIFICATIONS = ("typo", "phonetic", "nickname", "swap_names", "date_error", "missing", "moved")
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y")
_PHONE_FORMATS = 5
_Rate = Field(ge=0.0, le=1.0)


class NoiseProfile(BaseModel):
    """Noise rates for partner lists.

    With `max_modifications == 0` each modification hits a row independently at
    its rate. Otherwise a share `noisy_share` of rows carries 1 to
    `max_modifications` distinct modifications, chosen with the rates as weights.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    noisy_share: float = _Rate
    max_modifications: int = Field(0, ge=0, le=len(MODIFICATIONS))
    typo: float = _Rate
    """One character inserted, deleted, substituted or transposed in first name, last name or street."""
    phonetic: float = _Rate
    """A sound-alike misspelling of the last (60%) or first name."""
    nickname: float = _Rate
    """First name replaced by a nickname or its formal form, when one exists."""
    swap_names: float = _Rate
    """First and last name swapped."""
    date_error: float = _Rate
    """Day and month swapped when the day is at most 12, else one wrong date part."""
    missing: float = _Rate
    """One present field blanked."""
    moved: float = _Rate
    """Address and zip replaced by another address (a move the voter file missed)."""
    duplicate: float = _Rate
    """Share of persons listed twice in one list, each copy with its own noise."""
    case: float = _Rate
    whitespace: float = _Rate
    gmail_dots: float = _Rate
    plus_tag: float = _Rate
    alt_email: float = _Rate
    """Share of rows using the person's second email address."""
    email_share: float = _Rate
    phone_share: float = _Rate
    address_shares: tuple[float, ...] = (0.9, 0.3, 0.0, 0.6)
    """Share of rows with an address, for list 1, 2, ... (cycled)."""
    dob_shares: tuple[float, ...] = (0.5, 0.0, 0.2, 0.8)
    """Share of rows with a birth date, for list 1, 2, ... (cycled)."""

    def rates(self) -> np.ndarray:
        """Rates of the semantic modifications, in `MODIFICATIONS` order."""
        return np.array([getattr(self, m) for m in MODIFICATIONS])


PROFILES: dict[str, NoiseProfile] = {
    "default": NoiseProfile(
        name="default", noisy_share=0.0, typo=0.03, phonetic=0.01, nickname=0.10,
        swap_names=0.01, date_error=0.03, missing=0.05, moved=0.08, duplicate=0.03, case=0.20,
        whitespace=0.05, gmail_dots=0.15, plus_tag=0.03, alt_email=0.15, email_share=0.95,
        phone_share=0.55,
    ),
    "hard": NoiseProfile(
        name="hard", noisy_share=0.8, max_modifications=3, typo=0.30, phonetic=0.10,
        nickname=0.12, swap_names=0.08, date_error=0.12, missing=0.14, moved=0.14,
        duplicate=0.10, case=0.30, whitespace=0.10, gmail_dots=0.30, plus_tag=0.08,
        alt_email=0.25, email_share=0.9, phone_share=0.5,
    ),
}


def noise_profile(profile: str | NoiseProfile = "default",
                  overrides: Mapping[str, float] | None = None) -> NoiseProfile:
    """A named profile (or the given one) with `overrides` applied and validated."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise InputError(f"unknown noise profile; choose one of {', '.join(PROFILES)}")
        profile = PROFILES[profile]
    if not overrides:
        return profile
    try:
        return NoiseProfile.model_validate(profile.model_dump() | dict(overrides))
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors())
        raise InputError(f"invalid noise setting: {fields}") from None


# ---------------------------------------------------------------------------
# The person pool


def _voter_dob(voters: pl.DataFrame, rng: np.random.Generator) -> pl.Series:
    if "dob" in voters.columns:
        return voters["dob"].cast(pl.String).str.to_date("%Y-%m-%d", strict=False)
    if "birth_year" in voters.columns:
        first = pl.select(pl.date(voters["birth_year"].cast(pl.Int32), 1, 1)).to_series()
        return _shift_days(first, rng.integers(0, 365, len(voters)))
    raise InputError("the voter file needs a dob or birth_year column")


def _shift_days(dates: pl.Series, days: np.ndarray) -> pl.Series:
    return (dates.cast(pl.Int32) + pl.Series(days.astype(np.int32))).cast(pl.Date)


def _digits(s: pl.Series) -> pl.Series:
    return s.cast(pl.String).str.replace_all(r"\D", "")


def _emails(rng: np.random.Generator, first: pl.Series, last: pl.Series,
            year: pl.Series) -> pl.Series:
    """Email addresses from name patterns and common providers."""
    n = len(first)
    f = first.str.to_lowercase().str.replace_all("[^a-z]", "")
    l_ = last.str.to_lowercase().str.replace_all("[^a-z]", "")
    num = pl.Series(rng.integers(1, 100, n)).cast(pl.String)
    yy = (year % 100).cast(pl.String).str.zfill(2)
    fi, li = f.str.slice(0, 1), l_.str.slice(0, 1)
    patterns = [f + "." + l_, f + l_, fi + l_, f + "_" + l_, f + "." + l_ + num,
                fi + l_ + num, f + num, l_ + "." + f, f + "." + li, f + l_ + yy]
    weights = np.array([0.25, 0.12, 0.15, 0.06, 0.10, 0.08, 0.08, 0.04, 0.04, 0.08])
    pick = pl.Series(rng.choice(len(patterns), n, p=weights))
    expr = pl.when(pick == 0).then(patterns[0])
    for i, p in enumerate(patterns[1:], 1):
        expr = expr.when(pick == i).then(p)
    provider = pl.Series(list(T.EMAIL_PROVIDERS)).gather(pl.Series(rng.choice(
        len(T.EMAIL_PROVIDERS), n, p=np.array(T.EMAIL_PROVIDER_P) / sum(T.EMAIL_PROVIDER_P))))
    return pl.select(expr.otherwise(patterns[0]) + "@" + provider).to_series()


def _unique_emails(rng: np.random.Generator, email: pl.Series) -> pl.Series:
    """Make addresses unique by adding digits to later copies, as providers force people to."""
    for _ in range(20):
        dup = ~email.is_first_distinct()
        if not dup.any():
            return email
        digits = pl.Series(rng.integers(1, 10_000, len(email))).cast(pl.String)
        local, domain = email.str.split_exact("@", 1).struct.unnest().get_columns()
        email = pl.select(pl.when(dup).then(local + digits + "@" + domain).otherwise(email)).to_series()
    return email


def _mobile_numbers(rng: np.random.Generator, taken: pl.Series, n: int) -> pl.Series:
    """`n` distinct mobile numbers in the voter file's area codes, none of them a number in `taken`.

    A number belongs to one subscriber: drawn at random, some would be another
    voter's landline (a few in a thousand at a small file's density).
    """
    areas = taken.str.slice(0, 3).unique().sort().to_numpy()
    areas = areas if len(areas) else np.array(["202"])

    def draw(k: int) -> pl.Series:
        return (pl.Series(areas[rng.integers(0, len(areas), k)])
                + pl.Series(rng.integers(200, 1000, k)).cast(pl.String)
                + pl.Series(rng.integers(0, 10_000, k)).cast(pl.String).str.zfill(4))

    mobile = draw(n)
    for _ in range(20):
        clash = mobile.is_in(taken.implode()) | ~mobile.is_first_distinct()
        if not clash.any():
            break
        mobile = pl.select(pl.when(clash).then(draw(n)).otherwise(mobile)).to_series()
    return mobile


def _people(voters: pl.DataFrame, n_reg: int, n_non: int, rng: np.random.Generator) -> pl.DataFrame:
    """The pool: `n_reg` random voters and `n_non` people who are not in the file."""
    nv = len(voters)
    idx = np.sort(rng.choice(nv, n_reg, replace=False))
    dob_all = _voter_dob(voters, rng)
    zip_all = voters["zip"].cast(pl.String)
    reg = pl.DataFrame({
        "person_id": pl.Series(idx, dtype=pl.Int64),
        "voter_id": voters["voter_id"].cast(pl.String).gather(idx),
        "first": voters["first_name"].gather(idx),
        "last": voters["last_name"].gather(idx),
        "dob": dob_all.gather(idx),
        "house": voters["house_number"].cast(pl.String).gather(idx),
        "street": voters["street"].gather(idx),
        "unit": voters["unit"].gather(idx),
        "zip5": zip_all.str.slice(0, 5).gather(idx),
        "zip4": zip_all.str.slice(6, 4).gather(idx),
        "phone": _digits(voters["phone"]).gather(idx),
    })
    pick = lambda: pl.Series(rng.integers(0, nv, n_non))  # noqa: E731
    home = pick()
    out_of_state = pl.Series(rng.random(n_non) < 0.3)
    state_prefixes = set(zip_all.str.slice(0, 3).unique().drop_nulls().to_list())
    other = np.array([p for p in range(100, 1000) if f"{p:03d}" not in state_prefixes])
    other_zip = pl.Series(other[rng.integers(0, len(other), n_non)] * 100
                          + rng.integers(0, 100, n_non)).cast(pl.String).str.zfill(5)
    non = pl.DataFrame({
        "person_id": pl.Series(nv + np.arange(n_non), dtype=pl.Int64),
        "voter_id": pl.Series([None] * n_non, dtype=pl.String),
        "first": voters["first_name"].gather(pick()),
        "last": voters["last_name"].gather(pick()),
        "dob": _shift_days(dob_all.gather(pick()), rng.integers(-400, 400, n_non)),
        "house": pl.Series(rng.integers(1, 9000, n_non)).cast(pl.String),
        "street": voters["street"].gather(home),
        "unit": pl.Series([None] * n_non, dtype=pl.String),
        "zip5": pl.select(pl.when(out_of_state).then(other_zip).otherwise(zip_all.str.slice(0, 5).gather(home))).to_series(),
        "zip4": pl.Series([None] * n_non, dtype=pl.String),
        "phone": pl.Series([None] * n_non, dtype=pl.String),
    })
    people = pl.concat([reg, non])
    n = len(people)
    mobile = _mobile_numbers(rng, _digits(voters["phone"]).drop_nulls(), n)
    keep_voter_phone = pl.Series(rng.random(n) < 0.7) & people["phone"].is_not_null()
    phone = pl.select(pl.when(keep_voter_phone).then(people["phone"]).otherwise(mobile)).to_series()
    year = people["dob"].dt.year().fill_null(1980)
    both = _unique_emails(rng, pl.concat([
        _emails(rng, people["first"], people["last"], year),
        _emails(rng, people["first"], people["last"], year),
    ]))
    return people.with_columns(phone=phone, email=both.head(n), email_alt=both.tail(n))


# ---------------------------------------------------------------------------
# Modifications (all on upper-case values, before formatting)


def _choose_modifications(profile: NoiseProfile, n: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean matrix rows x MODIFICATIONS: which modification each row should get."""
    rates = profile.rates()
    if profile.max_modifications == 0:
        return rng.random((n, len(rates))) < rates
    noisy = rng.random(n) < profile.noisy_share
    k = rng.integers(1, profile.max_modifications + 1, n) * noisy
    with np.errstate(divide="ignore"):
        keys = np.log(rates) - np.log(-np.log(rng.random((n, len(rates)))))  # Gumbel top-k
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    return rank < k[:, None]


def _edit(s: pl.Expr, op: pl.Expr, u: pl.Expr, letter: pl.Expr) -> pl.Expr:
    """One character edit: op 0 insert, 1 delete, 2 substitute, 3 transpose."""
    length = s.str.len_chars()
    pos = pl.min_horizontal((u * length).floor().cast(pl.Int64), length - 1)
    tpos = pl.max_horizontal(pl.min_horizontal(pos, length - 2), 0)
    return (
        pl.when(op == 0).then(s.str.slice(0, pos) + letter + s.str.slice(pos))
        .when((op == 1) & (length > 1)).then(s.str.slice(0, pos) + s.str.slice(pos + 1))
        .when(op == 2).then(s.str.slice(0, pos) + letter + s.str.slice(pos + 1))
        .otherwise(s.str.slice(0, tpos) + s.str.slice(tpos + 1, 1) + s.str.slice(tpos, 1)
                   + s.str.slice(tpos + 2))
    )


def _variants(names: pl.Series) -> pl.DataFrame:
    """Nicknames and formal forms per distinct first name (one lookup per distinct value)."""
    nn = NickNamer()
    distinct = names.drop_nulls().unique().sort().to_list()
    variants = []
    for name in distinct:
        low = name.lower()
        alts = (nn.nicknames_of(low) | nn.canonicals_of(low)) - {low}
        variants.append(sorted(a.upper() for a in alts if a.isalpha() and len(a) > 1))
    return pl.DataFrame({"first": distinct, "variants": variants},
                        schema={"first": pl.String, "variants": pl.List(pl.String)})


def _apply_modifications(df: pl.DataFrame, want: np.ndarray, rng: np.random.Generator,
                         pool: pl.DataFrame) -> pl.DataFrame:
    """Apply the chosen modifications; the `noise` list column records those that changed something."""
    n = len(df)
    w = {m: pl.Series(want[:, i]) for i, m in enumerate(MODIFICATIONS)}
    tags: list[pl.Expr] = []

    def done(tag: str, changed: pl.Expr) -> None:
        nonlocal df
        df = df.with_columns(pl.when(changed.fill_null(False)).then(pl.lit(tag)).alias(f"_t_{tag}"))
        tags.append(pl.col(f"_t_{tag}"))

    # moved: another address of the state (a random pool person's).
    src = pl.Series(rng.integers(0, len(pool), n))
    moved = pool.select("house", "street", "unit", "zip5", "zip4")[src]
    differs = (moved["street"] != df["street"]) | (moved["house"] != df["house"])
    df = df.with_columns(_moved=w["moved"] & differs.fill_null(True))
    df = df.with_columns(
        pl.when(pl.col("_moved")).then(moved[c]).otherwise(pl.col(c)).alias(c)
        for c in ("house", "street", "unit", "zip5", "zip4")
    )
    done("moved", pl.col("_moved"))

    # nickname
    df = df.join(_variants(df["first"]), on="first", how="left", maintain_order="left")
    nvar = pl.col("variants").list.len().fill_null(0)
    pick = (pl.Series(rng.random(n)) * nvar).floor().cast(pl.Int64)
    df = df.with_columns(_nick=w["nickname"] & (nvar > 0))
    df = df.with_columns(first=pl.when(pl.col("_nick")).then(pl.col("variants").list.get(pick, null_on_oob=True))
                         .otherwise(pl.col("first")))
    done("nickname", pl.col("_nick"))

    # phonetic: one sound-alike rewrite of the last (60%) or first name
    on_last = pl.Series(rng.random(n) < 0.6)
    target = pl.when(on_last).then(pl.col("last")).otherwise(pl.col("first"))
    has = np.column_stack([df.select(target.str.contains(p, literal=True).fill_null(False)).to_series().to_numpy()
                           for p, _ in T.PHONETIC_RULES])
    rule = pl.Series(np.argmax(has * rng.random(has.shape), axis=1))
    rewritten = pl.when(rule == 0).then(target.str.replace(*T.PHONETIC_RULES[0], literal=True))
    for i, (p, r) in enumerate(T.PHONETIC_RULES[1:], 1):
        rewritten = rewritten.when(rule == i).then(target.str.replace(p, r, literal=True))
    df = df.with_columns(_ph=w["phonetic"] & pl.Series(has.any(axis=1)), _new=rewritten.otherwise(target))
    df = df.with_columns(
        last=pl.when(pl.col("_ph") & on_last).then(pl.col("_new")).otherwise(pl.col("last")),
        first=pl.when(pl.col("_ph") & ~on_last).then(pl.col("_new")).otherwise(pl.col("first")),
    )
    done("phonetic", pl.col("_ph"))

    # typo: one character edit in first name, last name or street
    field = rng.integers(0, 3, n)
    field = np.where((field == 2) & ~df["has_address"].to_numpy(), 1, field)
    op = pl.Series(rng.integers(0, 4, n))
    u = pl.Series(rng.random(n))
    letter = pl.Series(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")).gather(pl.Series(rng.integers(0, 26, n)))
    changed = []
    for i, col in enumerate(("first", "last", "street")):
        hit = w["typo"] & pl.Series(field == i)
        new = _edit(pl.col(col), op, u, letter)
        df = df.with_columns(_old=pl.col(col)).with_columns(pl.when(hit).then(new).otherwise(pl.col(col)).alias(col))
        changed.append(df.select((pl.col(col) != pl.col("_old")).fill_null(False)).to_series())
    done("typo", pl.lit(changed[0] | changed[1] | changed[2]))

    # swap_names
    df = df.with_columns(_sw=w["swap_names"] & (pl.col("first") != pl.col("last")).fill_null(False))
    df = df.with_columns(
        first=pl.when(pl.col("_sw")).then(pl.col("last")).otherwise(pl.col("first")),
        last=pl.when(pl.col("_sw")).then(pl.col("first")).otherwise(pl.col("last")),
    )
    done("swap_names", pl.col("_sw"))

    # date_error: day/month swap when possible, else one wrong part
    y, m, d = pl.col("dob").dt.year(), pl.col("dob").dt.month(), pl.col("dob").dt.day()
    part = pl.Series(rng.integers(0, 3, n))
    sign = pl.Series(rng.choice([-1, 1], n))
    d28 = pl.min_horizontal(d, 28)
    wrong = (
        pl.when((d <= 12) & (d != m)).then(pl.date(y, d, m))
        .when(part == 0).then(pl.col("dob") + pl.duration(days=sign * pl.Series(rng.integers(1, 4, n))))
        .when(part == 1).then(pl.date(y, (m - 1 + sign + 12) % 12 + 1, d28))
        .otherwise(pl.date(y + sign, m, d28))
    )
    df = df.with_columns(_de=w["date_error"] & pl.col("has_dob"))
    df = df.with_columns(dob=pl.when(pl.col("_de")).then(wrong).otherwise(pl.col("dob")))
    done("date_error", pl.col("_de"))

    # missing: blank one present field
    fields = ("email", "phone", "first", "last", "zip5", "has_address", "has_dob")
    present = np.column_stack([
        df.select(pl.col(f) if f.startswith("has_") else pl.col(f).is_not_null()).to_series().to_numpy()
        for f in fields
    ])
    blank = np.argmax(present * rng.random(present.shape), axis=1)
    blank = np.where(want[:, MODIFICATIONS.index("missing")] & present.any(axis=1), blank, -1)
    df = df.with_columns(
        (pl.when(pl.Series(blank == i)).then(pl.lit(False) if f.startswith("has_") else None)
         .otherwise(pl.col(f))).alias(f)
        for i, f in enumerate(fields)
    )
    done("missing", pl.lit(pl.Series(blank >= 0)))

    return df.with_columns(noise=pl.concat_list(tags).list.drop_nulls()).drop(
        "variants", "_old", "_new", "_moved", "_nick", "_ph", "_sw", "_de",
        *(f"_t_{m}" for m in MODIFICATIONS))


# ---------------------------------------------------------------------------
# Formatting (cosmetic noise)


def _format(df: pl.DataFrame, profile: NoiseProfile, list_index: int,
            rng: np.random.Generator) -> pl.DataFrame:
    """Turn working columns into the partner list's text columns, with cosmetic noise."""
    n = len(df)
    r = lambda: pl.Series(rng.random(n))  # noqa: E731
    case_row, case_up = r() < profile.case, r() < 0.5
    space_row = r() < profile.whitespace

    def name(col: str) -> pl.Expr:
        title = pl.col(col).str.to_titlecase()
        cased = (pl.when(case_row & case_up).then(pl.col(col))
                 .when(case_row).then(pl.col(col).str.to_lowercase()).otherwise(title))
        return pl.when(space_row).then(pl.lit(" ") + cased + "  ").otherwise(cased)

    local, domain = pl.col("email").str.split_exact("@", 1).struct.field("field_0"), \
        pl.col("email").str.split_exact("@", 1).struct.field("field_1")
    plain = local.str.replace_all(".", "", literal=True)
    dot_at = pl.max_horizontal(pl.lit(1), (r() * plain.str.len_chars()).floor().cast(pl.Int64))
    dotted = plain.str.slice(0, dot_at) + "." + plain.str.slice(dot_at)
    local = pl.when((domain == "gmail.com") & (r() < profile.gmail_dots) & (plain.str.len_chars() > 1)) \
        .then(dotted).otherwise(local)
    tag = pl.Series(list(T.PLUS_TAGS)).gather(pl.Series(rng.integers(0, len(T.PLUS_TAGS), n)))
    local = pl.when(r() < profile.plus_tag).then(local + "+" + tag).otherwise(local)
    email = local + "@" + domain
    email = pl.when(case_row).then(email.str.to_titlecase()).otherwise(email)
    email = pl.when(space_row).then(email + " ").otherwise(email)

    p = pl.col("phone")
    a, b, c = p.str.slice(0, 3), p.str.slice(3, 3), p.str.slice(6, 4)
    fmt = pl.Series(np.where(rng.random(n) < 0.7, list_index % _PHONE_FORMATS,
                             rng.integers(0, _PHONE_FORMATS, n)))
    phone = (pl.when(fmt == 0).then(p).when(fmt == 1).then("(" + a + ") " + b + "-" + c)
             .when(fmt == 2).then(a + "-" + b + "-" + c).when(fmt == 3).then("+1 " + a + " " + b + " " + c)
             .otherwise(a + "." + b + "." + c))

    zip_ = pl.when(pl.col("zip4").is_not_null() & (pl.col("zip4") != "") & (r() < 0.25)) \
        .then(pl.col("zip5") + "-" + pl.col("zip4")).otherwise(pl.col("zip5"))

    street = pl.col("street")
    last_word = street.str.extract(r"(\w+)$")
    long = last_word.replace_strict(dict(zip(T.STREET_TYPES, T.STREET_TYPE_LONG)), default=last_word)
    street = pl.when(r() < 0.25).then(street.str.replace(r"\w+$", "") + long).otherwise(street)
    unit_no = pl.col("unit").str.extract(r"(\w+)$")
    unit_kind = pl.Series(rng.integers(0, 3, n))
    unit = (pl.when(unit_kind == 0).then(" Apt " + unit_no).when(unit_kind == 1).then(" #" + unit_no)
            .otherwise(" Unit " + unit_no))
    address = pl.col("house") + pl.when(space_row).then(pl.lit("  ")).otherwise(pl.lit(" ")) \
        + street.str.to_titlecase() + unit.fill_null("")
    address = pl.when(case_row).then(address.str.to_uppercase()).otherwise(address)

    date_format = _DATE_FORMATS[list_index % len(_DATE_FORMATS)]
    return df.select(
        email=email,
        phone=phone,
        first_name=name("first"),
        last_name=name("last"),
        zip=zip_,
        address=pl.when(pl.col("has_address")).then(address),
        dob=pl.when(pl.col("has_dob")).then(pl.col("dob").dt.to_string(date_format)),
    )


# ---------------------------------------------------------------------------


def generate_partners(
    voters: pl.DataFrame,
    m: int = 3,
    *,
    sizes: int | Sequence[int] = 10_000,
    overlap: float = 0.3,
    registered_share: float = 0.8,
    seed: int,
    profile: Literal["default", "hard"] | NoiseProfile = "default",
    noise: Mapping[str, float] | None = None,
    names: Sequence[str] | None = None,
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    """`m` noisy partner lists drawn from `voters` and people not in it, plus ground truth.

    Each list samples uniformly from one pool of persons whose size is chosen so
    that a list of average size finds about `overlap` of its persons in another
    list; `registered_share` of the pool are voters. Returns (lists, truth),
    both keyed by list name: lists have the `PARTNER_COLUMNS`; truth has `row`
    (1-based data row of the list), `person_id` (voter row index for voters,
    beyond the file's length for others), `voter_id` (null when not in the
    file) and `noise` (the semantic modifications the row carries).
    """
    missing = {"voter_id", "first_name", "last_name", "house_number", "street", "unit", "zip",
               "phone"} - set(voters.columns)
    if missing:
        raise InputError(f"the voter file lacks columns: {', '.join(sorted(missing))}")
    sizes = [sizes] * m if isinstance(sizes, int) else list(sizes)
    names = list(names) if names is not None else [f"partner{i + 1}" for i in range(m)]
    if m < 1 or len(sizes) != m or len(names) != m or len(set(names)) != m:
        raise InputError("give one size and one distinct name per list")
    if min(sizes) < 1 or not 0 < overlap <= 1 or not 0 <= registered_share <= 1:
        raise InputError("sizes must be positive, overlap in (0, 1], registered share in [0, 1]")
    prof = noise_profile(profile, noise)
    rng = np.random.default_rng([seed, 2])

    pool_size = max(max(sizes), round(np.mean(sizes) / overlap))
    n_reg = min(round(pool_size * registered_share), len(voters))
    pool = _people(voters, n_reg, pool_size - n_reg, rng)

    lists, truth = {}, {}
    for i, name in enumerate(names):
        chosen = rng.choice(len(pool), sizes[i], replace=False)
        dups = rng.choice(chosen, rng.binomial(sizes[i], prof.duplicate))
        rows = np.concatenate([chosen, dups])
        order = rng.permutation(len(rows))
        rows, is_dup = rows[order], (np.arange(len(rows)) >= len(chosen))[order]
        n = len(rows)
        df = pool[pl.Series(rows)]
        use_alt = pl.Series(rng.random(n) < prof.alt_email)
        df = df.with_columns(
            email=pl.when(pl.Series(rng.random(n) < prof.email_share))
            .then(pl.when(use_alt).then(pl.col("email_alt")).otherwise(pl.col("email"))),
            phone=pl.when(pl.Series(rng.random(n) < prof.phone_share)).then(pl.col("phone")),
            has_address=pl.Series(rng.random(n) < prof.address_shares[i % len(prof.address_shares)])
            & pl.col("street").is_not_null(),
            has_dob=pl.Series(rng.random(n) < prof.dob_shares[i % len(prof.dob_shares)])
            & pl.col("dob").is_not_null(),
        )
        df = _apply_modifications(df, _choose_modifications(prof, n, rng), rng, pool)
        lists[name] = _format(df, prof, i, rng)
        noise_tags = df["noise"]
        truth[name] = pl.DataFrame({
            "row": pl.Series(np.arange(1, n + 1), dtype=pl.Int64),
            "person_id": df["person_id"],
            "voter_id": df["voter_id"],
            "noise": pl.select(pl.when(pl.Series(is_dup)).then(noise_tags.list.concat(pl.lit(["duplicate"])))
                               .otherwise(noise_tags)).to_series(),
        })
    return lists, truth
