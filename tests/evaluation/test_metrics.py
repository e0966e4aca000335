"""The evaluation's similarity and retrieval metrics on tiny hand-made inputs, checked by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from protomatch.evaluation import metrics as M
from protomatch.library.params import similarity_labels
from protomatch.matching.summary import unit_rows


def _ndcg_by_hand(gains: list[float], ideal: list[float], k: int) -> float:
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(ideal, reverse=True)[:k]))
    return dcg / idcg


# --------------------------------------------------------------------------- vectors, top k


def test_unit_rows_give_the_similarity_label() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 4))
    z[2] = 0.0  # no direction: label 0
    weights = np.array([1.0, 2.0, 0.5, 1.0])
    u = unit_rows(z, weights)
    expected = similarity_labels(
        z[:, None].repeat(6, 1).reshape(-1, 4), np.tile(z, (6, 1)), weights
    )
    np.testing.assert_allclose((u @ u.T).ravel(), expected.numpy(), atol=1e-6)
    assert not u[2].any()


def test_top_k_excludes_the_own_system_and_matches_a_full_sort() -> None:
    rng = np.random.default_rng(2)
    queries, candidates = rng.normal(size=(5, 3)), rng.normal(size=(40, 3))
    query_groups = np.array([0, 1, 2, 0, 3])
    candidate_groups = rng.integers(0, 4, size=40)
    scores, rows = M.top_k_excluding(
        queries, candidates, query_groups, candidate_groups, 7, block=6
    )
    full = queries @ candidates.T
    for q in range(5):
        allowed = np.flatnonzero(candidate_groups != query_groups[q])
        best = allowed[np.argsort(-full[q, allowed])[:7]]
        assert rows[q].tolist() == best.tolist()
        assert not np.isin(rows[q], np.flatnonzero(candidate_groups == query_groups[q])).any()
        np.testing.assert_allclose(scores[q], full[q, best], rtol=1e-5)


def test_top_k_marks_empty_slots_when_few_candidates_remain() -> None:
    candidates = np.eye(3, dtype=np.float32)
    scores, rows = M.top_k_excluding(
        candidates[:1], candidates, np.array(["a"]), np.array(["a", "b", "a"]), 3
    )
    assert rows[0].tolist() == [1, -1, -1]
    assert scores[0, 0] == 0.0 and np.isneginf(scores[0, 1:]).all()
    ranked = M.gathered_similarity(candidates[:1], candidates, rows)
    assert ranked[0, 0] == 0.0 and np.isnan(ranked[0, 1:]).all()


# --------------------------------------------------------------------------- retrieval


def test_perfect_ranking_gives_ndcg_one_and_the_right_precision() -> None:
    true = np.array([[0.99, 0.95, 0.91, 0.6, 0.2, -0.5]])
    assert M.ndcg_at_k(true, true, 3)[0] == pytest.approx(1.0)
    assert M.ndcg_at_k(true, true, 6)[0] == pytest.approx(1.0)
    assert M.precision_at_k(true, 0.9, 3)[0] == pytest.approx(1.0)
    assert M.precision_at_k(true, 0.9, 5)[0] == pytest.approx(3 / 5)
    assert M.precision_at_k(true, 0.9, 6)[0] == pytest.approx(0.5)


def test_reversed_ranking_ndcg_by_hand() -> None:
    ideal = np.array([[1.0, 0.5, 0.0]])
    reversed_ = ideal[:, ::-1]
    # DCG = 0/1 + 0.5/log2(3) + 1/log2(4); IDCG = 1/1 + 0.5/log2(3) + 0
    expected = (0.5 / math.log2(3) + 0.5) / (1.0 + 0.5 / math.log2(3))
    assert M.ndcg_at_k(reversed_, ideal, 3)[0] == pytest.approx(expected)
    assert expected == pytest.approx(0.6199, abs=1e-4)
    # at k = 1 the reversed list has gained nothing
    assert M.ndcg_at_k(reversed_, ideal, 1)[0] == 0.0


def test_negative_similarity_has_no_relevance_and_empty_slots_count_nothing() -> None:
    ideal = np.array([[0.8, 0.4, -0.9]])
    ranked = np.array([[-0.9, 0.4, np.nan]])
    expected = _ndcg_by_hand([0.0, 0.4], [0.8, 0.4, 0.0], 3)
    assert M.ndcg_at_k(ranked, ideal, 3)[0] == pytest.approx(expected)
    assert M.precision_at_k(ranked, 0.3, 3)[0] == pytest.approx(1 / 2)  # 2 filled slots
    assert np.isnan(M.ndcg_at_k(ideal, np.array([[-0.1, -0.2, -0.3]]), 2)[0])


def test_random_ranking_ndcg_matches_its_expectation() -> None:
    gains = np.array([0.9, 0.7, 0.4, 0.2, 0.0, -0.3])
    k = 3
    discounts = sum(1 / math.log2(i + 2) for i in range(k))
    relevance = np.clip(gains, 0, None)
    ideal_dcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(relevance)[::-1][:k]))
    expected = relevance.mean() * discounts / ideal_dcg  # every rank sees the mean gain
    # exact: the mean over all 720 orderings
    orders = np.array(list(itertools.permutations(range(6))))
    exhaustive = M.ndcg_at_k(gains[orders], np.tile(gains, (len(orders), 1)), k).mean()
    assert exhaustive == pytest.approx(expected)
    # sampled: the evaluation's random ranking, 4000 queries against one other system
    n = 4000
    _, rows = M.random_top_k(np.zeros(n, int), np.ones(6, int), k, np.random.default_rng(3))
    assert set(np.unique(rows)) == set(range(6))
    sampled = M.ndcg_at_k(gains[rows], np.tile(gains, (n, 1)), k)
    assert sampled.mean() == pytest.approx(expected, abs=4 * sampled.std() / math.sqrt(n))


def test_random_ranking_never_returns_the_own_system() -> None:
    groups = np.array([0, 0, 1, 1, 2])
    _, rows = M.random_top_k(np.array([0, 1, 2]), groups, 2, np.random.default_rng(0), block=2)
    for q, own in enumerate([0, 1, 2]):
        assert (groups[rows[q][rows[q] >= 0]] != own).all()


def test_relevant_fraction_by_hand() -> None:
    queries = np.array([[1.0, 0.0]], dtype=np.float32)
    s = math.sqrt(0.5)
    candidates = np.array([[1, 0], [s, s], [0, 1], [1, 0]], dtype=np.float32)
    # the last candidate is the query's own system: 1 of the 3 others is >= 0.9
    fraction = M.relevant_fraction(queries, candidates, np.array([7]), np.array([1, 2, 3, 7]), 0.9)
    assert fraction == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- similarity


def test_similarity_metrics_by_hand() -> None:
    predicted = np.array([0.95, 0.92, -0.2, 0.5])
    true = np.array([1.0, 0.7, 0.4, 0.0])
    m = M.similarity_metrics(predicted, true)
    # errors -0.05, 0.22, -0.6, 0.5
    assert m["mse"] == pytest.approx((0.0025 + 0.0484 + 0.36 + 0.25) / 4)
    # the mean label is 0.525
    assert m["mse_trivial"] == pytest.approx((0.475**2 + 0.175**2 + 0.125**2 + 0.525**2) / 4)
    # ranks 4,3,1,2 vs 4,3,2,1: rho = 1 - 6 * 2 / (4 * 15)
    assert m["spearman"] == pytest.approx(0.8)
    # two pairs predicted in [0.9, 1]; only the first is within 0.1
    assert m["accuracy"]["n_pairs"] == 2 and m["accuracy"]["fraction"] == pytest.approx(0.5)
    assert sum(m["error_histogram"]["counts"]) == 4
    none = M.similarity_metrics(np.array([0.1, 0.2]), np.array([0.3, 0.1]))
    assert none["accuracy"]["n_pairs"] == 0 and math.isnan(none["accuracy"]["fraction"])
