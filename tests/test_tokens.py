"""Token derivation: golden vectors, the vectorized path, domain separation."""

import json
from pathlib import Path

import blake3
import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.keys.secret import ConsortiumKey
from cleanroom.tokens import (
    FORMAT_VERSION,
    PACKED,
    combinations,
    random_handles,
    token,
    token_expr,
    token_list,
    unpacked,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "tokens.json").read_text())
KEY = ConsortiumKey(
    consortium_id=VECTORS["consortium_id"],
    epoch=VECTORS["epoch"],
    secret=bytes.fromhex(VECTORS["secret"]),
)
values_st = st.lists(st.text(max_size=30), min_size=1, max_size=4)


def test_vectors_fingerprint_and_subkeys():
    assert KEY.fingerprint == VECTORS["fingerprint"]
    assert VECTORS["format_version"] == FORMAT_VERSION
    for case in VECTORS["cases"]:
        assert KEY.subkey(case["match_key"], FORMAT_VERSION).hex() == case["subkey"]


def test_vectors_tokens_reference_and_plain_blake3():
    for case in VECTORS["cases"]:
        subkey = bytes.fromhex(case["subkey"])
        assert token(case["values"], subkey).hex() == case["token"]
        message = "".join(f"{len(v.encode())}:{v}" for v in case["values"]).encode()
        assert blake3.blake3(message, key=subkey).hexdigest()[:32] == case["token"]


def test_vectors_tokens_vectorized():
    for case in VECTORS["cases"]:
        frame = pl.DataFrame({f"f{i}": [v] for i, v in enumerate(case["values"])})
        expr = token_expr([pl.col(c) for c in frame.columns], bytes.fromhex(case["subkey"]))
        assert frame.select(expr).item().hex() == case["token"]


@settings(max_examples=200, deadline=None)
@given(values_st)
def test_vectorized_equals_reference(values):
    subkey = KEY.subkey("k", FORMAT_VERSION)
    frame = pl.DataFrame({f"f{i}": [v] for i, v in enumerate(values)}, schema={f"f{i}": pl.String for i in range(len(values))})
    got = frame.select(token_expr([pl.col(c) for c in frame.columns], subkey)).item()
    assert got == token(values, subkey)


@settings(max_examples=200, deadline=None)
@given(values_st, st.sampled_from(["secret", "epoch", "consortium", "match_key"]))
def test_domain_separation(values, change):
    other = {
        "secret": ConsortiumKey(consortium_id=KEY.consortium_id, epoch=KEY.epoch, secret=bytes(32)),
        "epoch": ConsortiumKey(consortium_id=KEY.consortium_id, epoch=KEY.epoch + 1, secret=KEY.secret),
        "consortium": ConsortiumKey(consortium_id="other", epoch=KEY.epoch, secret=KEY.secret),
        "match_key": KEY,
    }[change]
    other_name = "email2" if change == "match_key" else "email"
    assert token(values, KEY.subkey("email", FORMAT_VERSION)) == token(values, KEY.subkey("email", FORMAT_VERSION))
    assert token(values, KEY.subkey("email", FORMAT_VERSION)) != token(values, other.subkey(other_name, FORMAT_VERSION))


@given(st.text(max_size=10), st.text(max_size=10), st.text(min_size=1, max_size=10))
def test_encoding_is_unambiguous(a, b, c):
    """Tuples whose plain concatenations agree still get different tokens."""
    subkey = KEY.subkey("k", FORMAT_VERSION)
    assert token([a + c, b], subkey) != token([a, c + b], subkey)


def test_missing_field_gives_no_token():
    subkey = KEY.subkey("k", FORMAT_VERSION)
    assert token(["a", None], subkey) is None
    frame = pl.DataFrame({"a": ["x", None], "b": ["y", "y"]})
    got = frame.select(token_expr([pl.col("a"), pl.col("b")], subkey)).to_series()
    assert got[0] is not None and got[1] is None


def test_several_columns_give_several_distinct_tokens():
    subkey = KEY.subkey("email", FORMAT_VERSION)
    frame = pl.DataFrame({"e1": ["a@x.org", "a@x.org", None], "e2": ["b@x.org", "a@x.org", None]})
    encodings = combinations([[pl.col("e1"), pl.col("e2")]])
    got = pl.from_arrow(unpacked(frame.select(token_list(encodings, subkey)))).to_series()
    assert got[0].to_list() == sorted([token(["a@x.org"], subkey), token(["b@x.org"], subkey)])
    assert got[1].to_list() == [token(["a@x.org"], subkey)]
    assert got[2] is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=3, max_size=3), min_size=1, max_size=20))
def test_token_list_equals_reference(rows):
    """Single and combined encodings: each row's distinct tokens in byte order, null when none."""
    subkey = KEY.subkey("k", FORMAT_VERSION)
    frame = pl.DataFrame(rows, schema={"a": pl.String, "b": pl.String, "c": pl.String}, orient="row")
    got = pl.from_arrow(unpacked(frame.select(
        single=token_list(combinations([[pl.col("a")]]), subkey),
        several=token_list(combinations([[pl.col("a"), pl.col("b")], [pl.col("c")]]), subkey),
    )))
    for (a, b, c), single, several in zip(rows, got["single"], got["several"], strict=True):
        assert (single.to_list() if single is not None else None) == ([token([a], subkey)] if a is not None else None)
        want = sorted({t for t in (token([a, c], subkey), token([b, c], subkey)) if t is not None})
        assert (several.to_list() if several is not None else None) == (want or None)


def test_token_list_of_no_rows():
    frame = pl.DataFrame({"a": []}, schema={"a": pl.String})
    got = frame.select(token_list(combinations([[pl.col("a")]]), KEY.subkey("k", FORMAT_VERSION))).to_series()
    assert got.len() == 0
    assert pl.from_arrow(unpacked(got.to_frame())).to_series().dtype == pl.List(pl.Binary)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.lists(st.binary(min_size=16, max_size=16), max_size=4)), min_size=1, max_size=12),
    st.integers(0, 5),
    st.integers(0, 12),
)
def test_unpacked_gives_the_same_bytes_as_binary(rows, start, length):
    """Handles and token lists (sliced and in several chunks, as batches give them) come out as the same bytes."""
    handles = [bytes([i]) * 16 for i in range(len(rows))]
    frame = pl.DataFrame(
        {"handle": [list(h) for h in handles], "key": [None if r is None else [list(t) for t in r] for r in rows]},
        schema={"handle": PACKED, "key": pl.List(PACKED)},
    )
    frame = pl.concat([frame, frame], rechunk=False).slice(start, length)
    got = pl.from_arrow(unpacked(frame))
    doubled = (handles + handles)[start : start + length]
    assert got["handle"].to_list() == doubled
    assert got["key"].to_list() == (rows + rows)[start : start + length]


def test_random_handles_are_fresh_and_uniform():
    first, second = random_handles(50_000).to_numpy(), random_handles(50_000).to_numpy()
    assert first.shape == (50_000, 16)
    assert {bytes(h) for h in first}.isdisjoint(bytes(h) for h in second)
    counts = np.bincount(first.ravel(), minlength=256)
    expected = first.size / 256
    assert ((counts - expected) ** 2 / expected).sum() < 400  # chi-square, 255 degrees of freedom: > 6 sd out
