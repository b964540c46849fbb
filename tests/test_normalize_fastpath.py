"""The fast paths of the normalizers give what the plain per-value expressions give."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.normalize import FIELD_TYPES, derive, email, generic, phone

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
values = st.lists(st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["Bob", " bob ", "BOB", "", "02134"])),
                  min_size=1, max_size=30)


def everything(items: list) -> pl.DataFrame:
    exprs = {f"{ft}.{name}": e for ft in FIELD_TYPES for name, e in derive(ft, pl.col("x")).items()}
    return pl.DataFrame({"x": items}, schema={"x": pl.String}).select(**exprs)


@SETTINGS
@given(values)
def test_hash_collisions_never_change_a_result(items: list) -> None:
    expected = everything(items)
    generic._RECENT.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(generic, "_row_hash", lambda s: pl.Series([7] * s.len(), dtype=pl.UInt64))
        assert everything(items).equals(expected)
        assert everything(items[::-1]).equals(expected.reverse())
    generic._RECENT.clear()


@SETTINGS
@given(values, values)
def test_cached_encodings_belong_to_their_column(a: list, b: list) -> None:
    n = min(len(a), len(b))
    frame = pl.DataFrame({"a": a[:n], "b": b[:n]}, schema={"a": pl.String, "b": pl.String})
    exprs = {f"{c}.{ft}.{name}": e for c in "ab" for ft in ("first_name", "last_name", "dob", "zip")
             for name, e in derive(ft, pl.col(c)).items()}
    together = frame.select(**exprs)
    generic._RECENT.clear()
    for c in "ab":
        alone = frame.select(**{k: e for k, e in exprs.items() if k.startswith(f"{c}.")})
        assert together.select(alone.columns).equals(alone)


def test_distinct_codes_round_trip() -> None:
    s = pl.Series(["b", None, "a", "b", "", None, "a"])
    values, codes = generic.distinct_codes(s)
    assert values.n_unique() == values.len() == 4
    assert values.gather(codes).eq_missing(s).all()
    values, codes = generic._exact_codes(s)
    assert values.gather(codes).eq_missing(s).all()


def test_float_zero_signs_are_values_of_their_own() -> None:
    frame = pl.DataFrame({"x": [0.0, -0.0, -0.0, 0.0]})
    out = frame.select(derive("generic", pl.col("x"))["value"]).to_series().to_list()
    assert out == ["0.0", "-0.0", "-0.0", "0.0"]


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.emails(), st.text(max_size=30),
                          st.builds(lambda a, b, c: f"{a} MailTo:<{b}+{c}@GoogleMail.COM> ",
                                    st.sampled_from(["", " ", "\t"]), st.text(max_size=8), st.text(max_size=8))),
                min_size=1, max_size=30))
def test_email_single_pattern_equals_stepwise_rules(items: list) -> None:
    raw = pl.Series("x", items, dtype=pl.String)
    assert email._canonical(raw).equals(email._frame(raw)["email"].alias("x"))


def test_email_edges_equal_stepwise_rules() -> None:
    items = [
        None, "", " ", "\x0b a@b.com \x0c", "\r\na@b.com\n", "a+\n@x.com", "MAILTO:A@B.COM", "<<a@b.com>>",
        "mailto:mailto:a@b.com", " <mailto:a@b.com>", "a.b+c.d@googlemail.com", "a.b+c+d@GMAIL.com",
        "a@gmail.com.evil.org", "x" * 64 + "@b.com", "x" * 65 + "@b.com", "x" * 60 + "+" + "y" * 20 + "@b.com",
        "x@" + "b" * 60 + ".com", "a@" + ("b" * 63 + ".") * 4 + "com", "é@b.com", "a+é@b.com", "Ａ@b.com",
        "a@b.c0m", "a@-b.com", ".a@b.com", "a.@b.com", "a..b@gmail.com", "+a@b.com", "a@b@c.com", "a@",
        "Jane <a@b.com>", "<mailto:a@b.com>", "<>", "a<b <c@d.com>", "< mailto:a@b.com>", "<a>b>", "Jane <a@b.com> x",
        "a@b.com>", "Jane Doe <\tJ.D@GMAIL.com >",
    ]
    raw = pl.Series("x", items, dtype=pl.String)
    assert email._canonical(raw).equals(email._frame(raw)["email"].alias("x"))


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.text(alphabet="aB.+@<> \t\x0b\r\nmailto:gcé", max_size=20),
                          st.builds(lambda a, b: f"{a}@{b}", st.text("aZ.+-_é\n", max_size=70),
                                    st.sampled_from(["gmail.com", "GoogleMail.com", "x.org", "b", "-a.com"]))),
                min_size=1, max_size=40))
def test_email_fast_path_on_odd_characters(items: list) -> None:
    raw = pl.Series("x", items, dtype=pl.String)
    assert email._canonical(raw).equals(email._frame(raw)["email"].alias("x"))


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.text(alphabet="0123456789 +-().#/xXeEtTnN.\t\x0b\n", max_size=30),
                          st.builds(lambda a, b, c: f"{a}{b}{c}", st.sampled_from(["", " +1 ", "(202) "]),
                                    st.from_regex(r"[0-9]{3}-[0-9]{4}", fullmatch=True),
                                    st.sampled_from(["", ".0", " ext. 12", "x1234567", " #12345678", "EXT 9"]))),
                min_size=1, max_size=30))
def test_phone_compiled_cleaning_equals_stepwise_rules(items: list) -> None:
    raw = pl.Series("x", items + ["+٣1 202 456 1111", "\xa0202 456 1111 x12"], dtype=pl.String)
    assert phone.clean(raw).equals(phone._clean_stepwise(raw).alias("x"))


@SETTINGS
@given(st.lists(values, min_size=1, max_size=4))
def test_results_kept_across_batches_are_what_each_batch_gives(batches: list[list]) -> None:
    exprs = {f"{ft}.{name}": e for ft in FIELD_TYPES for name, e in derive(ft, pl.col("x")).items()}
    for items in batches:  # the same expressions, batch after batch, as one hash run evaluates them
        got = pl.DataFrame({"x": items}, schema={"x": pl.String}).select(**exprs)
        assert got.equals(everything(items))
