"""Frequency tables and vocabularies for the synthetic generators.

Name frequencies come from the U.S. Census Bureau's 1990 name files (public
domain), cut to the most common names; a synthetic tail of rare surnames
carries the remaining mass so that uncommon names stay uncommon.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import polars as pl


@dataclass(frozen=True)
class NameTable:
    """Names (upper case) and their probabilities, summing to 1."""

    names: pl.Series
    p: np.ndarray

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Indices into `names` drawn with the table's frequencies."""
        cdf = np.cumsum(self.p)
        return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), len(self.p) - 1)


def _read(name: str) -> pl.DataFrame:
    data = resources.files("cleanroom.data").joinpath(name).read_bytes()
    return pl.read_csv(data, schema={"name": pl.String, "per100k": pl.Int64})


_ONSETS = ("B", "BR", "C", "CH", "D", "F", "G", "GR", "H", "J", "K", "L", "M", "N", "P",
           "R", "S", "ST", "T", "TR", "V", "W", "Z", "KR", "SH", "PL")
_VOWELS = ("A", "E", "I", "O", "U", "AI", "EA", "OU", "IE", "Y")
_MIDDLES = ("", "L", "N", "R", "RR", "LL", "ND", "ST", "M", "K", "TT", "SS", "V", "RD")
_ENDINGS = ("SON", "MAN", "ER", "SKI", "EZ", "LEY", "TON", "BERG", "ELLI", "OVA", "EN",
            "INSKI", "ARD", "ING", "ETTE", "OWSKI", "ES", "IAN", "WELL", "STEIN", "O", "A")


def _synthetic_surnames(count: int) -> list[str]:
    rng = np.random.default_rng(1990)
    parts = [np.array(p, dtype=object) for p in (_ONSETS, _VOWELS, _MIDDLES, _ENDINGS)]
    seen: dict[str, None] = {}
    while len(seen) < count:
        picks = [p[rng.integers(0, len(p), count)] for p in parts]
        for name in picks[0] + picks[1] + picks[2] + picks[3]:
            seen.setdefault(name, None)
    return list(seen)[:count]


@cache
def surnames() -> NameTable:
    """Common real surnames plus a Zipf-like tail of synthetic rare ones."""
    real = _read("synth_surnames.csv")
    real_p = real["per100k"].to_numpy() / 100_000
    known = set(real["name"].to_list())
    tail = [n for n in _synthetic_surnames(60_000) if n not in known]
    tail_w = 1.0 / np.arange(50, 50 + len(tail)) ** 0.8
    tail_p = tail_w / tail_w.sum() * max(0.0, 1.0 - real_p.sum())
    names = pl.concat([real["name"], pl.Series("name", tail)])
    p = np.concatenate([real_p, tail_p])
    return NameTable(names, p / p.sum())


@cache
def first_names(sex: str) -> NameTable:
    """First names for `sex` in ("F", "M")."""
    df = _read("synth_first_female.csv" if sex == "F" else "synth_first_male.csv")
    p = df["per100k"].to_numpy().astype(float)
    return NameTable(df["name"], p / p.sum())


STREET_NAMES = (
    "MAIN", "OAK", "PINE", "MAPLE", "CEDAR", "ELM", "WASHINGTON", "LAKE", "HILL", "PARK",
    "WALNUT", "CHESTNUT", "SPRUCE", "WILLOW", "CHERRY", "MAGNOLIA", "DOGWOOD", "HICKORY",
    "SYCAMORE", "BIRCH", "ASH", "POPLAR", "LAUREL", "HOLLY", "RIVER", "SPRING", "MILL",
    "CHURCH", "SCHOOL", "MARKET", "UNION", "CENTER", "HIGHLAND", "RIDGE", "FOREST", "MEADOW",
    "VALLEY", "SUNSET", "LINCOLN", "JEFFERSON", "MADISON", "FRANKLIN", "JACKSON", "ADAMS",
    "MONROE", "HAMILTON", "WILSON", "GRANT", "KING", "COLLEGE", "COUNTRY CLUB", "FAIRVIEW",
    "GREENWOOD", "BROOKSIDE", "CREEKSIDE", "WOODLAND", "LAKEVIEW", "HILLCREST", "PLEASANT",
    "PROSPECT", "VIRGINIA", "CAROLINA", "OLD MILL", "STATION", "RAILROAD", "BRIDGE",
    "HARBOR", "BAY", "OCEAN", "SHORE", "TIMBER", "STONEY CREEK", "FOX RUN", "QUAIL HOLLOW",
    "DEER PARK", "EAGLE", "HAWK", "CARDINAL", "BLUEBIRD", "ROSE", "IVY", "LIBERTY",
    "INDEPENDENCE", "HERITAGE", "PATRIOT", "PEACHTREE", "ORCHARD", "VINEYARD", "MEADOWBROOK",
    "KENSINGTON", "WINDSOR", "BRISTOL", "DOVER", "SALEM", "TRINITY", "MOUNT VERNON",
)
ORDINALS = tuple(
    f"{i}{'TH' if 10 <= i % 100 <= 20 else {1: 'ST', 2: 'ND', 3: 'RD'}.get(i % 10, 'TH')}"
    for i in range(1, 60)
)
STREET_TYPES = ("ST", "AVE", "RD", "DR", "LN", "CT", "BLVD", "WAY", "PL", "CIR", "TRL", "PKWY")
STREET_TYPE_P = (0.26, 0.15, 0.16, 0.15, 0.09, 0.07, 0.03, 0.03, 0.02, 0.02, 0.01, 0.01)
STREET_TYPE_LONG = ("STREET", "AVENUE", "ROAD", "DRIVE", "LANE", "COURT", "BOULEVARD", "WAY",
                    "PLACE", "CIRCLE", "TRAIL", "PARKWAY")
DIRECTIONS = ("N", "S", "E", "W")
PLACE_SUFFIXES = ("VILLE", "TON", "BORO", "FIELD", "WOOD", " SPRINGS", " FALLS", " HILL",
                  "BURG", " CITY", " GROVE", " CREEK", "FORD", "DALE", " HEIGHTS", " JUNCTION")

# State code -> (first 3-digit zip prefix, last prefix, area codes).
STATES: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "NC": (270, 289, (252, 336, 704, 743, 828, 910, 919, 980, 984)),
    "PA": (150, 196, (215, 267, 412, 484, 570, 610, 717, 724, 814)),
    "GA": (300, 319, (229, 404, 470, 478, 678, 706, 762, 770, 912)),
    "OH": (430, 458, (216, 234, 330, 380, 419, 440, 513, 567, 614, 740, 937)),
    "MI": (480, 499, (231, 248, 269, 313, 517, 586, 616, 734, 810, 906, 947, 989)),
    "WI": (530, 549, (262, 414, 534, 608, 715, 920)),
    "AZ": (850, 865, (480, 520, 602, 623, 928)),
    "NV": (889, 898, (702, 725, 775)),
}

EMAIL_PROVIDERS = (
    "gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com",
    "comcast.net", "att.net", "verizon.net", "sbcglobal.net", "charter.net", "cox.net",
    "me.com", "live.com", "msn.com", "protonmail.com", "bellsouth.net", "earthlink.net",
)
EMAIL_PROVIDER_P = (0.42, 0.14, 0.07, 0.07, 0.07, 0.04, 0.03, 0.03, 0.02, 0.02, 0.015, 0.015,
                    0.01, 0.01, 0.01, 0.01, 0.01, 0.01)
PLUS_TAGS = ("news", "vote", "rally", "donate", "list", "union", "2024", "action", "info")

# Uppercase phonetic rewrites (pattern, replacement), first occurrence only.
PHONETIC_RULES = (
    ("PH", "F"), ("F", "PH"), ("CK", "K"), ("C", "K"), ("K", "C"), ("Y", "I"), ("IE", "Y"),
    ("EI", "IE"), ("OU", "OW"), ("TH", "T"), ("SCH", "SH"), ("Z", "S"), ("S", "Z"),
    ("EE", "EA"), ("AE", "E"), ("LL", "L"), ("TT", "T"), ("NN", "N"), ("SS", "S"),
    ("MM", "M"), ("QU", "KW"), ("X", "KS"), ("GH", "G"), ("A", "E"), ("O", "U"), ("I", "E"),
)
