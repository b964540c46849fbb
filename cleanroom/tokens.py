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
import polars as pl
import pyarrow as pa

from cleanroom.keyed_blake3 import keyed_digests
from cleanroom.keys.secret import ConsortiumKey

FORMAT_VERSION = 2
TOKEN_SCHEME = "blake3-keyed-128/2"
TOKEN_BYTES = 16
HANDLE_BYTES = 16


def _encoding_expr(fields: Sequence[pl.Expr]) -> pl.Expr:
    parts: list[pl.Expr] = []
    for field in fields:
        parts += [field.str.len_bytes().cast(pl.String), pl.lit(":"), field]
    return pl.concat_str(parts, ignore_nulls=False)


def token_expr(fields: Sequence[pl.Expr], subkey: bytes) -> pl.Expr:
    """Binary 16-byte token of a tuple of normalized String fields; null if any is null."""
    hash_column = partial(keyed_digests, key=subkey, size=TOKEN_BYTES)
    return _encoding_expr(fields).map_batches(hash_column, return_dtype=pl.Binary)


def combination_tokens(field_sources: Sequence[Sequence[pl.Expr]], subkey: bytes) -> list[pl.Expr]:
    """Token expressions of one match key, one per combination of source columns.

    `field_sources[i]` holds one expression per input column that provides the
    key's i-th field (email and email_2 both give "email").
    """
    return [token_expr(combo, subkey) for combo in itertools.product(*field_sources)]


def token_list(tokens: Sequence[pl.Expr]) -> pl.Expr:
    """A row's distinct non-null tokens of one key as a list; null when there are none.

    Meant for already materialized token columns (each is read more than once).
    """
    if len(tokens) == 1:
        return pl.when(tokens[0].is_not_null()).then(pl.concat_list(tokens[0]))
    merged = pl.concat_list(tokens).list.drop_nulls().list.unique(maintain_order=True)
    return pl.when(pl.any_horizontal(t.is_not_null() for t in tokens)).then(merged)


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
