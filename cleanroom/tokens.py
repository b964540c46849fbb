"""Keyed tokens: the only place that hashes normalized identifiers.

Token construction (format version 2), pinned by tests/vectors/tokens.json:

    subkey   = ConsortiumKey.subkey(match_key, FORMAT_VERSION)       (BLAKE3 derive_key)
    encoding = for each field in the key, in order: "<utf-8 byte length>:<value>"
    token    = BLAKE3(key = subkey, msg = encoding)[:16]              (keyed mode)

A key with any missing field has no token. Whole columns are hashed at once by
the compiled kernel in `cleanroom.keyed_blake3`.
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

from cleanroom.keyed_blake3 import first_occurrences, keyed_digests, keyed_digests_arrow, validity
from cleanroom.keys.secret import ConsortiumKey

FORMAT_VERSION = 2
TOKEN_SCHEME = "blake3-keyed-128/2"
TOKEN_BYTES = 16
HANDLE_BYTES = 16


def encoding(fields: Sequence[pl.Expr]) -> pl.Expr:
    """The length-prefixed message of a tuple of normalized String fields; null if any is null."""
    parts: list[pl.Expr] = []
    for field in fields:
        parts += [field.str.len_bytes().cast(pl.String), pl.lit(":"), field]
    return pl.concat_str(parts, ignore_nulls=False)


def combinations(field_sources: Sequence[Sequence[pl.Expr]]) -> list[pl.Expr]:
    """Encodings of one match key, one per combination of source columns.

    `field_sources[i]` holds one expression per input column that provides the
    key's i-th field (email and email_2 both give "email").
    """
    return [encoding(combo) for combo in itertools.product(*field_sources)]


def token_expr(fields: Sequence[pl.Expr], subkey: bytes) -> pl.Expr:
    """Binary 16-byte token of a tuple of normalized String fields; null if any is null."""
    hash_column = partial(keyed_digests, key=subkey, size=TOKEN_BYTES)
    return encoding(fields).map_batches(hash_column, return_dtype=pl.Binary)


def token_list(encodings: Sequence[pl.Expr], subkey: bytes) -> pl.Expr:
    """A row's distinct tokens of one key (one per non-null encoding) as a list; null when none."""
    return pl.struct([e.alias(f"e{i}") for i, e in enumerate(encodings)]).map_batches(
        partial(_distinct_tokens, key=subkey), return_dtype=pl.List(pl.Binary)
    )


def _distinct_tokens(encodings: pl.Series, key: bytes) -> pl.Series:
    """List of each row's distinct tokens in encoding order (null when none), from a struct of encodings."""
    n = len(encodings)
    if n == 0:
        return pl.Series(encodings.name, [], dtype=pl.List(pl.Binary))
    digests = [keyed_digests_arrow(column.to_arrow(), key, TOKEN_BYTES) for column in encodings.struct.unnest()]
    tokens = np.stack([np.frombuffer(d.buffers()[1], dtype=np.uint8).reshape(n, TOKEN_BYTES) for d in digests], 1)
    keep = first_occurrences(tokens.view(np.uint64), np.stack([validity(d) for d in digests], 1))
    counts = keep.sum(axis=1)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(TOKEN_BYTES), int(offsets[-1]), [None, pa.py_buffer(np.ascontiguousarray(tokens[keep]))]
    )
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), values, mask=pa.array(counts == 0))
    return pl.Series(encodings.name, lists).cast(pl.List(pl.Binary))


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
    """Fresh random 128-bit row handles from the OS CSPRNG."""
    raw = pa.py_buffer(secrets.token_bytes(n * HANDLE_BYTES))
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(HANDLE_BYTES), n, [None, raw])
    return pl.Series("handle", fixed)
