"""Keyed BLAKE3 over a whole column at once, compiled with numba.

BLAKE3's keyed mode (the key is the starting chaining value, every block
carries the KEYED_HASH flag) for messages of up to one chunk (1024 bytes):
the compression function over 64-byte blocks, the last one flagged as the
root. Longer messages, rare for normalized identifiers, go to the `blake3`
package one by one. The kernel releases the GIL, so the rows are split over
threads. Tests check it byte for byte against the `blake3` package. Also
compiled here: the pass that keeps each row's first occurrence of a 128-bit
value (a row's distinct tokens).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import blake3
import numba
import numpy as np
import polars as pl
import pyarrow as pa

CHUNK_BYTES = 1024
_U32 = np.uint32
_IV = (_U32(0x6A09E667), _U32(0xBB67AE85), _U32(0x3C6EF372), _U32(0xA54FF53A))
_CHUNK_START, _CHUNK_END, _ROOT, _KEYED_HASH = 1, 2, 8, 16
_MIN_ROWS_PER_THREAD = 50_000


def _compiled(function):
    """Compile with an on-disk cache; without a writable cache location, compile once per process."""
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:
        return numba.njit(nogil=True)(function)


@numba.njit(inline="always")
def _rotr(x, n):
    return _U32((x >> _U32(n)) | (x << _U32(32 - n)))


@numba.njit(inline="always")
def _g(a, b, c, d, x, y):
    # numba widens uint32 arithmetic to 64 bits: wrap back after every add
    a = _U32(a + b + x)
    d = _rotr(d ^ a, 16)
    c = _U32(c + d)
    b = _rotr(b ^ c, 12)
    a = _U32(a + b + y)
    d = _rotr(d ^ a, 8)
    c = _U32(c + d)
    b = _rotr(b ^ c, 7)
    return a, b, c, d


@numba.njit(inline="always")
def _round(v, m):
    v0, v4, v8, v12 = _g(v[0], v[4], v[8], v[12], m[0], m[1])
    v1, v5, v9, v13 = _g(v[1], v[5], v[9], v[13], m[2], m[3])
    v2, v6, v10, v14 = _g(v[2], v[6], v[10], v[14], m[4], m[5])
    v3, v7, v11, v15 = _g(v[3], v[7], v[11], v[15], m[6], m[7])
    v0, v5, v10, v15 = _g(v0, v5, v10, v15, m[8], m[9])
    v1, v6, v11, v12 = _g(v1, v6, v11, v12, m[10], m[11])
    v2, v7, v8, v13 = _g(v2, v7, v8, v13, m[12], m[13])
    v3, v4, v9, v14 = _g(v3, v4, v9, v14, m[14], m[15])
    return (v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15)


@numba.njit(inline="always")
def _permute(m):
    return (m[2], m[6], m[3], m[10], m[7], m[0], m[4], m[13], m[1], m[11], m[12], m[5], m[9], m[14], m[15], m[8])


@numba.njit(inline="always")
def _word(data, i, end):
    """Little-endian word at data[i:i+4], zero past `end` (block padding)."""
    w = _U32(0)
    for k in range(4):
        if i + k < end:
            w |= _U32(data[i + k]) << _U32(8 * k)
    return w


@numba.njit(inline="always")
def _compress(cv, data, pos, end, block_len, flags):
    m = (
        _word(data, pos, end), _word(data, pos + 4, end), _word(data, pos + 8, end), _word(data, pos + 12, end),
        _word(data, pos + 16, end), _word(data, pos + 20, end), _word(data, pos + 24, end), _word(data, pos + 28, end),
        _word(data, pos + 32, end), _word(data, pos + 36, end), _word(data, pos + 40, end), _word(data, pos + 44, end),
        _word(data, pos + 48, end), _word(data, pos + 52, end), _word(data, pos + 56, end), _word(data, pos + 60, end),
    )
    v = (cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
         _IV[0], _IV[1], _IV[2], _IV[3], _U32(0), _U32(0), _U32(block_len), _U32(flags))
    for _ in range(6):
        v = _round(v, m)
        m = _permute(m)
    v = _round(v, m)
    return (v[0] ^ v[8], v[1] ^ v[9], v[2] ^ v[10], v[3] ^ v[11], v[4] ^ v[12], v[5] ^ v[13], v[6] ^ v[14], v[7] ^ v[15])


@_compiled
def _hash_rows(offsets, data, valid, key, start, stop, out_bytes, done):
    """Digest prefixes of rows start..stop into out; done[row] False = null or too long."""
    k = (key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7])
    for row in range(start, stop):
        lo = offsets[row]
        n = offsets[row + 1] - lo
        if not valid[row] or n > CHUNK_BYTES:
            done[row] = False
            continue
        done[row] = True
        cv = k
        blocks = max(1, (n + 63) // 64)
        for b in range(blocks):
            flags = _KEYED_HASH
            if b == 0:
                flags |= _CHUNK_START
            if b == blocks - 1:
                flags |= _CHUNK_END | _ROOT
            cv = _compress(cv, data, lo + 64 * b, lo + n, min(64, n - 64 * b), flags)
        for i in range(out_bytes.shape[1]):
            out_bytes[row, i] = np.uint8((cv[i // 4] >> _U32(8 * (i % 4))) & _U32(0xFF))


def keyed_digests(messages: pl.Series, key: bytes, size: int) -> pl.Series:
    """First `size` (<= 32) bytes of keyed BLAKE3 of every String/Binary value; null stays null."""
    return pl.Series(messages.name, keyed_digests_arrow(messages.to_arrow(), key, size))


def keyed_digests_arrow(array: pa.Array | pa.ChunkedArray, key: bytes, size: int) -> pa.FixedSizeBinaryArray:
    """`keyed_digests` on an Arrow string or binary array."""
    if len(key) != 32 or not 0 < size <= 32:
        raise ValueError("keyed BLAKE3 needs a 32-byte key and a digest of 1 to 32 bytes")
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.type not in (pa.large_string(), pa.large_binary()):
        array = array.cast(pa.large_binary())
    n = len(array)
    if n == 0:
        return pa.array([], type=pa.binary(size))
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64, count=array.offset + n + 1)[array.offset:]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    valid = validity(array)
    out = np.zeros((n, size), dtype=np.uint8)
    done = np.zeros(n, dtype=np.bool_)
    key_words = np.frombuffer(key, dtype="<u4").astype(np.uint32)
    threads = max(1, min(pl.thread_pool_size(), n // _MIN_ROWS_PER_THREAD))
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)
    with ThreadPoolExecutor(threads) as pool:
        for future in [
            pool.submit(_hash_rows, offsets, data, valid, key_words, bounds[i], bounds[i + 1], out, done)
            for i in range(threads)
        ]:
            future.result()
    for row in np.flatnonzero(valid & ~done):  # longer than one chunk
        message = data[offsets[row] : offsets[row + 1]].tobytes()
        out[row] = np.frombuffer(blake3.blake3(message, key=key).digest(size), dtype=np.uint8)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(size), n, [pa.py_buffer(np.packbits(valid, bitorder="little")), pa.py_buffer(out)]
    )


def validity(array: pa.Array) -> np.ndarray:
    """Boolean numpy mask of an Arrow array's non-null rows, read off its bitmap."""
    if array.null_count == 0:
        return np.ones(len(array), dtype=np.bool_)
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], dtype=np.uint8), bitorder="little")
    return bits[array.offset : array.offset + len(array)].astype(np.bool_)


@_compiled
def first_occurrences(words, valid):
    """keep[i, j]: valid[i, j] and row i's j-th 128-bit value (two uint64 words) not seen before in the row."""
    rows, width = valid.shape
    keep = np.zeros((rows, width), dtype=np.bool_)
    for i in range(rows):
        for j in range(width):
            if not valid[i, j]:
                continue
            seen = False
            for p in range(j):
                if keep[i, p] and words[i, p, 0] == words[i, j, 0] and words[i, p, 1] == words[i, j, 1]:
                    seen = True
                    break
            keep[i, j] = not seen
    return keep


def warm_up() -> threading.Thread:
    """Load (or on first use compile) the kernel in the background; returns the thread."""
    thread = threading.Thread(target=keyed_digests, args=(pl.Series(["warm-up"]), bytes(32), 16), daemon=True)
    thread.start()
    return thread
