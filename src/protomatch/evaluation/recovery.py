"""Pure metric functions of parameter recovery: the matches' parameters against the truth.

Everything here works on plain arrays (no files, no model), so each metric can be checked
by hand on tiny inputs. Used by :mod:`protomatch.evaluation.library` and
:mod:`protomatch.evaluation.observations`; the similarity and retrieval metrics are in
:mod:`protomatch.evaluation.metrics`.

Errors are measured in the error space (:func:`error_space`: log10, i.e. dex, for log-scaled
parameters). A query's estimate is the similarity-weighted quantiles of its matches'
parameters (:func:`recovered_quantiles`), in the order of
:data:`protomatch.matching.summary.QUANTILES`; the prior's quantiles are the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from protomatch.calibration import diagnostics
from protomatch.calibration.intervals import (
    cross_fitted,
    grid_levels,
    matches_grid,
    standard_quantiles,
    truth_credibility,
)
from protomatch.matching.summary import QUANTILES

#: Quantile levels of :func:`recovered_quantiles`, in :data:`QUANTILES` order.
LEVELS = tuple(QUANTILES.values())


def error_space(values: np.ndarray, log10: bool) -> np.ndarray:
    """Parameter values where errors are measured: log10 (dex) for log-scaled ones.

    Parameters
    ----------
    values : ndarray
        A parameter in physical units, any shape.
    log10 : bool
        Whether the parameter is log-scaled.

    Returns
    -------
    ndarray, float64
        Same shape; NaN where a log-scaled value is not positive.
    """
    values = np.asarray(values, dtype=np.float64)
    if not log10:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)


def recovered_grids(
    values: np.ndarray,
    weights: np.ndarray,
    valid: np.ndarray | None = None,
    systems: np.ndarray | None = None,
) -> np.ndarray:
    """Quantile grids of each query's matches (see :func:`matches_grid`).

    Parameters
    ----------
    values : ndarray, shape (Q, K)
        A parameter of each query's K matches (in the error space).
    weights : ndarray, shape (Q, K)
        Match similarities (negatives count as 0; uniform if none is positive).
    valid : ndarray, shape (Q, K), bool, optional
        Filled match slots (default: all).
    systems : ndarray, shape (Q, K), optional
        System of each match: the intervals count each system once; None: plain
        similarities.

    Returns
    -------
    ndarray, shape (Q, 1 + 2G), float64
        Grids on :data:`protomatch.calibration.intervals.CREDIBILITY`; NaN rows for queries
        without matches.
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    valid = np.ones(values.shape, bool) if valid is None else np.asarray(valid, bool)
    valid = valid & np.isfinite(values)
    levels = grid_levels()
    out = np.full((len(values), len(levels)), np.nan)
    for q in range(len(values)):
        if valid[q].any():
            matched = None if systems is None else np.asarray(systems)[q, valid[q]]
            out[q] = matches_grid(values[q, valid[q]], weights[q, valid[q]], matched)
    return out


def recovered_quantiles(
    values: np.ndarray,
    weights: np.ndarray,
    valid: np.ndarray | None = None,
    systems: np.ndarray | None = None,
) -> np.ndarray:
    """The standard quantiles of :func:`recovered_grids` (same arguments).

    Returns
    -------
    ndarray, shape (Q, 5), float64
        In the order of :data:`protomatch.matching.summary.QUANTILES` (median, q16, q84,
        q2.5, q97.5).
    """
    return standard_quantiles(recovered_grids(values, weights, valid, systems))


def quantile_index(name: str) -> int:
    """Column of :func:`recovered_quantiles` holding one quantile.

    Parameters
    ----------
    name : str
        A key of :data:`protomatch.matching.summary.QUANTILES` ("median", "q16", ...).

    Returns
    -------
    int
        The column.
    """
    return list(QUANTILES).index(name)


def interval_coverage(truth: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Fraction of finite cases with ``low <= truth <= high``.

    Parameters
    ----------
    truth, low, high : ndarray, shape (Q,)
        True values and interval bounds (same units).

    Returns
    -------
    float
        NaN if no case is finite.
    """
    truth, low, high = (np.asarray(a, dtype=np.float64) for a in (truth, low, high))
    finite = np.isfinite(truth) & np.isfinite(low) & np.isfinite(high)
    if not finite.any():
        return math.nan
    inside = (low[finite] <= truth[finite]) & (truth[finite] <= high[finite])
    return float(inside.mean())


def median_absolute_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Median over queries of ``|estimate - truth|``.

    Parameters
    ----------
    estimate, truth : ndarray, shape (Q,)
        Estimated and true values (same units, e.g. dex).

    Returns
    -------
    float
        Over the finite cases; NaN if there is none.
    """
    error = np.abs(np.asarray(estimate, np.float64) - np.asarray(truth, np.float64))
    error = error[np.isfinite(error)]
    return float(np.median(error)) if error.size else math.nan


def prior_spread(values: np.ndarray) -> float:
    """Half the 16-84 % width of a distribution (the 1-sigma scale of a Gaussian).

    Parameters
    ----------
    values : ndarray, shape (N,)
        Samples of the distribution (non-finite ones are ignored).

    Returns
    -------
    float
        Same units as ``values``; NaN if none is finite.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan
    low, high = np.quantile(values, [0.16, 0.84])
    return float((high - low) / 2)


def group_quantiles(
    values: np.ndarray, groups: np.ndarray, wanted: Sequence[str], levels: Sequence[float]
) -> dict[str, np.ndarray]:
    """Quantiles of ``values`` over all rows NOT in each group of ``wanted``.

    This is the prior a query of group g sees when its own group is left out.

    Parameters
    ----------
    values : ndarray, shape (N,)
        A parameter of every row (non-finite values are ignored).
    groups : ndarray, shape (N,)
        Group (system) of every row.
    wanted : sequence of str
        Groups whose held-out quantiles are wanted.
    levels : sequence of float
        Quantile levels in [0, 1].

    Returns
    -------
    dict of str to ndarray
        Per wanted group, the quantiles (len(levels),); NaN if no other row is finite.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    result = {}
    for group in wanted:
        others = values[(groups != group) & np.isfinite(values)]
        result[group] = (
            np.quantile(others, list(levels)) if others.size else np.full(len(levels), np.nan)
        )
    return result


def recovery_scores(quantiles: np.ndarray, truth: np.ndarray, spread: float) -> dict[str, float]:
    """Error and interval coverage of recovered quantiles against the truth.

    Parameters
    ----------
    quantiles : ndarray, shape (Q, 5)
        Recovered quantiles per query, as :func:`recovered_quantiles` gives them.
    truth : ndarray, shape (Q,)
        True values, same space (e.g. dex).
    spread : float
        The prior's spread (:func:`prior_spread`), same space.

    Returns
    -------
    dict of str to float
        ``median_abs_error`` of the median, that error over ``spread``
        (``error_over_prior_spread``), and the coverage of the 16-84 % and 2.5-97.5 %
        intervals (``coverage68``, ``coverage95``).
    """
    column = {name: quantile_index(name) for name in QUANTILES}
    error = median_absolute_error(quantiles[:, column["median"]], truth)
    return {
        "median_abs_error": error,
        "error_over_prior_spread": error / spread if spread > 0 else math.nan,
        "coverage68": interval_coverage(
            truth, quantiles[:, column["q16"]], quantiles[:, column["q84"]]
        ),
        "coverage95": interval_coverage(
            truth, quantiles[:, column["q2.5"]], quantiles[:, column["q97.5"]]
        ),
    }


def held_out_prior(values: np.ndarray, query_rows: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The prior each query of the library sees: quantiles of the rows of other systems.

    Parameters
    ----------
    values : ndarray, shape (N,)
        A parameter of every library row, in the error space.
    query_rows : ndarray, shape (Q,)
        Library rows of the queries.
    groups : ndarray, shape (N,)
        System of every row.

    Returns
    -------
    ndarray, shape (Q, 1 + 2G), float64
        Quantile grids (:func:`protomatch.calibration.intervals.grid_levels`).
    """
    query_groups = groups[query_rows]
    prior = group_quantiles(values, groups, np.unique(query_groups).tolist(), grid_levels())
    return np.stack([prior[g] for g in query_groups.tolist()])


class ParameterRecovery(TypedDict):
    """How well one parameter is recovered, as in the metrics records.

    Attributes
    ----------
    prior_spread : float
        :func:`prior_spread` of the library's values (error space).
    methods : dict of str to dict
        :func:`recovery_scores` by method (of the calibrated intervals when calibrated),
        the prior's under "prior"; with calibration also ``uncalibrated`` (the coverages
        before it) and ``diagnostics`` (coverage curve and rank histogram, before and after).
    """

    prior_spread: float
    methods: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Recovered:
    """One parameter recovered by every method.

    Attributes
    ----------
    recovery
        The scores (:class:`ParameterRecovery`).
    grids
        Method -> (Q, 1 + 2G) the quantile grids scored: cross-fitted calibrated ones when
        folds were given (the prior's are never calibrated).
    raw
        Method -> (Q, 1 + 2G) the grids before calibration.
    """

    recovery: ParameterRecovery
    grids: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]

    def quantiles(self, method: str) -> np.ndarray:
        """(Q, 5) the standard quantiles of a method's scored grids."""
        return standard_quantiles(self.grids[method])


def parameter_recovery(
    values: np.ndarray,
    truth: np.ndarray,
    prior: np.ndarray,
    rankings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    k: int | None = None,
    *,
    systems: np.ndarray | None = None,
    folds: np.ndarray | None = None,
    direct: Mapping[str, np.ndarray] | None = None,
) -> Recovered:
    """One parameter recovered by each ranking's top ``k`` matches, and by the prior.

    Parameters
    ----------
    values : ndarray, shape (N,)
        The parameter of every library row, in the error space.
    truth : ndarray, shape (Q,)
        The queries' true values, same space (``values[query_rows]`` for library queries).
    prior : ndarray, shape (Q, 1 + 2G) or (1 + 2G,)
        Quantile grid of the prior each query sees (:func:`held_out_prior` for library
        queries, the whole library's for observations).
    rankings : Mapping of str to (scores, rows)
        Method -> similarity scores and library rows, each (Q, K >= k), best first, rows
        -1 for empty slots.
    k : int, optional
        Matches summarised per query (default: all K).
    systems : ndarray, shape (N,), optional
        System of every library row: the intervals count systems, not images.
    folds : ndarray, shape (Q,), optional
        Calibration fold of every query (:func:`protomatch.calibration.intervals.
        group_folds`): each query's intervals are calibrated on the other folds' queries.
    direct : Mapping of str to ndarray (Q, 1 + 2G), optional
        Grids of methods that estimate without matches (NPE).

    Returns
    -------
    Recovered
        Scores, the scored grids and the grids before calibration, the prior last.
    """
    raw = {}
    for method, (scores, rows) in rankings.items():
        scores, rows = scores[:, :k], rows[:, :k]
        safe = np.where(rows >= 0, rows, 0)
        matched_systems = None if systems is None else np.asarray(systems)[safe]
        raw[method] = recovered_grids(values[safe], scores, rows >= 0, matched_systems)
    raw.update(direct or {})
    spread = prior_spread(values)
    grids = {
        m: g if folds is None else cross_fitted(g, truth, folds, spread) for m, g in raw.items()
    }
    shape = (len(truth), len(grid_levels()))
    raw["prior"] = grids["prior"] = np.broadcast_to(np.asarray(prior, np.float64), shape).copy()
    methods: dict[str, dict[str, Any]] = {}
    for method, grid in grids.items():
        methods[method] = dict(recovery_scores(standard_quantiles(grid), truth, spread))
        if folds is not None and method != "prior":
            methods[method]["uncalibrated"] = {
                key: value
                for key, value in recovery_scores(
                    standard_quantiles(raw[method]), truth, spread
                ).items()
                if key.startswith("coverage")
            }
            methods[method]["diagnostics"] = {
                "uncalibrated": _diagnostics(raw[method], truth),
                "calibrated": _diagnostics(grid, truth),
            }
    return Recovered({"prior_spread": spread, "methods": methods}, grids, raw)


def _diagnostics(grid: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Coverage curve and rank histogram of one method's grids of one parameter."""
    return diagnostics.diagnose(truth_credibility(grid, truth), truth, grid[:, 0])


def bootstrap_relative_error(
    medians: Mapping[str, np.ndarray],
    truths: np.ndarray,
    spreads: Sequence[float],
    reference: str,
    *,
    draws: int = 2000,
    seed: int = 0,
) -> dict[str, object]:
    """95 % bootstrap intervals, over the observations, of the mean error / prior spread.

    Each draw resamples the observations with replacement (the same rows for every method,
    so differences are paired) and takes, per method, the mean over parameters of the
    median absolute error over the prior's spread, as :func:`recovery_scores` does.

    Parameters
    ----------
    medians
        Method -> (Q, P) estimated medians in error space (dex for log-scaled parameters).
    truths
        (Q, P) true values, same space.
    spreads
        The prior's spread per parameter (:func:`prior_spread`), same space.
    reference
        The method whose differences to the others are reported (protomatch's).
    draws, seed
        Bootstrap draws and their random seed.

    Returns
    -------
    dict
        ``interval``: method -> [2.5 %, 97.5 %] of its mean error / prior spread;
        ``difference``: other method -> the same for ``reference`` minus it (negative:
        ``reference`` better); ``parameter_difference``: other method -> per parameter, the
        interval of ``reference``'s error / prior spread minus its; ``draws``.
    """
    spread = np.asarray(spreads, dtype=np.float64)
    spread = np.where(spread > 0, spread, np.nan)
    n = len(truths)
    rows = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    per_parameter = {}  # method -> (draws, P) median error / prior spread
    for method, values in medians.items():
        relative = np.abs(np.asarray(values, np.float64) - truths) / spread
        per_parameter[method] = np.concatenate(
            [
                np.nanmedian(relative[block], axis=1)
                for block in np.array_split(rows, max(1, draws * n // 2_000_000))
            ]
        )
    scores = {m: np.nanmean(v, axis=1) for m, v in per_parameter.items()}

    def interval(x: np.ndarray) -> list[float]:
        return [float(v) for v in np.nanpercentile(x, [2.5, 97.5])]

    others = [m for m in medians if m != reference]
    return {
        "draws": draws,
        "interval": {m: interval(s) for m, s in scores.items()},
        "difference": {m: interval(scores[reference] - scores[m]) for m in others},
        "parameter_difference": {
            m: [
                interval(per_parameter[reference][:, p] - per_parameter[m][:, p])
                for p in range(len(spread))
            ]
            for m in others
        },
    }


def verdict(difference: Sequence[float]) -> str:
    """The verdict of a paired interval of reference minus baseline: better, worse or not resolved.

    Parameters
    ----------
    difference
        [low, high] bootstrap interval of the reference's error minus the baseline's.

    Returns
    -------
    str
        "better" when the whole interval is below 0, "worse" when above, else "not resolved".
    """
    low, high = difference
    if high < 0:
        return "better"
    return "worse" if low > 0 else "not resolved"
