from __future__ import annotations

import numpy as np
import pytest

from protomatch.matching.index import IndexConfig, make_faiss_index, neighbour_similarity


@pytest.fixture
def embeddings() -> np.ndarray:
    vectors = np.random.default_rng(1).standard_normal((3000, 16)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_float16_index_ranks_like_the_exact_one(embeddings: np.ndarray) -> None:
    queries = embeddings[:25] + 0.05
    exact_sims, exact = make_faiss_index(embeddings, IndexConfig()).search(queries, 10)
    sims, found = make_faiss_index(embeddings, IndexConfig(kind="flat16")).search(queries, 10)
    assert (found[:, 0] == exact[:, 0]).all()
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
    assert overlap >= 0.95
    np.testing.assert_allclose(sims, exact_sims, atol=2e-3)


def test_flat_index_ranks_by_cosine(embeddings: np.ndarray) -> None:
    query = embeddings[7:8]
    sims, rows = make_faiss_index(embeddings, IndexConfig()).search(query, 5)
    expected = np.argsort(-(embeddings @ query[0]), kind="stable")[:5]
    assert rows[0].tolist() == expected.tolist()
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_ivf_trains_on_a_sample_and_finds_itself(embeddings: np.ndarray) -> None:
    index = make_faiss_index(embeddings, IndexConfig(kind="ivf", nlist=8, nprobe=8))
    _, rows = index.search(embeddings[:50], 1)
    assert (rows[:, 0] == np.arange(50)).all()


def test_neighbour_similarity_ignores_the_same_system() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    systems = np.array(["a", "a", "b", "b"])
    stats = neighbour_similarity(vectors, systems, sample=4)
    # best other-system similarity: a1, a2 -> 0.6 (with b2); b1 -> 0; b2 -> 0.6
    assert stats["median"] == pytest.approx(0.6, abs=1e-6)
    assert stats["p1"] == pytest.approx(np.quantile([0, 0.6, 0.6, 0.6], 0.01), abs=1e-6)
