"""Pure metric functions of the evaluation stage: similarity and retrieval.

Everything here works on plain arrays (no files, no model), so each metric can be checked
by hand on tiny inputs. Used by :mod:`protomatch.evaluation.library`; the parameter-recovery
metrics are in :mod:`protomatch.evaluation.recovery`.

Retrieval conventions: a query is ranked against candidates of *other* groups (systems)
only; ``-inf`` scores and id ``-1`` mark empty slots when fewer than ``k`` candidates exist.
Graded relevance for nDCG is ``max(true similarity, 0)``, with gain discounted by
``log2(rank + 1)`` (rank from 1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr

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
