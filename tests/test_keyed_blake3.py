"""The compiled keyed BLAKE3 kernel agrees with the blake3 package byte for byte."""

import blake3
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.keyed_blake3 import keyed_digest_table, keyed_digests, keyed_digests_arrow

KEY = bytes(range(32))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.binary(max_size=2200)), max_size=40),
    st.binary(min_size=32, max_size=32),
    st.integers(1, 32),
)
def test_equals_blake3_package(messages, key, size):
    got = keyed_digests(pl.Series("m", messages, dtype=pl.Binary), key, size)
    want = [None if m is None else blake3.blake3(m, key=key).digest(size) for m in messages]
    assert got.to_list() == want
    assert got.name == "m"


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda k: st.lists(st.lists(st.one_of(st.none(), st.binary(max_size=600)), min_size=k, max_size=k), max_size=40)
    ),
    st.booleans(),
)
def test_parts_equal_blake3_of_their_concatenation(rows, length_prefixed):
    """Rows of several parts (optionally length-prefixed, the token encoding): lanes, blocks and chunks."""
    width = len(rows[0]) if rows else 1
    parts = [pa.array([row[f] for row in rows], type=pa.binary()) for f in range(width)]
    got = keyed_digests_arrow(parts, KEY, 16, length_prefixed=length_prefixed).to_pylist()

    def message(row):
        return b"".join((f"{len(p)}:".encode() if length_prefixed else b"") + p for p in row)

    assert got == [None if None in row else blake3.blake3(message(row), key=KEY).digest(16) for row in rows]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.one_of(st.none(), st.binary(max_size=700)), min_size=4, max_size=4), max_size=40),
    st.lists(st.lists(st.integers(0, 3), min_size=2, max_size=2), min_size=1, max_size=6),
)
def test_combinations_of_columns(rows, combos):
    """Each row's message per combination of columns; null messages take no lane, so lanes mix rows and combinations."""
    columns = [pa.array([row[f] for row in rows], type=pa.binary()) for f in range(4)]
    digests, valid = keyed_digest_table(columns, combos, KEY, 16, length_prefixed=True)
    for r, row in enumerate(rows):
        for c, combo in enumerate(combos):
            parts = [row[f] for f in combo]
            assert valid[r, c] == (None not in parts)
            if valid[r, c]:
                message = b"".join(f"{len(p)}:".encode() + p for p in parts)
                assert digests[r, c].tobytes() == blake3.blake3(message, key=KEY).digest(16)


@pytest.mark.parametrize("length", [0, 1, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025, 2048, 3000])
def test_block_and_chunk_boundaries(length):
    message = bytes(i % 251 for i in range(length))
    assert keyed_digests(pl.Series([message]), KEY, 16)[0] == blake3.blake3(message, key=KEY).digest(16)


def test_strings_sliced_and_chunked_columns():
    """Unicode strings hash as UTF-8; offsets of sliced and multi-chunk columns are honoured."""
    values = [f"välue-{i}" * (i % 20) for i in range(200_000)]
    series = pl.concat([pl.Series(values[:70_000]), pl.Series(values[70_000:])], rechunk=False).slice(5, 150_000)
    got = keyed_digests(series, KEY, 16)
    for i in (0, 1, 64_999, 65_000, 149_999):
        assert got[i] == blake3.blake3(values[5 + i].encode(), key=KEY).digest(16)
    assert keyed_digests(pl.Series([], dtype=pl.String), KEY, 16).to_list() == []
    assert keyed_digests(pl.Series([None, None], dtype=pl.String), KEY, 16).to_list() == [None, None]


def test_nulls_in_a_sliced_column_keep_their_rows():
    values = [None if i % 7 == 3 else f"v{i}" for i in range(100)]
    got = keyed_digests(pl.Series(values).slice(11, 60), KEY, 16).to_list()
    assert got == [None if v is None else blake3.blake3(v.encode(), key=KEY).digest(16) for v in values[11:71]]


def test_rejects_bad_key_or_size():
    with pytest.raises(ValueError):
        keyed_digests(pl.Series(["a"]), b"short", 16)
    with pytest.raises(ValueError):
        keyed_digests(pl.Series(["a"]), KEY, 33)
