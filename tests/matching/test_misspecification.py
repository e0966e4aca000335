"""The batch misspecification test: calibrated under the null, powerful under a shift."""

from __future__ import annotations

import numpy as np
import pytest

from protomatch.matching.misspecification import _unbiased_mmd2, mmd_test


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_false_alarms_stay_near_the_level_when_both_samples_share_a_distribution() -> None:
    rng = np.random.default_rng(0)
    p_values = [
        mmd_test(
            unit(rng.normal(size=(10, 8))),
            unit(rng.normal(size=(200, 8))),
            permutations=199,
            seed=s,
        ).p_value
        for s in range(200)
    ]
    assert np.mean(np.array(p_values) < 0.05) <= 0.09  # 5 % +- binomial scatter
    assert 0.35 < np.mean(p_values) < 0.65  # roughly uniform


def test_a_shifted_batch_is_detected() -> None:
    rng = np.random.default_rng(1)
    shift = np.zeros(8)
    shift[0] = 1.5
    detected = [
        mmd_test(
            unit(rng.normal(size=(10, 8)) + shift),
            unit(rng.normal(size=(200, 8))),
            permutations=199,
            seed=s,
        ).p_value
        < 0.05
        for s in range(30)
    ]
    assert np.mean(detected) >= 0.9


def test_the_statistic_matches_a_hand_computed_value() -> None:
    kernel = np.array(
        [[1.0, 0.5, 0.1, 0.2], [0.5, 1.0, 0.3, 0.1], [0.1, 0.3, 1.0, 0.4], [0.2, 0.1, 0.4, 1.0]]
    )
    labels = np.array([[True, True, False, False]])
    # within x: k01 = 0.5; within y: k23 = 0.4; between: (0.1 + 0.2 + 0.3 + 0.1) / 4
    expected = 0.5 + 0.4 - 2 * 0.7 / 4
    assert _unbiased_mmd2(kernel, labels)[0] == pytest.approx(expected)


def test_too_small_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="at least two"):
        mmd_test(np.ones((1, 3)), np.ones((5, 3)))
