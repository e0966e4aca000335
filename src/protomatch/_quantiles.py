"""Weighted quantiles and match weights, shared by the match summary, its report and evaluation.

Below every stage that uses it, so that the report (drawn from a match) and the match
(which writes the report) need not import each other's package.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike


def weighted_quantiles(values: ArrayLike, weights: ArrayLike, qs: Sequence[float]) -> np.ndarray:
    """Quantiles of ``values`` with non-negative ``weights`` (uniform if all are zero).

    Parameters
    ----------
    values
        (n,) values.
    weights
        (n,) weights; negative ones count as 0.
    qs
        Quantile levels in [0, 1].

    Returns
    -------
    numpy.ndarray
        (len(qs),) float64 quantiles, interpolated between the weighted midpoints of the
        sorted values and clamped to their range.
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    if not weights.any():
        weights = np.ones_like(values)
    values, weights = values[weights > 0], weights[weights > 0]
    order = np.argsort(values)
    values, weights = values[order], weights[order]
    cdf = (np.cumsum(weights) - 0.5 * weights) / weights.sum()
    return np.interp(qs, cdf, values)


def system_weights(similarities: ArrayLike, systems: ArrayLike) -> np.ndarray:
    """Match weights that count systems, not images: similarity / the system's match count.

    A system's projections and snapshots are near-duplicates; with plain similarity weights
    one system among the matches many times would count as many independent estimates.

    Parameters
    ----------
    similarities
        (K,) similarities of the matches (negative ones count as 0).
    systems
        (K,) system of each match.

    Returns
    -------
    numpy.ndarray
        (K,) float64 weights; each system's weights sum to its mean similarity.
    """
    weights = np.clip(np.asarray(similarities, dtype=np.float64), 0, None)
    _, codes, counts = np.unique(np.asarray(systems), return_inverse=True, return_counts=True)
    return weights / counts[codes.reshape(-1)]
