"""Pure metric functions of the evaluation stage: similarity, retrieval, parameter recovery.

Everything here works on plain arrays (no files, no model), so each metric can be checked
by hand on tiny inputs. Used by :mod:`protomatch.evaluation.library` and
:mod:`protomatch.evaluation.observations`.

Retrieval conventions: a query is ranked against candidates of *other* groups (systems)
only; ``-inf`` scores and id ``-1`` mark empty slots when fewer than ``k`` candidates exist.
Graded relevance for nDCG is ``max(true similarity, 0)``, with gain discounted by
``log2(rank + 1)`` (rank from 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np
from scipy.stats import spearmanr

from protomatch.matching.summary import QUANTILES, weighted_quantiles

#: Quantile levels of :func:`recovered_quantiles`, in :data:`QUANTILES` order.
LEVELS = tuple(QUANTILES.values())
#: Candidates scored at once per query block (bounds memory to Q x block float32).
DEFAULT_BLOCK = 8192


# --------------------------------------------------------------------------- top k


class RunningTopK:
    """The ``k`` best-scoring candidate ids per query, fed block by block.

    Parameters
    ----------
    n_queries : int
        Number of queries Q.
    k : int
        Candidates kept per query; the result has shape (Q, k).
    """

    def __init__(self, n_queries: int, k: int) -> None:
        self._scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        self._ids = np.full((n_queries, k), -1, dtype=np.int64)
        self._k = k

    def push(self, scores: np.ndarray, ids: np.ndarray) -> None:
        """Merge a block of candidates; a ``-inf`` score never enters.

        Parameters
        ----------
        scores : ndarray, shape (Q, B)
            Score of each of the block's B candidates for each query.
        ids : ndarray, shape (B,) or (Q, B)
            Candidate ids.
        """
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.broadcast_to(np.asarray(ids, dtype=np.int64), scores.shape)
        ids = np.where(np.isneginf(scores), -1, ids)
        merged_scores = np.concatenate([self._scores, scores], axis=1)
        merged_ids = np.concatenate([self._ids, ids], axis=1)
        if merged_scores.shape[1] > self._k:
            keep = np.argpartition(-merged_scores, self._k - 1, axis=1)[:, : self._k]
            merged_scores = np.take_along_axis(merged_scores, keep, axis=1)
            merged_ids = np.take_along_axis(merged_ids, keep, axis=1)
        self._scores, self._ids = merged_scores, merged_ids

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The best candidates so far.

        Returns
        -------
        scores : ndarray, shape (Q, k), float32
            Best first; ``-inf`` for empty slots.
        ids : ndarray, shape (Q, k), int64
            Candidate ids, -1 for empty slots.
        """
        order = np.argsort(-self._scores, axis=1, kind="stable")
        return (
            np.take_along_axis(self._scores, order, axis=1),
            np.take_along_axis(self._ids, order, axis=1),
        )


def own_group_mask(query_groups: np.ndarray, candidate_groups: np.ndarray) -> np.ndarray:
    """Where a candidate belongs to the query's own group (system).

    Parameters
    ----------
    query_groups : ndarray, shape (Q,)
        Group label of each query.
    candidate_groups : ndarray, shape (B,)
        Group label of each candidate.

    Returns
    -------
    ndarray, shape (Q, B), bool
        True where the labels are equal.
    """
    return np.asarray(query_groups)[:, None] == np.asarray(candidate_groups)[None, :]


def top_k_excluding(
    queries: np.ndarray,
    candidates: np.ndarray,
    query_groups: np.ndarray,
    candidate_groups: np.ndarray,
    k: int,
    block: int = DEFAULT_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` candidates by inner product, leaving out each query's own group.

    Parameters
    ----------
    queries : ndarray, shape (Q, D)
        Query vectors (L2-normalised for cosine similarity).
    candidates : ndarray, shape (N, D)
        Candidate vectors; ids are row numbers.
    query_groups, candidate_groups : ndarray, shapes (Q,) and (N,)
        Group labels (system ids).
    k : int
        Number of results per query.
    block : int
        Candidates scored at once (memory ~ Q x block x 4 bytes).

    Returns
    -------
    scores : ndarray, shape (Q, k), float32
        Inner products, best first (``-inf`` for empty slots).
    rows : ndarray, shape (Q, k), int64
        Candidate rows (-1 for empty slots).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best = RunningTopK(len(queries), k)
    for start in range(0, len(candidates), block):
        chunk = np.asarray(candidates[start : start + block], dtype=np.float32)
        scores = queries @ chunk.T
        scores[own_group_mask(query_groups, candidate_groups[start : start + block])] = -np.inf
        best.push(scores, np.arange(start, start + len(chunk)))
    return best.result()


def random_top_k(
    query_groups: np.ndarray,
    candidate_groups: np.ndarray,
    k: int,
    rng: np.random.Generator,
    block: int = DEFAULT_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """A random ranking of other groups' candidates: ``k`` uniform picks per query.

    Parameters
    ----------
    query_groups : ndarray, shape (Q,)
        Group label of each query.
    candidate_groups : ndarray, shape (N,)
        Group label of each candidate; ids are row numbers.
    k : int
        Number of results per query.
    rng : numpy.random.Generator
        Source of the random keys.
    block : int
        Candidates drawn at once.

    Returns
    -------
    tuple of ndarray
        As :func:`top_k_excluding` returns them; the scores are the random keys.
    """
    best = RunningTopK(len(query_groups), k)
    for start in range(0, len(candidate_groups), block):
        stop = min(start + block, len(candidate_groups))
        scores = rng.random((len(query_groups), stop - start), dtype=np.float32)
        scores[own_group_mask(query_groups, candidate_groups[start:stop])] = -np.inf
        best.push(scores, np.arange(start, stop))
    return best.result()


# --------------------------------------------------------------------------- retrieval


def gathered_similarity(
    queries: np.ndarray, candidates: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Inner products of each query with its retrieved candidates.

    Parameters
    ----------
    queries : ndarray, shape (Q, D)
        Query vectors.
    candidates : ndarray, shape (N, D)
        Unit rows (e.g. of :func:`protomatch.matching.summary.unit_rows`), so the result is
        the cosine similarity.
    rows : ndarray, shape (Q, K)
        Retrieved candidate rows per query, -1 for empty slots.

    Returns
    -------
    ndarray, shape (Q, K), float64
        Clipped to [-1, 1]; NaN for empty slots.
    """
    found = np.asarray(candidates)[np.where(rows >= 0, rows, 0)]
    sims = np.einsum("qd,qkd->qk", queries, found, dtype=np.float64)
    return np.where(rows >= 0, np.clip(sims, -1.0, 1.0), np.nan)


def relevant_fraction(
    queries: np.ndarray,
    candidates: np.ndarray,
    query_groups: np.ndarray,
    candidate_groups: np.ndarray,
    threshold: float,
    block: int = DEFAULT_BLOCK,
) -> float:
    """Mean over queries of the fraction of other groups' candidates at least ``threshold``.

    This is the expected precision of a random ranking.

    Parameters
    ----------
    queries : ndarray, shape (Q, D)
        Query vectors.
    candidates : ndarray, shape (N, D)
        Candidate vectors.
    query_groups, candidate_groups : ndarray, shapes (Q,) and (N,)
        Group labels; a query's own group is not counted.
    threshold : float
        Similarity (inner product) of a relevant candidate.
    block : int
        Candidates scored at once.

    Returns
    -------
    float
        Mean relevant fraction.
    """
    hits = np.zeros(len(queries))
    total = np.zeros(len(queries))
    for start in range(0, len(candidates), block):
        stop = min(start + block, len(candidates))
        other = ~own_group_mask(query_groups, candidate_groups[start:stop])
        sims = queries @ np.asarray(candidates[start:stop]).T
        hits += ((sims >= threshold) & other).sum(axis=1)
        total += other.sum(axis=1)
    return float(np.mean(hits / np.maximum(total, 1)))


def precision_at_k(ranked_true: np.ndarray, threshold: float, k: int) -> np.ndarray:
    """Fraction of each query's top ``k`` whose true similarity is >= ``threshold``.

    Parameters
    ----------
    ranked_true : ndarray, shape (Q, K)
        True similarity of the retrieved candidates in rank order, NaN for empty slots;
        K >= k.
    threshold : float
        True similarity of a relevant candidate.
    k : int
        Cut-off.

    Returns
    -------
    ndarray, shape (Q,), float64
        The denominator is the number of filled slots among the first ``k`` (NaN when
        there are none).
    """
    top = np.asarray(ranked_true, dtype=np.float64)[:, :k]
    filled = np.isfinite(top).sum(axis=1)
    hits = (np.nan_to_num(top, nan=-np.inf) >= threshold).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(filled > 0, hits / np.maximum(filled, 1), np.nan)


def dcg_at_k(gains: np.ndarray, k: int) -> np.ndarray:
    """Discounted cumulative gain: sum of g_i / log2(i + 1) over the first ``k`` ranks.

    Parameters
    ----------
    gains : ndarray, shape (Q, K)
        Gain of each retrieved candidate in rank order (NaN counts as 0).
    k : int
        Cut-off.

    Returns
    -------
    ndarray, shape (Q,), float64
        DCG@k per query.
    """
    top = np.nan_to_num(np.asarray(gains, dtype=np.float64)[:, :k], nan=0.0)
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    return top @ discounts


def ndcg_at_k(ranked_true: np.ndarray, ideal_true: np.ndarray, k: int) -> np.ndarray:
    """Normalised DCG with graded relevance max(true similarity, 0).

    Parameters
    ----------
    ranked_true : ndarray, shape (Q, K)
        True similarity of the retrieved candidates in rank order (NaN: empty slot).
    ideal_true : ndarray, shape (Q, K')
        True similarity of the best candidates of the same candidate set, in descending
        order (the ideal ranking).
    k : int
        Cut-off.

    Returns
    -------
    ndarray, shape (Q,), float64
        In [0, 1]; NaN where no candidate has positive relevance.
    """
    gains = np.clip(np.asarray(ranked_true, dtype=np.float64), 0.0, None)
    ideal = np.clip(np.asarray(ideal_true, dtype=np.float64), 0.0, None)
    ideal = -np.sort(-np.nan_to_num(ideal, nan=0.0), axis=1)
    achieved, best = dcg_at_k(gains, k), dcg_at_k(ideal, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(best > 0, achieved / np.where(best > 0, best, 1.0), np.nan)


# --------------------------------------------------------------------------- similarity


def similarity_metrics(
    predicted: np.ndarray,
    true: np.ndarray,
    *,
    window: tuple[float, float] = (0.9, 1.0),
    tolerance: float = 0.1,
    bins: int = 80,
) -> dict[str, object]:
    """How well predicted similarities of pairs match their labels.

    Parameters
    ----------
    predicted, true : ndarray, shape (B,)
        Predicted and true similarity of B pairs, in [-1, 1].
    window : tuple of float
        The research pipeline's accuracy: among pairs whose *prediction* lies in
        ``window`` (inclusive), the fraction with ``|true - predicted| < tolerance``.
    tolerance : float
        See ``window``.
    bins : int
        Bins of the error histogram over [-2, 2].

    Returns
    -------
    dict
        ``n_pairs``, ``mse``, ``mse_trivial`` (predicting the mean label), ``spearman``,
        ``accuracy`` {window, tolerance, n_pairs, fraction} and ``error_histogram``
        {edges, counts} of ``predicted - true``.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if predicted.shape != true.shape or predicted.ndim != 1 or len(predicted) < 2:
        raise ValueError("need two equal-length 1-D arrays of at least two pairs")
    error = predicted - true
    confident = (predicted >= window[0]) & (predicted <= window[1])
    n_confident = int(confident.sum())
    accurate = np.abs(error[confident]) < tolerance
    rho = spearmanr(predicted, true).statistic
    counts, edges = np.histogram(np.clip(error, -2.0, 2.0), bins=bins, range=(-2.0, 2.0))
    return {
        "n_pairs": len(predicted),
        "mse": float(np.mean(error**2)),
        "mse_trivial": float(np.mean((true - true.mean()) ** 2)),
        "spearman": _float_or_nan(rho),
        "accuracy": {
            "window": [float(window[0]), float(window[1])],
            "tolerance": float(tolerance),
            "n_pairs": n_confident,
            "fraction": float(accurate.mean()) if n_confident else math.nan,
        },
        "error_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def _float_or_nan(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else math.nan


# --------------------------------------------------------------------------- recovery


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


def recovered_quantiles(
    values: np.ndarray, weights: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """Similarity-weighted quantiles of each query's matches.

    Parameters
    ----------
    values : ndarray, shape (Q, K)
        A parameter of each query's K matches (in the error space).
    weights : ndarray, shape (Q, K)
        Match similarities (negatives count as 0; uniform if none is positive).
    valid : ndarray, shape (Q, K), bool, optional
        Filled match slots (default: all).

    Returns
    -------
    ndarray, shape (Q, 5), float64
        Quantiles in the order of :data:`protomatch.matching.summary.QUANTILES` (median,
        q16, q84, q2.5, q97.5); NaN rows for queries without matches.
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    valid = np.ones(values.shape, bool) if valid is None else np.asarray(valid, bool)
    valid = valid & np.isfinite(values)
    out = np.full((len(values), len(LEVELS)), np.nan)
    for q in range(len(values)):
        if valid[q].any():
            out[q] = weighted_quantiles(values[q, valid[q]], weights[q, valid[q]], LEVELS)
    return out


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
    ndarray, shape (Q, 5), float64
        Quantiles in the order of :data:`protomatch.matching.summary.QUANTILES`.
    """
    query_groups = groups[query_rows]
    prior = group_quantiles(values, groups, np.unique(query_groups).tolist(), LEVELS)
    return np.stack([prior[g] for g in query_groups.tolist()])


class ParameterRecovery(TypedDict):
    """How well one parameter is recovered, as in the metrics records.

    Attributes
    ----------
    prior_spread : float
        :func:`prior_spread` of the library's values (error space).
    methods : dict of str to dict of str to float
        :func:`recovery_scores` by method, the prior's under "prior".
    """

    prior_spread: float
    methods: dict[str, dict[str, float]]


def parameter_recovery(
    values: np.ndarray,
    truth: np.ndarray,
    prior: np.ndarray,
    rankings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    k: int | None = None,
) -> tuple[ParameterRecovery, dict[str, np.ndarray]]:
    """One parameter recovered by each ranking's top ``k`` matches, and by the prior.

    Parameters
    ----------
    values : ndarray, shape (N,)
        The parameter of every library row, in the error space.
    truth : ndarray, shape (Q,)
        The queries' true values, same space (``values[query_rows]`` for library queries).
    prior : ndarray, shape (Q, 5) or (5,)
        Quantiles of the prior each query sees (:func:`held_out_prior` for library queries,
        the whole library's for observations), in the order of
        :data:`protomatch.matching.summary.QUANTILES`.
    rankings : Mapping of str to (scores, rows)
        Method -> similarity scores and library rows, each (Q, K >= k), best first, rows
        -1 for empty slots.
    k : int, optional
        Matches summarised per query (default: all K).

    Returns
    -------
    recovery : ParameterRecovery
        The prior's spread and the scores per method (the prior under "prior").
    estimates : dict of str to ndarray, shape (Q, 5)
        The recovered quantiles per method, the prior last.
    """
    estimates = {}
    for method, (scores, rows) in rankings.items():
        scores, rows = scores[:, :k], rows[:, :k]
        matched = values[np.where(rows >= 0, rows, 0)]
        estimates[method] = recovered_quantiles(matched, scores, rows >= 0)
    shape = (len(truth), len(LEVELS))
    estimates["prior"] = np.broadcast_to(np.asarray(prior, dtype=np.float64), shape).copy()
    spread = prior_spread(values)
    return {
        "prior_spread": spread,
        "methods": {m: recovery_scores(e, truth, spread) for m, e in estimates.items()},
    }, estimates
