"""Hypothesis properties of the normalizers: idempotent, well-formed, total, distinct-safe."""

from __future__ import annotations

import re

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.normalize import FIELD_TYPES, derive, email_invalid_reason

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
values = st.lists(st.one_of(st.none(), st.text(max_size=40)), min_size=1, max_size=12)

FORMATS = {
    "email": r"[a-z0-9!#$%&'*/=?^_`{|}~.-]+@[a-z0-9.-]+",
    "phone": r"\+[1-9][0-9]{6,15}",
    "zip5": r"[0-9]{5}",
    "dob": r"(19|20)[0-9]{2}-[0-9]{2}-[0-9]{2}",
    "birth_year": r"(19|20)[0-9]{2}",
    "first": r"[a-z]+", "last": r"[a-z]+", "first_canon": r"[a-z]+", "first_phonetic": r"[a-z]+",
    "last_phonetic": r"[a-z]+", "first_initial": r"[a-z]", "middle_initial": r"[a-z]", "state": r"[a-z]{2}",
}
# derived field -> field type that re-normalizes it to itself
IDEMPOTENT = {
    "email": "email", "phone": "phone", "first": "first_name", "last": "last_name", "zip5": "zip",
    "dob": "dob", "birth_year": "birth_year", "value": "generic", "city": "city", "state": "state",
    "street": "street", "house_number": "house_number", "first_canon": "first_name", "street_name": "street",
}


def normalize(field_type: str, items: list) -> pl.DataFrame:
    return pl.DataFrame({"x": items}, schema={"x": pl.String}).select(**derive(field_type, pl.col("x")))


def one_by_one(field_type: str, items: list) -> pl.DataFrame:
    return pl.concat([normalize(field_type, [v]) for v in items])


def everything(items: list) -> pl.DataFrame:
    """Every field type's derived fields, in one select."""
    exprs = {f"{ft}.{name}": e for ft in FIELD_TYPES for name, e in derive(ft, pl.col("x")).items()}
    return pl.DataFrame({"x": items}, schema={"x": pl.String}).select(**exprs)


@SETTINGS
@given(values)
def test_total_and_well_formed(items: list) -> None:
    for field_type in FIELD_TYPES:
        out = normalize(field_type, items)
        assert out.height == len(items)
        for name in out.columns:
            assert out.schema[name] == pl.String
            pattern = FORMATS.get(name)
            for value in out[name].drop_nulls():
                assert value, (field_type, name)
                assert pattern is None or re.fullmatch(pattern, value), (name, value)


@SETTINGS
@given(values)
def test_idempotent(items: list) -> None:
    for field_type in FIELD_TYPES:
        out = normalize(field_type, items)
        for name in out.columns:
            again_type = IDEMPOTENT.get(name)
            if again_type is None:
                continue
            key = "value" if again_type == "generic" else name
            if again_type == "first_name" and name == "first_canon":
                key = "first"  # a canonical name cleans to itself
            again = normalize(again_type, out[name].to_list())[key]
            assert again.to_list() == out[name].to_list(), (field_type, name)


street_lines = st.lists(st.one_of(
    st.none(),
    st.text(max_size=40),
    st.lists(st.sampled_from(["n", "North", "sw", "Main", "E", "St", "Street", "ave", "Avenue", "Oak", "12", "12th",
                              "Apt 4", "#5", "Park", "W", "of", "the", "Way", "Americas", "Ct"]), max_size=6).map(" ".join),
), min_size=1, max_size=12)


@SETTINGS
@given(street_lines)
def test_street_name_is_idempotent_and_never_longer_than_the_street(items: list) -> None:
    for field_type in ("address", "street"):
        out = normalize(field_type, items)
        again = normalize("street", out["street_name"].to_list())["street_name"]
        assert again.to_list() == out["street_name"].to_list(), field_type
        for street, name in out.select("street", "street_name").iter_rows():
            assert (street is None) == (name is None)
            assert name is None or (len(name) <= len(street) and name in street), (street, name)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.text(max_size=40)), min_size=1, max_size=6))
def test_distinct_mapping_equals_per_value(items: list) -> None:
    doubled = items + items[::-1]
    assert everything(doubled).equals(pl.concat([everything([v]) for v in doubled]))


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.emails(), st.text(max_size=30)), min_size=1, max_size=20))
def test_email_reason_iff_null(items: list) -> None:
    frame = pl.DataFrame({"x": items}, schema={"x": pl.String})
    out = frame.select(e=derive("email", pl.col("x"))["email"], r=email_invalid_reason(pl.col("x")))
    assert (out["e"].is_null() == out["r"].is_not_null()).all()


@SETTINGS
@given(st.lists(st.from_regex(r"\A\+?[0-9 ().-]{7,20}\Z"), min_size=1, max_size=20))
def test_phone_like_inputs(items: list) -> None:
    out = normalize("phone", items)["phone"]
    assert out.to_list() == one_by_one("phone", items)["phone"].to_list()
    again = normalize("phone", out.to_list())["phone"]
    assert again.to_list() == out.to_list()


@SETTINGS
@given(st.dates())
def test_dob_formats_agree(day) -> None:
    shapes = [day.isoformat(), day.strftime("%m/%d/%Y"), f"{day.month}/{day.day}/{day.year:04d}",
              day.strftime("%Y%m%d"), day.strftime("%d.%m.%Y"), day.strftime("%m-%d-%Y")]
    out = normalize("dob", shapes)["dob"].to_list()
    expected = day.isoformat() if 1901 <= day.year <= 2099 else None
    assert out == [expected] * len(shapes)
