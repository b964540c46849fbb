"""Compiled per-row kernels (numba, cached on disk next to the package) and their Arrow plumbing."""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
import polars as pl
import pyarrow as pa

NULL, DONE, NOT_ASCII = 0, 1, 2
"""Row status a string kernel reports: no value, a value written, or left to the fallback."""


def compiled(function):
    """Compile without the GIL and with an on-disk cache; without a writable cache location, once per process."""
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:
        return numba.njit(nogil=True)(function)


@numba.njit(inline="always")
def is_ascii(data, lo, hi):
    """data[lo:hi] holds only ASCII bytes (a string kernel's test before it applies its rules)."""
    for i in range(lo, hi):
        if data[i] >= 128:
            return False
    return True


def validity(array: pa.Array) -> np.ndarray:
    """Boolean numpy mask of an Arrow array's non-null rows, read off its bitmap."""
    if array.null_count == 0:
        return np.ones(len(array), dtype=np.bool_)
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], dtype=np.uint8), bitorder="little")
    return bits[array.offset : array.offset + len(array)].astype(np.bool_)


def large_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A large string/binary Arrow array's offsets (its n + 1, slice applied) and whole data buffer, as numpy views."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64, count=array.offset + len(array) + 1)[array.offset :]
    data = array.buffers()[2]
    return offsets, np.frombuffer(data, dtype=np.uint8) if data else np.zeros(0, np.uint8)


def map_strings(
    raw: pl.Series, kernel, constants: tuple, fallback: Callable[[pl.Series], pl.Series]
) -> pl.Series:
    """A compiled string kernel over a column; the rows it reports NOT_ASCII go through `fallback`.

    The kernel is called as ``kernel(offsets, data, valid, *constants,
    out_offsets, out_data, status)`` on the column's Arrow buffers and writes
    each row's value, never longer than its input, and its status.
    """
    array = raw.cast(pl.String).to_arrow()
    array = (array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array).cast(pa.large_string())
    n = len(array)
    if n == 0:
        return raw.cast(pl.String)
    offsets, data = large_buffers(array)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    out_data = np.empty(max(1, len(data)), dtype=np.uint8)
    status = np.empty(n, dtype=np.uint8)
    kernel(offsets, data, validity(array), *constants, out_offsets, out_data, status)
    written = pa.py_buffer(np.packbits(status == DONE, bitorder="little"))
    out = pl.Series(raw.name, pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(out_offsets), pa.py_buffer(out_data), written
    ))
    others = pl.Series(np.flatnonzero(status == NOT_ASCII))
    if others.len():
        out = out.scatter(others, fallback(raw.cast(pl.String).gather(others)))
    return out
