"""Synthetic state voter file: hierarchical geography, households, realistic names.

Everything is drawn as integer index arrays with numpy and turned into strings
once, by gathering from small vocabularies, so 13M rows take minutes, not hours.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from cleanroom.errors import InputError
from cleanroom.synth import _tables as T

AS_OF = date(2025, 11, 4)
"""Reference date of every synthetic file: ages and registrations are relative to it."""

_EPOCH = date(1970, 1, 1)
_AS_OF_DAYS = (AS_OF - _EPOCH).days
_HOUSEHOLD_SIZES = np.array([1, 2, 3, 4, 5, 6])
_HOUSEHOLD_P = np.array([0.34, 0.36, 0.14, 0.10, 0.04, 0.02])
# Adult age brackets (lower bound, upper bound exclusive) and voter shares.
_AGE_BRACKETS = np.array([[18, 25], [25, 35], [35, 45], [45, 55], [55, 65], [65, 75],
                          [75, 85], [85, 100]])
_AGE_P = np.array([0.10, 0.16, 0.16, 0.16, 0.17, 0.14, 0.08, 0.03])
PARTIES = ("DEM", "REP", "UNA", "LIB", "GRE")

VOTER_COLUMNS = (
    "voter_id", "first_name", "middle_name", "last_name", "suffix", "dob", "house_number",
    "street", "unit", "city", "zip", "county", "congressional_district",
    "state_senate_district", "state_house_district", "precinct", "party",
    "registration_date", "turnout_propensity", "phone",
)


def _take(pool: pl.Series | list[str] | tuple[str, ...], idx: np.ndarray) -> pl.Series:
    """Gather strings from a vocabulary by index."""
    pool = pool if isinstance(pool, pl.Series) else pl.Series(list(pool), dtype=pl.String)
    return pool.gather(pl.Series(idx.astype(np.uint32, copy=False)))


def _null_where(s: pl.Series, missing: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.Series(missing)).then(None).otherwise(s)).to_series().alias(s.name)


def _cut(weights: np.ndarray, parts: int) -> np.ndarray:
    """Assign consecutive items to `parts` contiguous groups of about equal weight."""
    cum = np.cumsum(weights) - weights / 2
    return np.minimum((cum / weights.sum() * parts).astype(np.int64), parts - 1)


def _place_names(rng: np.random.Generator, n: int, suffixed: bool) -> list[str]:
    """`n` distinct place names made from surnames (with a town suffix when `suffixed`)."""
    table = T.surnames()
    base = table.names.head(1500).to_list()
    out: dict[str, None] = {}
    while len(out) < n:
        b = base[int(rng.integers(0, len(base)))]
        name = b + T.PLACE_SUFFIXES[int(rng.integers(0, len(T.PLACE_SUFFIXES)))] if suffixed else b
        out.setdefault(name, None)
    return list(out)


def _phone_numbers(rng: np.random.Generator, area: np.ndarray) -> np.ndarray:
    """Ten-digit phone numbers (as integers) in the given area codes."""
    exchange = rng.integers(200, 1000, len(area))
    exchange = np.where(exchange % 100 == 11, exchange + 1, exchange)
    return area.astype(np.int64) * 10_000_000 + exchange * 10_000 + rng.integers(0, 10_000, len(area))


def generate_voters(n: int, *, seed: int, birth_year_only: bool = False,
                    state: str = "NC") -> pl.DataFrame:
    """A synthetic voter file of `n` rows for `state`, deterministic for `seed`.

    Geography is hierarchical (county > congressional/senate/house districts >
    precincts > zip codes > streets); voters live in households that share an
    address and mostly a surname; twins and father/son (JR/SR) pairs exist.
    With `birth_year_only`, `dob` is replaced by `birth_year` and `age` (as of
    `AS_OF`), as in states that publish no birth date.
    """
    if n < 1:
        raise InputError("the number of voter rows must be at least 1")
    if state not in T.STATES:
        raise InputError(f"unknown state code; choose one of {', '.join(sorted(T.STATES))}")
    rng = np.random.default_rng([seed, 1])
    zip_lo, zip_hi, area_codes = T.STATES[state]

    # Geography.
    n_precincts = max(4, n // 1400)
    n_counties = int(np.clip(n // 130_000, 3, 100))
    county_w = 1.0 / np.arange(1, n_counties + 1) ** 0.9
    county_w = rng.permutation(county_w)
    precinct_county = np.repeat(np.arange(n_counties),
                                1 + rng.multinomial(n_precincts - n_counties, county_w / county_w.sum()))
    precinct_w = rng.lognormal(0.0, 0.4, n_precincts)
    cd = _cut(precinct_w, max(2, min(n_precincts // 2, round(n / 760_000))))
    senate = _cut(precinct_w, max(3, min(n_precincts // 2, round(n / 260_000))))
    house = _cut(precinct_w, max(4, min(n_precincts, round(n / 108_000))))
    precinct_in_county = np.arange(n_precincts) - np.searchsorted(precinct_county, precinct_county)
    precinct_names = [f"{c + 1:03d}-{k + 1:03d}" for c, k in zip(precinct_county, precinct_in_county)]
    county_names = _place_names(rng, n_counties, suffixed=False)
    county_area = rng.choice(np.array(area_codes), n_counties)

    # Zip codes: three or more precincts each, never crossing a county; cities own zips.
    span = (zip_hi - zip_lo + 1) * 100
    per_zip = max(3, -(-n_precincts // (span // 2)))
    zip_of_precinct = np.empty(n_precincts, dtype=np.int64)
    zip_county: list[int] = []
    start = 0
    for c in range(n_counties):
        k = int(np.sum(precinct_county == c))
        nz = max(1, k // per_zip)
        zip_of_precinct[start:start + k] = len(zip_county) + np.sort(rng.integers(0, nz, k))
        zip_county.extend([c] * nz)
        start += k
    n_zips = len(zip_county)
    zip_codes = [f"{zip_lo * 100 + z:05d}" for z in np.sort(rng.choice(span, n_zips, replace=False))]
    city_of_zip = np.empty(n_zips, dtype=np.int64)
    n_cities = 0
    zip_county_arr = np.array(zip_county)
    for c in range(n_counties):
        zs = np.flatnonzero(zip_county_arr == c)
        nc = max(1, min(len(zs), 1 + rng.poisson(1.5) + len(zs) // 8))
        city_of_zip[zs] = n_cities + np.sort(rng.integers(0, nc, len(zs)))
        n_cities += nc
    city_names = _place_names(rng, n_cities, suffixed=True)

    # Streets: about 60 voters each, inside one precinct.
    n_streets = max(n_precincts, n // 60)
    street_precinct = np.repeat(np.arange(n_precincts),
                                1 + rng.multinomial(n_streets - n_precincts, precinct_w / precinct_w.sum()))
    vocab = list(T.STREET_NAMES) + list(T.ORDINALS) + T.surnames().names.head(400).to_list()
    street_base = rng.integers(0, len(vocab), n_streets)
    street_type = rng.choice(len(T.STREET_TYPES), n_streets, p=np.array(T.STREET_TYPE_P) / sum(T.STREET_TYPE_P))
    street_dir = np.where(rng.random(n_streets) < 0.15, rng.integers(0, 4, n_streets), -1)
    street_label = (
        pl.when(pl.Series(street_dir >= 0)).then(_take(T.DIRECTIONS, np.maximum(street_dir, 0)) + " ")
        .otherwise(pl.lit(""))
        + _take(vocab, street_base) + " " + _take(T.STREET_TYPES, street_type)
    )
    street_names = pl.select(street_label.alias("s")).to_series()
    street_apartments = rng.random(n_streets) < 0.08
    street_first_number = rng.integers(1, 60, n_streets) * 100 + 1
    street_w = precinct_w[street_precinct] / np.bincount(street_precinct)[street_precinct]
    street_w *= rng.lognormal(0.0, 0.5, n_streets)

    # Households.
    sizes = rng.choice(_HOUSEHOLD_SIZES, n // 2 + 16, p=_HOUSEHOLD_P)
    n_households = int(np.searchsorted(np.cumsum(sizes), n)) + 1
    sizes = sizes[:n_households]
    sizes[-1] -= sizes.sum() - n
    cdf = np.cumsum(street_w)
    hh_street = np.minimum(np.searchsorted(cdf, rng.random(n_households) * cdf[-1]), n_streets - 1)
    hh_number = street_first_number[hh_street] + 2 * rng.integers(0, 250, n_households)
    hh_apartment = street_apartments[hh_street]
    hh_unit = rng.integers(1, 400, n_households)
    hh_zip4 = np.where(rng.random(n_households) < 0.4, rng.integers(1, 10_000, n_households), -1)
    hh_surname = T.surnames().draw(rng, n_households)
    hh_landline = rng.random(n_households) < 0.2

    hh = np.repeat(np.arange(n_households, dtype=np.int32), sizes)
    hh_start = np.cumsum(sizes) - sizes
    member = np.arange(n) - hh_start[hh]
    head = hh_start[hh]

    # People: sex, age, names.
    sex_f = rng.random(n) < 0.52
    spouse = member == 1
    sex_f[spouse] = np.where(rng.random(spouse.sum()) < 0.85, ~sex_f[head[spouse]], sex_f[spouse])
    bracket = rng.choice(len(_AGE_P), n, p=_AGE_P)
    age_days = ((_AGE_BRACKETS[bracket, 0] + rng.random(n) * (_AGE_BRACKETS[bracket, 1]
                                                             - _AGE_BRACKETS[bracket, 0])) * 365.25)
    head_age = age_days[head]
    age_days = np.where(spouse, np.maximum(18 * 365.25, head_age + rng.normal(0, 4 * 365.25, n)), age_days)
    child = member >= 2
    child_age = np.maximum(head_age - rng.uniform(20, 38, n) * 365.25,
                           (18 + rng.random(n) * 12) * 365.25)
    age_days = np.where(child, child_age, age_days)
    dob_days = (_AS_OF_DAYS - age_days).astype(np.int64)
    twin = (member >= 3) & (rng.random(n) < 0.08)
    dob_days[twin] = dob_days[np.flatnonzero(twin) - 1]
    sex_f[twin] = np.where(rng.random(twin.sum()) < 0.5, sex_f[np.flatnonzero(twin) - 1], sex_f[twin])

    female_t, male_t = T.first_names("F"), T.first_names("M")
    names_pool = pl.concat([female_t.names, male_t.names])
    first_idx = np.where(sex_f, female_t.draw(rng, n), len(female_t.names) + male_t.draw(rng, n))
    middle_idx = np.where(sex_f, female_t.draw(rng, n), len(female_t.names) + male_t.draw(rng, n))
    has_middle = rng.random(n) < 0.85

    keep_surname = np.where(member == 0, True, rng.random(n) < np.where(spouse, 0.8, 0.9))
    surname_idx = np.where(keep_surname, hh_surname[hh], T.surnames().draw(rng, n))

    suffix_idx = np.full(n, -1)  # 0 JR, 1 SR, 2 II, 3 III
    r = rng.random(n)
    suffix_idx[~sex_f & (r < 0.012)] = 0
    suffix_idx[~sex_f & (r >= 0.012) & (r < 0.016)] = 2
    suffix_idx[~sex_f & (r >= 0.016) & (r < 0.019)] = 3
    junior = child & ~sex_f & ~sex_f[head] & keep_surname & (rng.random(n) < 0.12)
    first_idx[junior] = first_idx[head[junior]]
    suffix_idx[junior] = 0
    suffix_idx[head[junior]] = 1

    # Households are scattered through the file, like a real export; each column is
    # built in output order and its sources freed, which keeps 13M rows under 8 GB.
    del spouse, child, keep_surname, head_age, child_age, r, junior, bracket, head, member, twin
    order = rng.permutation(n)
    hh = hh[order]
    hh_precinct = street_precinct[hh_street]
    hh_county = precinct_county[hh_precinct]
    county = hh_county[hh]
    voter_ids = np.cumsum(rng.integers(1, 40, n)) + 10_000_000
    cols: dict[str, pl.Series] = {
        "voter_id": pl.select(pl.lit(state) + pl.Series(voter_ids).cast(pl.String).str.zfill(9)).to_series(),
    }
    del voter_ids
    cols["first_name"] = _take(names_pool, first_idx[order])
    del first_idx
    cols["middle_name"] = _null_where(_take(names_pool, middle_idx[order]), ~has_middle[order])
    del middle_idx, has_middle
    cols["last_name"] = _take(T.surnames().names, surname_idx[order])
    del surname_idx
    suffix_idx = suffix_idx[order]
    cols["suffix"] = _null_where(_take(("JR", "SR", "II", "III"), np.maximum(suffix_idx, 0)), suffix_idx < 0)
    del suffix_idx
    dob_days = dob_days[order].astype(np.int32)
    age_years = (age_days[order] / 365.25).astype(np.float32)
    del age_days
    dob = pl.Series(dob_days).cast(pl.Date)
    if birth_year_only:
        cols["birth_year"] = dob.dt.year().cast(pl.Int16)
        cols["age"] = pl.Series(age_years.astype(np.int16))
    else:
        cols["dob"] = dob.dt.to_string("%Y-%m-%d")
    del dob

    cols["house_number"] = pl.Series(hh_number).cast(pl.String).gather(pl.Series(hh))
    cols["street"] = street_names.gather(pl.Series(hh_street[hh]))
    unit = pl.select(pl.when(pl.Series(hh_apartment)).then(
        pl.lit("APT ") + pl.Series(hh_unit).cast(pl.String))).to_series()
    cols["unit"] = unit.gather(pl.Series(hh))
    del unit
    hh_zip = zip_of_precinct[hh_precinct]
    cols["city"] = _take(city_names, city_of_zip[hh_zip][hh])
    zip5 = _take(zip_codes, hh_zip)
    zip_full = pl.select(
        pl.when(pl.Series(hh_zip4 >= 0))
        .then(zip5 + "-" + pl.Series(np.maximum(hh_zip4, 0)).cast(pl.String).str.zfill(4))
        .otherwise(zip5)
    ).to_series()
    cols["zip"] = zip_full.gather(pl.Series(hh))
    del zip5, zip_full
    cols["county"] = _take(county_names, county)
    precinct = hh_precinct[hh]
    for name, district, width in (("congressional_district", cd, 2), ("state_senate_district", senate, 1),
                                  ("state_house_district", house, 1)):
        labels = [f"{i + 1:0{width}d}" for i in range(int(district.max()) + 1)]
        cols[name] = _take(labels, district[precinct])
    cols["precinct"] = _take(precinct_names, precinct)
    del precinct

    # Party (leaning by county), registration, turnout, phone.
    lean_d = rng.uniform(0.20, 0.45, n_counties)[county]
    lean_r = rng.uniform(0.20, 0.42, n_counties)[county] + lean_d
    u = rng.random(n)
    party = np.select([u < lean_d, u < lean_r, u < lean_r + 0.012, u < lean_r + 0.017], [0, 1, 3, 4], 2)
    del lean_d, lean_r, u
    cols["party"] = _take(PARTIES, party)
    del party
    eligible = np.maximum(dob_days + int(18 * 365.25), (date(1972, 1, 1) - _EPOCH).days)
    reg_days = eligible + (rng.random(n) * np.maximum(_AS_OF_DAYS - eligible, 1)).astype(np.int32)
    cols["registration_date"] = pl.Series(reg_days.astype(np.int32)).cast(pl.Date).dt.to_string("%Y-%m-%d")
    del eligible, reg_days, dob_days
    turnout = 1 / (1 + np.exp(-(-0.6 + 0.045 * (age_years - 40) + rng.normal(0, 1.1, n))))
    cols["turnout_propensity"] = pl.Series(np.round(turnout.astype(np.float64), 2))
    del turnout, age_years
    hh_phone = np.where(hh_landline, _phone_numbers(rng, county_area[hh_county]), -1)
    phone = np.where(rng.random(n) < 0.32, _phone_numbers(rng, county_area[county]), hh_phone[hh])
    phones = pl.Series(phone)
    cols["phone"] = pl.select(pl.when(phones >= 0).then(phones.cast(pl.String))).to_series()
    return pl.DataFrame(cols)
