"""Matching across a range of distances, as grid fitters of young-star models do.

A grid of distances, the rankings at each pooled into one, and which distances the best
matches prefer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from protomatch._quantiles import weighted_quantiles
from protomatch.matching.search import Ranking

__all__ = ["distance_grid", "pool_rankings", "preferred_distances"]


def distance_grid(low: float, high: float, steps: int) -> np.ndarray:
    """``steps`` distances [pc] spaced evenly in log from ``low`` to ``high`` (one if equal).

    Parameters
    ----------
    low, high
        The range [pc], 0 < low <= high.
    steps
        Number of distances, >= 2 unless ``low == high``.

    Returns
    -------
    numpy.ndarray
        (steps,) float64 distances [pc], ascending, rounded to 6 significant digits.
    """
    if low == high:
        return np.array([float(low)])
    return np.array([float(f"{d:.6g}") for d in np.geomspace(low, high, steps)])


def pool_rankings(runs: Sequence[tuple[float, Ranking]]) -> tuple[Ranking, np.ndarray]:
    """Pool the rankings of one target at several distances into one ranking.

    Each library image keeps its best similarity over the distances and the distance it
    reached it at. The analogue statistics (what good analogues reach) are the median over
    the runs, the noise the first run's, and the notes the first run's plus a line per run.

    Parameters
    ----------
    runs
        (distance [pc], ranking) per distance.

    Returns
    -------
    tuple
        The pooled :class:`Ranking` (descending) and (n,) float64 distance [pc] of each of
        its entries.
    """
    sims = np.concatenate([r.similarities for _, r in runs]).astype(np.float32)
    ids = np.concatenate([r.ids for _, r in runs])
    where = np.concatenate([np.full(len(r.ids), d, dtype=np.float64) for d, r in runs])
    valid = ids >= 0
    sims, ids, where = sims[valid], ids[valid], where[valid]
    order = np.lexsort((ids, -sims))  # best first; ties broken by id, deterministically
    sims, ids, where = sims[order], ids[order], where[order]
    _, first = np.unique(ids, return_index=True)
    keep = np.sort(first)
    keys = runs[0][1].analogues.keys()
    analogues = {key: float(np.median([r.analogues[key] for _, r in runs])) for key in keys}
    notes = (
        *runs[0][1].notes,
        f"matched at {len(runs)} distances from {runs[0][0]:.4g} to {runs[-1][0]:.4g} pc "
        "(log-spaced); each library image counts once, at the distance where it matched best",
    )
    sample = runs[0][1].sample  # the batch test sees the target at the first distance
    closest = max((r.closest for _, r in runs), default=math.nan)
    pooled = Ranking(sims[keep], ids[keep], analogues, runs[0][1].noise, notes, sample, closest)
    return pooled, where[keep]


def preferred_distances(
    distances: np.ndarray, similarities: np.ndarray, grid: np.ndarray
) -> dict[str, Any]:
    """Which distances the kept matches prefer.

    Parameters
    ----------
    distances
        (k,) distance [pc] at which each kept match was found.
    similarities
        (k,) their similarities (weights; negative ones count as 0).
    grid
        The distances tried [pc].

    Returns
    -------
    dict
        ``grid``, ``counts`` (matches found at each grid distance), ``median``, ``q16``,
        ``q84`` (similarity-weighted quantiles [pc]) and ``best`` (distance of the best match).
    """
    q16, median, q84 = weighted_quantiles(distances, similarities, (0.16, 0.5, 0.84))
    counts = [int(np.isclose(distances, d).sum()) for d in grid]
    return {
        "grid": [float(d) for d in grid],
        "counts": counts,
        "median": float(median),
        "q16": float(q16),
        "q84": float(q84),
        "best": float(distances[0]),
    }
