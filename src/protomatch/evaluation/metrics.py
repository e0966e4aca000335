"""Pure metric functions of the evaluation stage: similarity, retrieval, parameter recovery.

Everything here works on plain arrays (no files, no model), so each metric can be checked
by hand on tiny inputs. Used by :mod:`protomatch.evaluation.library`.

Retrieval conventions: a query is ranked against candidates of *other* groups (systems)
only; ``-inf`` scores and id ``-1`` mark empty slots when fewer than ``k`` candidates exist.
Graded relevance for nDCG is ``max(true similarity, 0)``, with gain discounted by
``log2(rank + 1)`` (rank from 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr

from protomatch.matching.summary import QUANTILES, weighted_quantiles

#: Quantile levels of :func:`recovered_quantiles`, in :data:`QUANTILES` order.
LEVELS = tuple(QUANTILES.values())
#: Candidates scored at once per query block (bounds memory to Q x block float32).
DEFAULT_BLOCK = 8192


# --------------------------------------------------------------------------- vectors


# --------------------------------------------------------------------------- top k


class RunningTopK:
    """The ``k`` best-scoring candidate ids per query, fed block by block.

    Parameters
    ----------
    n_queries, k
        Shape of the result (Q, k).
    """

    def __init__(self, n_queries: int, k: int) -> None:
        self._scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        self._ids = np.full((n_queries, k), -1, dtype=np.int64)
        self._k = k

    def push(self, scores: np.ndarray, ids: np.ndarray) -> None:
        """Merge ``scores`` (Q, B) of candidates ``ids`` (B,); ``-inf`` never enters."""
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
        """Scores (Q, k) float32 and ids (Q, k) int64, best first (ids -1 for empty slots)."""
        order = np.argsort(-self._scores, axis=1, kind="stable")
        return (
            np.take_along_axis(self._scores, order, axis=1),
            np.take_along_axis(self._ids, order, axis=1),
        )


def own_group_mask(query_groups: np.ndarray, candidate_groups: np.ndarray) -> np.ndarray:
    """(Q, B) bool: True where a candidate belongs to the query's own group (system)."""
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
    queries
        (Q, D) query vectors (L2-normalised for cosine similarity).
    candidates
        (N, D) candidate vectors; ids are row numbers.
    query_groups, candidate_groups
        (Q,) and (N,) group labels (system ids).
    k
        Number of results per query.
    block
        Candidates scored at once (memory ~ Q x block x 4 bytes).

    Returns
    -------
    Scores (Q, k) float32 and candidate rows (Q, k) int64, best first.
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
    """A random ranking of other groups' candidates: ``k`` uniform picks per query, as
    :func:`top_k_excluding` returns them (scores are the random keys)."""
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
    """(Q, K) inner products of each query (Q, D) with its retrieved candidate ``rows``.

    ``candidates`` (N, D) are unit rows (e.g. of :func:`unit_rows`), so this is the cosine
    similarity, clipped to [-1, 1]; NaN where a row is -1 (empty slot).
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
    """Mean over queries of the fraction of other groups' candidates with similarity >=
    ``threshold`` (the expected precision of a random ranking)."""
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
    ranked_true
        (Q, K) true similarity of the retrieved candidates in rank order, NaN for empty
        slots; K >= k.

    Returns
    -------
    (Q,) float64; the denominator is the number of filled slots among the first ``k``
    (NaN when there are none).
    """
    top = np.asarray(ranked_true, dtype=np.float64)[:, :k]
    filled = np.isfinite(top).sum(axis=1)
    hits = (np.nan_to_num(top, nan=-np.inf) >= threshold).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(filled > 0, hits / np.maximum(filled, 1), np.nan)


def dcg_at_k(gains: np.ndarray, k: int) -> np.ndarray:
    """Discounted cumulative gain of (Q, K) gains in rank order: sum g_i / log2(i + 1)."""
    top = np.nan_to_num(np.asarray(gains, dtype=np.float64)[:, :k], nan=0.0)
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    return top @ discounts


def ndcg_at_k(ranked_true: np.ndarray, ideal_true: np.ndarray, k: int) -> np.ndarray:
    """Normalised DCG with graded relevance max(true similarity, 0).

    Parameters
    ----------
    ranked_true
        (Q, K) true similarity of the retrieved candidates in rank order (NaN: empty slot).
    ideal_true
        (Q, K') true similarity of the best candidates of the same candidate set, in
        descending order (the ideal ranking).

    Returns
    -------
    (Q,) float64 in [0, 1]; NaN where no candidate has positive relevance.
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
    predicted, true
        (B,) predicted and true similarity of B pairs, in [-1, 1].
    window, tolerance
        The research pipeline's accuracy: among pairs whose *prediction* lies in
        ``window`` (inclusive), the fraction with ``|true - predicted| < tolerance``.
    bins
        Bins of the error histogram over [-2, 2].

    Returns
    -------
    dict with ``n_pairs``, ``mse``, ``mse_trivial`` (predicting the mean label),
    ``spearman``, ``accuracy`` {window, tolerance, n_pairs, fraction} and
    ``error_histogram`` {edges, counts} of ``predicted - true``.
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
    """Parameter values where errors are measured: log10 (dex) for log-scaled ones."""
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
    values
        (Q, K) a parameter of each query's K matches (in the error space).
    weights
        (Q, K) match similarities (negatives count as 0; uniform if none is positive).
    valid
        (Q, K) bool, filled match slots (default: all).

    Returns
    -------
    (Q, 5) float64 quantiles in the order of :data:`QUANTILES`
    (median, q16, q84, q2.5, q97.5); NaN rows for queries without matches.
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
    """Column of :func:`recovered_quantiles` holding quantile ``name`` ("median", "q16", ...)."""
    return list(QUANTILES).index(name)


def interval_coverage(truth: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Fraction of finite cases with ``low <= truth <= high`` (NaN if none is finite)."""
    truth, low, high = (np.asarray(a, dtype=np.float64) for a in (truth, low, high))
    finite = np.isfinite(truth) & np.isfinite(low) & np.isfinite(high)
    if not finite.any():
        return math.nan
    inside = (low[finite] <= truth[finite]) & (truth[finite] <= high[finite])
    return float(inside.mean())


def median_absolute_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Median over queries of ``|estimate - truth|`` (finite cases; NaN if none)."""
    error = np.abs(np.asarray(estimate, np.float64) - np.asarray(truth, np.float64))
    error = error[np.isfinite(error)]
    return float(np.median(error)) if error.size else math.nan


def prior_spread(values: np.ndarray) -> float:
    """Half the 16-84 % width of a distribution (the 1-sigma scale of a Gaussian)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan
    low, high = np.quantile(values, [0.16, 0.84])
    return float((high - low) / 2)


def group_quantiles(
    values: np.ndarray, groups: np.ndarray, wanted: Sequence[str], levels: Sequence[float]
) -> dict[str, np.ndarray]:
    """Quantiles ``levels`` of ``values`` over all rows NOT in each group of ``wanted``.

    This is the prior a query of group g sees when its own group is left out.
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
    """Error and interval coverage of recovered ``quantiles`` (Q, 5) against ``truth`` (Q,).

    Returns the median absolute error of the median, that error over the prior's
    ``spread``, and the coverage of the 16-84 % and 2.5-97.5 % intervals.
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


def parameter_recovery(
    values: np.ndarray,
    query_rows: np.ndarray,
    groups: np.ndarray,
    rankings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    k: int,
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """One parameter recovered by each ranking's top ``k`` matches, and by the prior.

    Parameters
    ----------
    values
        (N,) the parameter of every library row, in the error space.
    query_rows
        (Q,) library rows of the queries (their truth is ``values[query_rows]``).
    groups
        (N,) system of every row; the prior of a query is the quantiles of the rows of
        *other* systems.
    rankings
        Method -> (scores, rows) (Q, K >= k), best first, rows -1 for empty slots.

    Returns
    -------
    Scores per method (:func:`recovery_scores`; the prior under "prior") and the recovered
    quantiles (Q, 5) per method.
    """
    truth = values[query_rows]
    estimates = {}
    for method, (scores, rows) in rankings.items():
        scores, rows = scores[:, :k], rows[:, :k]
        matched = values[np.where(rows >= 0, rows, 0)]
        estimates[method] = recovered_quantiles(matched, scores, rows >= 0)
    query_groups = groups[query_rows]
    prior = group_quantiles(values, groups, np.unique(query_groups).tolist(), LEVELS)
    estimates["prior"] = np.stack([prior[g] for g in query_groups.tolist()])
    spread = prior_spread(values)
    scores = {m: recovery_scores(estimate, truth, spread) for m, estimate in estimates.items()}
    return scores, estimates
