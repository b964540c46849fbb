"""Discrete Laplace noise on integer counts, drawn by OpenDP's vetted sampler."""

from __future__ import annotations

import numpy as np
import polars as pl
from opendp.domains import atom_domain, vector_domain
from opendp.measurements import make_laplace
from opendp.metrics import l1_distance
from opendp.mod import enable_features
from opendp.typing import i64

from cleanroom.errors import InputError

# The submodules, not opendp.prelude: the prelude also loads OpenDP's scikit-learn
# extras when scikit-learn is installed, a second of start-up for every command.
enable_features("contrib")


def noisy_counts(counts: pl.Series | np.ndarray, *, epsilon: float, sensitivity: int) -> np.ndarray:
    """Return `counts` plus discrete Laplace noise of scale `sensitivity / epsilon`, clipped at 0.

    `sensitivity` is the L1 sensitivity of the whole vector: the most cells one
    person can change, by one each. The draw is epsilon-DP for that vector;
    clipping at 0 is post-processing and costs no privacy (it biases cells near
    zero upward, and margins are then computed from the clipped cells).
    """
    if not (epsilon > 0 and np.isfinite(epsilon)):
        raise ValueError("epsilon must be a positive finite number")
    if sensitivity < 1:
        raise ValueError("sensitivity must be at least 1")
    values = counts.to_numpy() if isinstance(counts, pl.Series) else np.asarray(counts)
    if values.dtype.kind not in "iu":
        raise InputError("counts must be an integer column without nulls")
    if values.size == 0:
        return values.astype(np.int64)
    if values.min() < 0:
        raise InputError("counts must not be negative")
    measurement = make_laplace(vector_domain(atom_domain(T=i64)), l1_distance(T=i64), scale=sensitivity / epsilon)
    if measurement.map(sensitivity) > epsilon * (1 + 1e-9):
        raise RuntimeError("OpenDP's privacy map exceeds the requested epsilon")
    noisy = np.asarray(measurement(values.astype(np.int64).tolist()), dtype=np.int64)
    return np.maximum(noisy, 0)
