"""The sampler draws discrete Laplace noise at scale sensitivity/epsilon, and only at that scale."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from cleanroom.errors import InputError
from cleanroom.privacy import noisy_counts

SAMPLES = 40_000
BASE = 10**6  # far from 0, so clipping never touches the draws
Z = 5.5  # two-sided tail about 4e-8 per statistic: six checks fail falsely < 1e-6


def draw(epsilon: float, sensitivity: int) -> np.ndarray:
    return noisy_counts(np.full(SAMPLES, BASE), epsilon=epsilon, sensitivity=sensitivity) - BASE


def z_scores(noise: np.ndarray, scale: float) -> dict[str, float]:
    """How far the sample's mean, mean absolute deviation and share of zeros are from discrete Laplace(scale)."""
    a = math.exp(-1 / scale)
    second = 2 * a / (1 - a) ** 2  # E[X^2] = Var X
    mad = 2 * a / (1 - a * a)  # E|X|
    zero = (1 - a) / (1 + a)  # P(X = 0)
    n = len(noise)
    return {
        "mean": noise.mean() / math.sqrt(second / n),
        "mad": (np.abs(noise).mean() - mad) / math.sqrt((second - mad**2) / n),
        "zero": ((noise == 0).mean() - zero) / math.sqrt(zero * (1 - zero) / n),
    }


def consistent(noise: np.ndarray, scale: float) -> bool:
    return all(abs(z) < Z for z in z_scores(noise, scale).values())


@pytest.mark.parametrize(("epsilon", "sensitivity"), [(1.0, 1), (0.5, 2)])
def test_noise_has_the_stated_scale(epsilon: float, sensitivity: int) -> None:
    assert consistent(draw(epsilon, sensitivity), sensitivity / epsilon)


@pytest.mark.parametrize("factor", [0.7, 1.3])
@pytest.mark.parametrize(("epsilon", "sensitivity"), [(1.0, 1), (0.5, 2)])
def test_the_same_check_rejects_a_wrong_scale(epsilon: float, sensitivity: int, factor: float) -> None:
    assert not consistent(draw(epsilon / factor, sensitivity), sensitivity / epsilon)


def test_counts_stay_integers_and_non_negative() -> None:
    noisy = noisy_counts(pl.Series([0, 0, 1, 2, 500] * 200), epsilon=0.1, sensitivity=3)
    assert noisy.dtype == np.int64 and noisy.min() >= 0 and len(noisy) == 1000


@pytest.mark.parametrize(
    ("counts", "error"),
    [([1.0, 2.0], InputError), ([3, -1], InputError), ([None, 2], InputError)],
)
def test_bad_counts_are_refused(counts: list, error: type[Exception]) -> None:
    with pytest.raises(error):
        noisy_counts(pl.Series(counts), epsilon=1.0, sensitivity=1)


@pytest.mark.parametrize(("epsilon", "sensitivity"), [(0.0, 1), (math.inf, 1), (1.0, 0)])
def test_bad_parameters_are_refused(epsilon: float, sensitivity: int) -> None:
    with pytest.raises(ValueError):
        noisy_counts(np.array([5]), epsilon=epsilon, sensitivity=sensitivity)
