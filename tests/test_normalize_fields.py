"""Unit and golden-vector tests for cleanroom.normalize."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import phonenumbers
import polars as pl
import pytest

from cleanroom.errors import SpecError
from cleanroom.normalize import FAMILIES, FIELD_TYPES, derive, email_invalid_reason, versions
from cleanroom.normalize.names import canonical_table

VECTORS = json.loads((Path(__file__).parent / "vectors" / "normalize.json").read_text(encoding="utf-8"))


def run(field_type: str, values: list, dtype: pl.DataType = pl.String, **kw: str) -> dict[str, list]:
    frame = pl.DataFrame({"x": values}, schema={"x": dtype})
    return frame.select(**derive(field_type, pl.col("x"), **kw)).to_dict(as_series=False)


def test_field_types_contract() -> None:
    for field_type, derived in FIELD_TYPES.items():
        exprs = derive(field_type, pl.col("x"))
        assert tuple(exprs) == (derived or ("value",))
        assert FAMILIES[field_type] in versions()
    with pytest.raises(SpecError):
        derive("shoe_size", pl.col("x"))


@pytest.mark.parametrize("field_type", [ft for ft in VECTORS["field_types"] if ft != "email_invalid_reason"])
def test_golden_vectors(field_type: str) -> None:
    spec = VECTORS["field_types"][field_type]
    assert VECTORS["versions"][spec["family"]] == versions()[spec["family"]], "vectors belong to another version"
    got = run(field_type, [c["input"] for c in spec["cases"]])
    for i, case in enumerate(spec["cases"]):
        assert {k: got[k][i] for k in case["expected"]} == case["expected"], case["input"]


def test_golden_vectors_email_reason() -> None:
    cases = VECTORS["field_types"]["email_invalid_reason"]["cases"]
    frame = pl.DataFrame({"x": [c["input"] for c in cases]}, schema={"x": pl.String})
    got = frame.select(email_invalid_reason(pl.col("x"))).to_series().to_list()
    assert got == [c["expected"]["reason"] for c in cases]


def test_outputs_are_strings_without_alias_and_column_independent() -> None:
    frame = pl.DataFrame({"a": ["Bob"], "b": ["x@y.org"]})
    out = frame.select(derive("first_name", pl.col("a"))["first_canon"].alias("c"), derive("email", pl.col("b"))["email"])
    assert out.schema == pl.Schema({"c": pl.String, "b": pl.String})
    assert out.row(0) == ("robert", "x@y.org")


def test_lazy_streaming_matches_eager() -> None:
    frame = pl.DataFrame({
        "e": ["A.B+c@gmail.com", None, "x@y.org"] * 50,
        "p": ["202-456-1111", "+44 20 7946 0958", "bad"] * 50,
        "f": ["Bob", "Liz", None] * 50,
        "z": [2134, None, 12345] * 50,
    })
    exprs = {**derive("email", pl.col("e")), **derive("phone", pl.col("p")), **derive("first_name", pl.col("f")),
             **derive("zip", pl.col("z"))}
    eager = frame.select(**exprs)
    streamed = frame.lazy().select(**exprs).collect(engine="streaming")
    assert eager.equals(streamed)


def test_email_rules() -> None:
    got = run("email", ["MAILTO:First.Last+promo@googlemail.com", "first.last@Gmail.com", "a.b+c@fastmail.com",
                        "user@sub.example.co.uk", "user@localhost", "us er@x.org", "ü@x.org", "a" * 65 + "@x.org"])
    assert got["email"] == ["firstlast@gmail.com", "firstlast@gmail.com", "a.b@fastmail.com",
                            "user@sub.example.co.uk", None, None, None, None]


def test_email_reason_counts_every_invalid() -> None:
    values = ["ok@x.org", "", "nope", "a@b@c.org", "a..b@x.org", "a@x..org", None]
    frame = pl.DataFrame({"x": values}).select(e=derive("email", pl.col("x"))["email"], r=email_invalid_reason(pl.col("x")))
    assert frame["r"].to_list() == [None, "missing", "no_at", "multiple_at", "bad_local", "bad_domain", "missing"]
    assert (frame["e"].is_null() == frame["r"].is_not_null()).all()


def test_phone_regions_and_types() -> None:
    assert run("phone", [2024561111, 12024561111], dtype=pl.Int64)["phone"] == ["+12024561111"] * 2
    assert run("phone", ["020 7946 0958", "+1 (202) 456-1111"], default_region="GB")["phone"] == [
        "+442079460958", "+12024561111"]
    assert run("phone", ["(416) 967-1111 x12"], default_region="CA")["phone"] == ["+14169671111"]
    assert run("phone", ["011 44 20 7946 0958", "+999 1234"])["phone"] == ["+442079460958", None]
    with pytest.raises(SpecError):
        derive("phone", pl.col("x"), default_region="ZZ")


def test_phone_fast_path_agrees_with_phonenumbers() -> None:
    """The polars NANP check must equal phonenumbers.is_valid_number on ten-digit numbers."""
    import random

    rnd = random.Random(7)
    numbers = [f"{rnd.randrange(10**9, 10**10):010d}" for _ in range(4000)]
    numbers += [f"{npa}{rnd.randrange(2, 10)}{rnd.randrange(10**5, 10**6)}" for npa in range(200, 1000)]
    got = run("phone", numbers)["phone"]
    for number, value in zip(numbers, got):
        parsed = phonenumbers.parse(number, "US")
        expected = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) \
            if phonenumbers.is_valid_number(parsed) else None
        assert value == expected, number


def test_names_titles_suffixes_and_folding() -> None:
    got = run("last_name", ["  MR. SMITH-JONES, JR. ", "O’Neil", "Van der Berg", "Dr", "Ng II"])
    assert got["last"] == ["smithjones", "oneil", "vanderberg", "dr", "ng"]
    got = run("first_name", ["Mrs. Élodie", "JOHN Q", "A. J.", "Ms. Katie-Lynn"])
    assert got["first"] == ["elodie", "john", "a", "katielynn"]
    assert got["first_initial"] == ["e", "j", "a", "k"]


def test_nicknames_share_a_canonical() -> None:
    groups = [["Bob", "Rob", "Bobby", "Robert"], ["Bill", "Will", "William"], ["Mike", "Michael"],
              ["Dick", "Rick", "Richard"], ["Peggy", "Maggie", "Margaret"], ["Liz", "Beth", "Elizabeth"]]
    for group in groups:
        assert len(set(run("first_name", group)["first_canon"])) == 1, group


def test_canonical_table_is_idempotent() -> None:
    table = canonical_table()
    assert all(table.get(v, v) == v for v in table.values())


def test_dates_from_typed_columns() -> None:
    assert run("dob", [datetime.date(1975, 12, 31)], dtype=pl.Date)["dob"] == ["1975-12-31"]
    assert run("dob", [datetime.datetime(1975, 12, 31, 8)], dtype=pl.Datetime)["dob"] == ["1975-12-31"]
    assert run("dob", [19751231], dtype=pl.Int64)["birth_year"] == ["1975"]
    assert run("birth_year", [1975.0, 75.0], dtype=pl.Float64)["birth_year"] == ["1975", None]
    assert run("dob", ["13/01/1980", "2/29/2001", "2/29/2000"])["dob"] == [None, None, "2000-02-29"]


def test_zip_from_integers() -> None:
    assert run("zip", [2134, 501, 21340000, 123456], dtype=pl.Int64)["zip5"] == ["02134", "00501", "02134", None]
