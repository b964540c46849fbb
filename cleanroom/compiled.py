"""Compiled per-row kernels (numba), cached on disk next to the package."""

from __future__ import annotations

import numba


def compiled(function):
    """Compile without the GIL and with an on-disk cache; without a writable cache location, once per process."""
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:
        return numba.njit(nogil=True)(function)
