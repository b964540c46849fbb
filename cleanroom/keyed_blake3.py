"""Keyed BLAKE3 over whole columns at once, compiled with numba.

BLAKE3's keyed mode (the key is the starting chaining value, every block
carries the KEYED_HASH flag) for messages of up to one chunk (1024 bytes):
the compression function over 64-byte blocks, the last one flagged as the
root. A row's message is the concatenation of its parts (one per column),
each optionally preceded by its decimal UTF-8 byte length and ':' (the token
encoding), assembled inside the kernel; one call hashes several combinations
of columns per row (a key's field tuples). Sixteen messages are compressed
side by side, one per SIMD lane, null ones taking no lane. Longer messages,
rare for normalized identifiers, go to the `blake3` package one by one. The kernel releases the GIL, so the rows
are split over threads. Tests check it byte for byte against the `blake3`
package. Also compiled here: the pass that keeps each row's first occurrence
of a 128-bit value (a row's distinct tokens).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import blake3
import numba
import numpy as np
import polars as pl
import pyarrow as pa

from cleanroom.compiled import compiled, large_buffers, validity

CHUNK_BYTES = 1024
LANES = 16
_U32 = np.uint32
_IV = np.array([0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A], dtype=np.uint32)
_CHUNK_START, _CHUNK_END, _ROOT, _KEYED_HASH = 1, 2, 8, 16
_NULL, _HASHED, _TOO_LONG = 0, 1, 2  # status of a message
_MIN_ROWS_PER_THREAD = 50_000
_PERMUTATION = np.array([2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8])


def _message_schedule() -> np.ndarray:
    """Row r: the message word each of the 16 slots of round r reads."""
    schedule = np.zeros((7, 16), dtype=np.int64)
    words = np.arange(16)
    for r in range(7):
        schedule[r] = words
        words = words[_PERMUTATION]
    return schedule


_SCHEDULE = _message_schedule()


@numba.njit(inline="always")
def _g(v, a, b, c, d, m, x, y):
    """The quarter-round on state rows a, b, c, d of every lane (numba widens uint32 sums: wrap back)."""
    for lane in range(LANES):
        va = _U32(v[a, lane] + v[b, lane] + m[x, lane])
        vd = v[d, lane] ^ va
        vd = _U32((vd >> _U32(16)) | (vd << _U32(16)))
        vc = _U32(v[c, lane] + vd)
        vb = v[b, lane] ^ vc
        vb = _U32((vb >> _U32(12)) | (vb << _U32(20)))
        va = _U32(va + vb + m[y, lane])
        vd = vd ^ va
        vd = _U32((vd >> _U32(8)) | (vd << _U32(24)))
        vc = _U32(vc + vd)
        vb = vb ^ vc
        vb = _U32((vb >> _U32(7)) | (vb << _U32(25)))
        v[a, lane], v[b, lane], v[c, lane], v[d, lane] = va, vb, vc, vd


@numba.njit(inline="always")
def _compress(cv, m, block_len, flags, v):
    """cv[:, lane] = compress(cv[:, lane], block m[:, lane]) for every lane; v is scratch."""
    for lane in range(LANES):
        for i in range(8):
            v[i, lane] = cv[i, lane]
        for i in range(4):
            v[8 + i, lane] = _IV[i]
        v[12, lane], v[13, lane], v[14, lane], v[15, lane] = _U32(0), _U32(0), block_len[lane], flags[lane]
    for r in range(7):
        s = _SCHEDULE[r]
        _g(v, 0, 4, 8, 12, m, s[0], s[1])
        _g(v, 1, 5, 9, 13, m, s[2], s[3])
        _g(v, 2, 6, 10, 14, m, s[4], s[5])
        _g(v, 3, 7, 11, 15, m, s[6], s[7])
        _g(v, 0, 5, 10, 15, m, s[8], s[9])
        _g(v, 1, 6, 11, 12, m, s[10], s[11])
        _g(v, 2, 7, 8, 13, m, s[12], s[13])
        _g(v, 3, 4, 9, 14, m, s[14], s[15])
    for i in range(8):
        for lane in range(LANES):
            cv[i, lane] = v[i, lane] ^ v[i + 8, lane]


@numba.njit(inline="always")
def _digits(n):
    d = 1
    while n >= 10:
        n //= 10
        d += 1
    return d


@numba.njit(inline="always")
def _assemble(offsets, data, valid, parts, row, prefixed, message):
    """Write the row's message of columns `parts` into `message`, zero-padded to whole blocks.

    Returns its length, or -1 when a part is null, -2 when it is longer than one chunk.
    """
    length = 0
    for j in range(len(parts)):
        f = parts[j]
        if not valid[f, row]:
            return -1
        part = offsets[f, row + 1] - offsets[f, row]
        length += part + (_digits(part) + 1 if prefixed else 0)
    if length > CHUNK_BYTES:
        return -2
    pos = 0
    for j in range(len(parts)):
        f = parts[j]
        lo = offsets[f, row]
        part = offsets[f, row + 1] - lo
        if prefixed:
            d = _digits(part)
            for k in range(d):
                message[pos + d - 1 - k] = np.uint8(48 + part % 10)
                part //= 10
            message[pos + d] = np.uint8(58)  # ':'
            pos += d + 1
            part = offsets[f, row + 1] - lo
        message[pos : pos + part] = data[lo : lo + part]
        pos += part
    message[pos : max(1, (pos + 63) // 64) * 64] = 0
    return length


@numba.njit(inline="always")
def _digest_lanes(words, lengths, key, cv, m, v, saved, block_len, flags):
    """cv[:, lane] = the keyed BLAKE3 root chaining value of each lane's message (lengths[lane] < 0: no message)."""
    most = 1
    for lane in range(LANES):
        most = max(most, (lengths[lane] + 63) // 64)
    for i in range(8):
        for lane in range(LANES):
            cv[i, lane] = key[i]
    for b in range(most):
        for lane in range(LANES):
            n = max(lengths[lane], 0)
            blocks = max(1, (n + 63) // 64)
            block_len[lane] = min(64, max(0, n - 64 * b))
            flags[lane] = _KEYED_HASH | (_CHUNK_START if b == 0 else 0)
            flags[lane] |= (_CHUNK_END | _ROOT) if b == blocks - 1 else 0
            for i in range(16):
                m[i, lane] = words[lane, 16 * b + i]
        if most > 1:
            saved[:, :] = cv
        _compress(cv, m, block_len, flags, v)
        if most > 1:
            for lane in range(LANES):
                if b >= max(1, (max(lengths[lane], 0) + 63) // 64):  # this lane's message had ended
                    for i in range(8):
                        cv[i, lane] = saved[i, lane]


@numba.njit(inline="always")
def _store(cv, lane_row, lane_combo, filled, out, status):
    """The digests of the first `filled` lanes into out[row, combo] (words of the little-endian digest)."""
    for lane in range(filled):
        row, c = lane_row[lane], lane_combo[lane]
        status[row, c] = _HASHED
        for w in range(out.shape[2]):
            out[row, c, w] = cv[w, lane]


@compiled
def _hash_rows(offsets, data, valid, combos, prefixed, key, start, stop, out, status):
    """Digest words of rows start..stop, one per combination of columns (row c of `combos`), into out[row, c].

    status[row, c] (zero on entry, _NULL) becomes _HASHED or _TOO_LONG; returns
    how many are too long. Only messages to hash take a lane, sixteen at a
    time, in row order.
    """
    messages = np.zeros((LANES, CHUNK_BYTES + 64), dtype=np.uint8)
    words = messages.view(np.uint32)  # little-endian machines only (checked at import)
    lengths = np.zeros(LANES, dtype=np.int64)
    lane_row = np.zeros(LANES, dtype=np.int64)
    lane_combo = np.zeros(LANES, dtype=np.int64)
    cv = np.empty((8, LANES), dtype=np.uint32)
    m = np.empty((16, LANES), dtype=np.uint32)
    v = np.empty((16, LANES), dtype=np.uint32)
    saved = np.empty((8, LANES), dtype=np.uint32)
    block_len = np.zeros(LANES, dtype=np.uint32)
    flags = np.zeros(LANES, dtype=np.uint32)
    filled, too_long = 0, 0
    for row in range(start, stop):
        for c in range(combos.shape[0]):
            length = _assemble(offsets, data, valid, combos[c], row, prefixed, messages[filled])
            if length == -2:
                status[row, c] = _TOO_LONG
                too_long += 1
            if length < 0:
                continue
            lengths[filled], lane_row[filled], lane_combo[filled] = length, row, c
            filled += 1
            if filled == LANES:
                _digest_lanes(words, lengths, key, cv, m, v, saved, block_len, flags)
                _store(cv, lane_row, lane_combo, filled, out, status)
                filled = 0
    if filled:
        lengths[filled:] = -1
        _digest_lanes(words, lengths, key, cv, m, v, saved, block_len, flags)
        _store(cv, lane_row, lane_combo, filled, out, status)
    return too_long


def keyed_digests(messages: pl.Series, key: bytes, size: int) -> pl.Series:
    """First `size` (<= 32) bytes of keyed BLAKE3 of every String/Binary value; null stays null."""
    return pl.Series(messages.name, keyed_digests_arrow([messages.to_arrow()], key, size))


def keyed_digests_arrow(
    parts: Sequence[pa.Array | pa.ChunkedArray], key: bytes, size: int, *, length_prefixed: bool = False
) -> pa.FixedSizeBinaryArray:
    """Keyed BLAKE3 (first `size` bytes) of each row's parts concatenated; null when any part is null.

    With `length_prefixed`, each part is preceded by its decimal byte length
    and ':' (the token encoding of `cleanroom.tokens`).
    """
    digests, valid = keyed_digest_table(parts, [range(len(parts))], key, size, length_prefixed=length_prefixed)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(size), len(valid),
        [pa.py_buffer(np.packbits(valid[:, 0], bitorder="little")), pa.py_buffer(digests)],
    )


def keyed_digest_table(
    columns: Sequence[pa.Array | pa.ChunkedArray],
    combos: Sequence[Sequence[int]],
    key: bytes,
    size: int,
    *,
    length_prefixed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """For each row and each combination of columns (column indices, all of one length), the keyed BLAKE3 prefix.

    The message of row r for combination c is the concatenation of columns
    combos[c] at row r (each part preceded by its length and ':' with
    `length_prefixed`). Returns digests (rows, combinations, size) and
    valid (rows, combinations): False where a part is null (digest zero).
    """
    if len(key) != 32 or not 0 < size <= 32:
        raise ValueError("keyed BLAKE3 needs a 32-byte key and a digest of 1 to 32 bytes")
    arrays = [_large_binary(p) for p in columns]
    n, combos = len(arrays[0]), np.array([list(c) for c in combos], dtype=np.int64)
    out = np.zeros((n, len(combos), -(-size // 4)), dtype=np.uint32)  # whole words, cut to `size` bytes at the end
    status = np.zeros((n, len(combos)), dtype=np.uint8)
    if n == 0:
        return _bytes(out, size), status != _NULL
    offsets = np.empty((len(arrays), n + 1), dtype=np.int64)
    datas = []
    for f, array in enumerate(arrays):
        raw, data = large_buffers(array)
        offsets[f] = raw + sum(len(d) for d in datas) - raw[0]
        datas.append(data[raw[0] : raw[-1]])
    data = np.concatenate(datas) if len(datas) > 1 else datas[0]
    data.flags.writeable = False  # as Arrow's own buffers: one compiled signature for every input
    valid = np.stack([validity(a) for a in arrays])
    key_words = np.frombuffer(key, dtype="<u4").astype(np.uint32)
    threads = max(1, min(pl.thread_pool_size(), n * len(combos) // _MIN_ROWS_PER_THREAD))
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)

    def hash_part(i: int) -> int:
        start, stop = bounds[i], bounds[i + 1]
        return _hash_rows(offsets, data, valid, combos, length_prefixed, key_words, start, stop, out, status)

    if threads == 1:
        too_long = hash_part(0)  # no pool: also usable while the interpreter shuts down (the warm-up thread)
    else:
        with ThreadPoolExecutor(threads) as pool:
            too_long = sum(pool.map(hash_part, range(threads)))
    if too_long:  # rare for normalized identifiers
        for row, c in zip(*np.nonzero(status == _TOO_LONG)):
            parts = combos[c]
            message = b"".join(
                (f"{e - s}:".encode() if length_prefixed else b"") + data[s:e].tobytes()
                for s, e in zip(offsets[parts, row], offsets[parts, row + 1], strict=True)
            )
            out[row, c] = np.frombuffer(blake3.blake3(message, key=key).digest(out.shape[2] * 4), dtype="<u4")
    return _bytes(out, size), status != _NULL


def _bytes(words: np.ndarray, size: int) -> np.ndarray:
    """The first `size` bytes of each digest held as little-endian words (machines are little-endian here)."""
    raw = words.view(np.uint8)
    return raw if raw.shape[2] == size else np.ascontiguousarray(raw[:, :, :size])


def _large_binary(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array if array.type == pa.large_binary() else array.cast(pa.large_binary())


@compiled
def distinct_in_byte_order(tokens, valid):
    """Each row's distinct valid 16-byte tokens (rows x width x 16) in byte order, an order that says nothing
    of their places; all rows' tokens one after another, and each row's count."""
    rows, width, size = tokens.shape
    out = np.empty((rows * width, size), dtype=np.uint8)
    counts = np.zeros(rows, dtype=np.int64)
    high = np.empty(width, dtype=np.uint64)  # the row's tokens so far as big-endian words, sorted
    low = np.empty(width, dtype=np.uint64)
    place = np.empty(width, dtype=np.int64)
    start = 0
    for i in range(rows):
        m = 0
        for j in range(width):
            if not valid[i, j]:
                continue
            h, lo = _big_endian(tokens, i, j, 0), _big_endian(tokens, i, j, 8)
            p = m  # insertion sort: a row holds a few dozen tokens at most
            while p > 0 and (high[p - 1] > h or (high[p - 1] == h and low[p - 1] > lo)):
                p -= 1
            if p > 0 and high[p - 1] == h and low[p - 1] == lo:
                continue  # seen in this row already
            for q in range(m, p, -1):
                high[q], low[q], place[q] = high[q - 1], low[q - 1], place[q - 1]
            high[p], low[p], place[p] = h, lo, j
            m += 1
        for p in range(m):
            for k in range(size):
                out[start + p, k] = tokens[i, place[p], k]
        counts[i] = m
        start += m
    return out[:start], counts


@numba.njit(inline="always")
def _big_endian(tokens, i, j, at):
    """Bytes at..at+7 of token (i, j) as one big-endian word: words compare as their bytes do."""
    word = np.uint64(0)
    for k in range(8):
        word = (word << np.uint64(8)) | np.uint64(tokens[i, j, at + k])
    return word


if sys.byteorder != "little":  # the kernel reads message words through a native uint32 view
    raise ImportError("cleanroom's BLAKE3 kernel supports little-endian machines only")
