"""Keyed tokens: the only place that hashes normalized identifiers.

Token construction (format version 2), pinned by tests/vectors/tokens.json:

    subkey   = ConsortiumKey.subkey(match_key, FORMAT_VERSION)       (BLAKE3 derive_key)
    encoding = for each field in the key, in order: "<utf-8 byte length>:<value>"
    token    = BLAKE3(key = subkey, msg = encoding)[:16]              (keyed mode)

A key with any missing field has no token. Whole columns are hashed at once by
the compiled kernel in `cleanroom.keyed_blake3`, which assembles the encoding
from the field columns itself.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from functools import partial

import blake3
import numpy as np
import polars as pl
import pyarrow as pa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from cleanroom.keyed_blake3 import distinct_in_byte_order, keyed_digest_table, keyed_digests_arrow
from cleanroom.keys.secret import ConsortiumKey

FORMAT_VERSION = 2
TOKEN_SCHEME = "blake3-keyed-128/2"
TOKEN_BYTES = 16
HANDLE_BYTES = 16
PACKED = pl.Array(pl.UInt8, TOKEN_BYTES)
"""Handles and tokens while a bundle is made: fixed-size arrays, cheap to shuffle; `unpacked` gives binary."""


def combinations(field_sources: Sequence[Sequence[pl.Expr]]) -> list[tuple[pl.Expr, ...]]:
    """The field tuples of one match key, one per combination of source columns.

    `field_sources[i]` holds one expression per input column that provides the
    key's i-th field (email and email_2 both give "email").
    """
    return list(itertools.product(*field_sources))


def token_expr(fields: Sequence[pl.Expr], subkey: bytes) -> pl.Expr:
    """Binary 16-byte token of a tuple of normalized String fields; null if any is null."""
    return _fields_struct(fields).map_batches(partial(_tokens, key=subkey), return_dtype=pl.Binary)


def token_list(combos: Sequence[Sequence[pl.Expr]], subkey: bytes) -> pl.Expr:
    """A row's distinct tokens of one key (one per field tuple without nulls) as a list of `PACKED`; null when none."""
    distinct: list[pl.Expr] = []
    for field in (f for combo in combos for f in combo):
        if not any(field.meta.eq(seen) for seen in distinct):
            distinct.append(field)
    positions = [tuple(next(i for i, d in enumerate(distinct) if f.meta.eq(d)) for f in combo) for combo in combos]
    return _fields_struct(distinct).map_batches(
        partial(_distinct_tokens, combos=positions, key=subkey), return_dtype=pl.List(PACKED)
    )


def _fields_struct(fields: Sequence[pl.Expr]) -> pl.Expr:
    return pl.struct([f.cast(pl.String).alias(f"f{i}") for i, f in enumerate(fields)])


def _tokens(fields: pl.Series, key: bytes) -> pl.Series:
    """Tokens of each row's field tuple, from a struct of the fields in key order."""
    parts = [column.to_arrow() for column in fields.struct.unnest()]
    return pl.Series(fields.name, keyed_digests_arrow(parts, key, TOKEN_BYTES, length_prefixed=True))


def _distinct_tokens(fields: pl.Series, combos: list[tuple[int, ...]], key: bytes) -> pl.Series:
    """List of each row's distinct tokens in byte order (null when none), from a struct of the fields: the order
    says nothing about which reading (as written, swapped, a deletion...) gave which token."""
    n = len(fields)
    if n == 0:
        return pl.Series(fields.name, [], dtype=pl.List(PACKED))
    columns = [column.to_arrow() for column in fields.struct.unnest()]
    tokens, valid = keyed_digest_table(columns, combos, key, TOKEN_BYTES, length_prefixed=True)
    if len(combos) > 1:
        distinct, counts = distinct_in_byte_order(tokens, valid)
        kept = distinct.ravel()
    else:
        counts = valid.sum(axis=1)
        kept = tokens.ravel() if counts.sum() == valid.size else tokens[valid].ravel()
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = pa.FixedSizeListArray.from_arrays(_arrow(kept), TOKEN_BYTES)
    lists = pa.LargeListArray.from_arrays(_arrow(offsets), values, mask=_arrow(counts == 0))
    return pl.Series(fields.name, lists)


def _arrow(values: np.ndarray) -> pa.Array:
    """A 1-d numpy array as Arrow without `pa.array` (whose first call imports pandas: 0.3 s once)."""
    if values.dtype == np.bool_:
        return pa.BooleanArray.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(values, bitorder="little"))])
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def token(values: Sequence[str | None], subkey: bytes) -> bytes | None:
    """Reference implementation of one token, for vectors and other implementations."""
    if any(v is None for v in values):
        return None
    message = b"".join(f"{len(v.encode())}:".encode() + v.encode() for v in values)
    return blake3.blake3(message, key=subkey).digest(TOKEN_BYTES)


def subkeys(key: ConsortiumKey, match_keys: Sequence[str]) -> dict[str, bytes]:
    """Subkey per match key name."""
    return {name: key.subkey(name, FORMAT_VERSION) for name in match_keys}


def random_handles(n: int) -> pl.Series:
    """Fresh random 128-bit row handles, `PACKED`.

    The bytes are a ChaCha20 keystream under a fresh key and nonce from the OS
    CSPRNG (the construction the OS generator itself uses), three times faster
    than reading that many bytes from the OS.
    """
    stream = Cipher(algorithms.ChaCha20(secrets.token_bytes(32), secrets.token_bytes(16)), mode=None).encryptor()
    raw = np.frombuffer(stream.update(bytes(n * HANDLE_BYTES)), dtype=np.uint8).reshape(n, HANDLE_BYTES)
    return pl.Series("handle", raw, dtype=PACKED)


def unpacked(frame: pl.DataFrame) -> pa.Table:
    """`frame` as Arrow, its `PACKED` columns (and lists of them) as the bundle's large binary values."""
    table = frame.to_arrow()
    columns = {name: _one_chunk(table[name]) for name in table.column_names}
    values = {name: _fixed_values(column) for name, column in columns.items()}
    longest = max((len(v) for v in values.values() if v is not None), default=0)
    offsets = np.arange(0, TOKEN_BYTES * (longest + 1), TOKEN_BYTES, dtype=np.int64)  # shared by every column
    return pa.table({name: _unpack(column, values[name], offsets) for name, column in columns.items()})


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()  # combining one chunk copies it


def _fixed_values(array: pa.Array) -> pa.FixedSizeListArray | None:
    """The 16-byte values of a `PACKED` column or of a list of them; None for other columns."""
    if pa.types.is_large_list(array.type):
        array = array.flatten()
    return array if pa.types.is_fixed_size_list(array.type) and array.type.list_size == TOKEN_BYTES else None


def _unpack(array: pa.Array, values: pa.FixedSizeListArray | None, offsets: np.ndarray) -> pa.Array:
    """The column with its 16-byte `values` as large binary (`offsets` long enough for them)."""
    if values is None:
        return array
    binary = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(values),
        [None, pa.py_buffer(offsets[: len(values) + 1]), pa.py_buffer(_numpy(values.flatten(), np.uint8))],
    )
    if values is array:
        return binary
    list_offsets = _numpy(array.offsets, np.int64)
    return pa.LargeListArray.from_arrays(_arrow(list_offsets - list_offsets[0]), binary, mask=array.is_null())


def _numpy(values: pa.Array, dtype: type) -> np.ndarray:
    """The values of a null-free primitive Arrow array, read off its buffer (to_numpy imports pandas)."""
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(values.buffers()[1], dtype=dtype, count=len(values), offset=values.offset * itemsize)
