"""Calibrated central intervals: conformal scaling of each credibility level, per parameter.

A query's estimate of a parameter is a *quantile grid*: the median and the central intervals
at every level of :data:`CREDIBILITY` (:func:`grid_levels` gives the quantile levels, in the
order median, lower ends, upper ends). The matches' intervals are too narrow when near-twin
matches agree more closely than they are right, so each level L gets a scale s(L), fitted on
queries with known truth (validation systems or mock observations of them, never the
evaluated ones): the interval ``[m - s (m - lo), m + s (hi - m)]`` around the median m holds
the truth of a new query with probability at least L when the queries are exchangeable
(split conformal prediction with the score ``distance from m / half-width on the truth's
side``). The median is left alone, so the point estimate and its error do not change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from protomatch._quantiles import system_weights, weighted_quantiles

__all__ = [
    "CALIBRATION_FOLDS",
    "CREDIBILITY",
    "IntervalCalibration",
    "calibrated_grid",
    "cross_fitted",
    "fit_scales",
    "grid_levels",
    "group_folds",
    "matches_grid",
    "standard_quantiles",
    "truth_credibility",
    "weighted_grid",
]

#: Credibility levels of the central intervals of a quantile grid (0.68 and 0.95 included).
CREDIBILITY: tuple[float, ...] = tuple(
    sorted({round(0.02 * i, 2) for i in range(1, 50)} | {0.95, 0.99})
)
#: Positions of the standard quantiles (median, q16, q84, q2.5, q97.5) in a grid.
_STANDARD = MappingProxyType(
    {"median": None, "q16": 0.68, "q84": 0.68, "q2.5": 0.95, "q97.5": 0.95}
)
#: Folds of the evaluated systems in cross-fitted calibration (each fold calibrated on the rest).
CALIBRATION_FOLDS = 5
#: Half-widths below this fraction of the parameter's prior spread count as this much.
WIDTH_FLOOR = 1e-3


def grid_levels(credibility: Sequence[float] = CREDIBILITY) -> tuple[float, ...]:
    """Quantile levels of a grid: 0.5, then (1 - L)/2 per level L, then (1 + L)/2.

    Returns
    -------
    tuple of float
        1 + 2G levels in [0, 1].
    """
    levels = np.asarray(credibility, dtype=np.float64)
    return tuple(np.concatenate([[0.5], (1 - levels) / 2, (1 + levels) / 2]).tolist())


def weighted_grid(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The quantile grid of weighted samples (matches' parameter values and their weights).

    Returns
    -------
    numpy.ndarray
        (1 + 2G,) float64, in :func:`grid_levels` order.
    """
    return weighted_quantiles(values, weights, grid_levels())


def matches_grid(
    values: np.ndarray, similarities: np.ndarray, systems: np.ndarray | None = None
) -> np.ndarray:
    """The quantile grid of a set of matches: the estimate and its intervals.

    The median is the similarity-weighted one (the point estimate). The intervals take the
    shape of the matches' distribution with each *system* counted once
    (:func:`protomatch._quantiles.system_weights`), moved to that median: near-twin images
    of one system would otherwise make the intervals look better supported than they are.
    Counting systems in the median too was measured to make it worse on five of seven
    parameters (README, calibration).

    Parameters
    ----------
    values
        (K,) a parameter of the matches.
    similarities
        (K,) their similarities (negative ones count as 0).
    systems
        (K,) their systems; None: the intervals weigh similarity alone.

    Returns
    -------
    numpy.ndarray
        (1 + 2G,) float64, in :func:`grid_levels` order.
    """
    grid = weighted_grid(values, similarities)
    if systems is None:
        return grid
    shaped = weighted_grid(values, system_weights(similarities, systems))
    return shaped + (grid[0] - shaped[0])


def _split(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median (...,), lower ends (..., G), upper ends (..., G)) of quantile grids."""
    g = (grid.shape[-1] - 1) // 2
    return grid[..., 0], grid[..., 1 : 1 + g], grid[..., 1 + g :]


def standard_quantiles(grid: np.ndarray) -> np.ndarray:
    """The median, q16, q84, q2.5, q97.5 of quantile grids.

    Parameters
    ----------
    grid
        (..., 1 + 2G) quantile grids on :data:`CREDIBILITY`.

    Returns
    -------
    numpy.ndarray
        (..., 5) in the order of :data:`protomatch.matching.summary.QUANTILES`.
    """
    median, low, high = _split(np.asarray(grid, dtype=np.float64))
    out = [median]
    for name, level in _STANDARD.items():
        if level is not None:
            i = CREDIBILITY.index(level)
            out.append(low[..., i] if name in ("q16", "q2.5") else high[..., i])
    return np.stack(out, axis=-1)


def _scores(grid: np.ndarray, truth: np.ndarray, floor: float) -> np.ndarray:
    """(Q, G) distance of the truth from the median over the half-width on its side."""
    median, low, high = _split(grid)
    offset = truth - median
    below = np.maximum(median[:, None] - low, floor)
    above = np.maximum(high - median[:, None], floor)
    return np.where(offset[:, None] >= 0, offset[:, None] / above, -offset[:, None] / below)


def fit_scales(grid: np.ndarray, truth: np.ndarray, spread: float) -> np.ndarray:
    """Conformal scale of each credibility level from queries with known truth.

    Parameters
    ----------
    grid
        (Q, 1 + 2G) the queries' quantile grids of one parameter (error space).
    truth
        (Q,) their true values, same space.
    spread
        The parameter's prior spread; half-widths below ``WIDTH_FLOOR`` times it count as that.

    Returns
    -------
    numpy.ndarray
        (G,) scales s(L): the ceil((n + 1) L)-th smallest score of the n finite queries
        (their largest when that rank exceeds n). Raises ValueError with no finite query.
    """
    grid, truth = np.asarray(grid, np.float64), np.asarray(truth, np.float64)
    finite = np.isfinite(truth) & np.isfinite(grid).all(axis=1)
    n = int(finite.sum())
    if n == 0:
        raise ValueError("no query with a finite truth and estimate to calibrate on")
    floor = WIDTH_FLOOR * spread if spread > 0 else 1e-12
    scores = np.sort(_scores(grid[finite], truth[finite], floor), axis=0)
    ranks = np.minimum(np.ceil((n + 1) * np.asarray(CREDIBILITY)), n).astype(int) - 1
    return scores[ranks, np.arange(len(CREDIBILITY))]


def calibrated_grid(grid: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Quantile grids with every central interval scaled about the median.

    Parameters
    ----------
    grid
        (..., 1 + 2G) quantile grids.
    scales
        (G,) scale per credibility level (:func:`fit_scales`).

    Returns
    -------
    numpy.ndarray
        (..., 1 + 2G) the same median; lower ends ``m - s (m - lo)``, upper ends
        ``m + s (hi - m)``, made nested (a wider level never gives a narrower interval).
    """
    median, low, high = _split(np.asarray(grid, dtype=np.float64))
    scales = np.asarray(scales, dtype=np.float64)
    m = median[..., None]
    low = np.minimum.accumulate(m - scales * (m - low), axis=-1)
    high = np.maximum.accumulate(m + scales * (high - m), axis=-1)
    return np.concatenate([median[..., None], low, high], axis=-1)


def truth_credibility(grid: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The smallest credibility level whose central interval holds the truth.

    Parameters
    ----------
    grid
        (Q, 1 + 2G) quantile grids (calibrated or not).
    truth
        (Q,) true values.

    Returns
    -------
    numpy.ndarray
        (Q,) a level of :data:`CREDIBILITY`, 1.0 when no interval holds the truth, NaN where
        the truth or the grid is not finite. For honest intervals it is uniform on [0, 1].
    """
    grid, truth = np.asarray(grid, np.float64), np.asarray(truth, np.float64)
    _, low, high = _split(grid)
    inside = (low <= truth[:, None]) & (truth[:, None] <= high)
    levels = np.asarray(CREDIBILITY)
    first = np.where(inside.any(axis=1), levels[np.argmax(inside, axis=1)], 1.0)
    finite = np.isfinite(truth) & np.isfinite(grid).all(axis=1)
    return np.where(finite, first, np.nan)


@dataclass(frozen=True)
class IntervalCalibration:
    """Fitted interval scales per parameter, and what they were fitted on.

    Attributes
    ----------
    scales
        Parameter name -> (G,) scale per level of :data:`CREDIBILITY`.
    fitted_on
        What the scales were fitted on, in words (shown in reports).
    n_queries
        How many queries with known truth they were fitted on.
    ranking
        The ranking whose matches were calibrated (a calibration holds for that ranking only).
    """

    scales: Mapping[str, tuple[float, ...]]
    fitted_on: str
    n_queries: int
    ranking: str

    @classmethod
    def fit(
        cls,
        grids: Mapping[str, np.ndarray],
        truths: Mapping[str, np.ndarray],
        spreads: Mapping[str, float],
        *,
        fitted_on: str,
        ranking: str,
    ) -> IntervalCalibration:
        """Fit every parameter's scales (:func:`fit_scales`) on queries with known truth."""
        scales = {
            name: tuple(float(s) for s in fit_scales(grid, truths[name], spreads[name]))
            for name, grid in grids.items()
        }
        n = min(int(np.isfinite(np.asarray(t, np.float64)).sum()) for t in truths.values())
        return cls(MappingProxyType(scales), fitted_on, n, ranking)

    def apply(self, name: str, grid: np.ndarray) -> np.ndarray:
        """``grid`` of parameter ``name`` calibrated (unchanged for a parameter not fitted)."""
        if name not in self.scales:
            return np.asarray(grid, dtype=np.float64)
        return calibrated_grid(grid, np.asarray(self.scales[name]))

    def record(self) -> dict[str, Any]:
        """The JSON form (:meth:`from_record` reads it back)."""
        return {
            "credibility": list(CREDIBILITY),
            "scales": {name: list(s) for name, s in self.scales.items()},
            "fitted_on": self.fitted_on,
            "n_queries": self.n_queries,
            "ranking": self.ranking,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> IntervalCalibration:
        """Read :meth:`record`'s form back; ValueError naming what is wrong with it."""
        if list(record.get("credibility", [])) != list(CREDIBILITY):
            raise ValueError("calibration levels differ from this version's")
        scales = record.get("scales")
        if not isinstance(scales, Mapping) or not scales:
            raise ValueError("calibration has no scales")
        checked = {}
        for name, values in scales.items():
            values = [float(v) for v in values]
            if len(values) != len(CREDIBILITY) or not all(
                math.isfinite(v) and v >= 0 for v in values
            ):
                raise ValueError(
                    f"calibration scales of {name!r} are not {len(CREDIBILITY)} "
                    "finite non-negative numbers"
                )
            checked[str(name)] = tuple(values)
        return cls(
            MappingProxyType(checked),
            str(record.get("fitted_on", "")),
            int(record.get("n_queries", 0)),
            str(record.get("ranking", "")),
        )


def group_folds(
    groups: Sequence[Any], n_folds: int = CALIBRATION_FOLDS, seed: int = 0
) -> np.ndarray:
    """Fold of each query, whole groups (systems) to one fold, in a seeded random order.

    Returns
    -------
    numpy.ndarray
        (Q,) int fold in [0, min(n_folds, number of groups)).
    """
    codes, unique = pd.factorize(np.asarray([str(g) for g in groups]))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    fold_of_group[order] = np.arange(len(unique)) % max(1, min(n_folds, len(unique)))
    return fold_of_group[codes]


def cross_fitted(
    grid: np.ndarray, truth: np.ndarray, folds: np.ndarray, spread: float
) -> np.ndarray:
    """Each query's grid calibrated by scales fitted on the other folds only.

    Parameters
    ----------
    grid, truth
        (Q, 1 + 2G) quantile grids and (Q,) true values of one parameter.
    folds
        (Q,) fold of each query (:func:`group_folds`).
    spread
        The parameter's prior spread (:func:`fit_scales`).

    Returns
    -------
    numpy.ndarray
        (Q, 1 + 2G) calibrated grids; the input grid where no other fold has a finite query
        (a single fold).
    """
    grid = np.asarray(grid, dtype=np.float64)
    out = grid.copy()
    for fold in np.unique(folds):
        held = folds == fold
        try:
            scales = fit_scales(grid[~held], np.asarray(truth)[~held], spread)
        except ValueError:
            continue
        out[held] = calibrated_grid(grid[held], scales)
    return out
