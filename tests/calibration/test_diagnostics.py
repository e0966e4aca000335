"""Rank histograms and coverage curves on toys whose calibration is known."""

from __future__ import annotations

import numpy as np
from scipy import stats

from protomatch.calibration.diagnostics import diagnose
from protomatch.calibration.intervals import grid_levels, truth_credibility


def gaussian_toy(width: float, n: int = 3000, seed: int = 0):
    """Truths ~ N(mu, 1) and grids of N(mu, width): calibrated at width 1."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=n)
    truth = mu + rng.normal(size=n)
    grids = stats.norm.ppf(np.asarray(grid_levels())[None, :], mu[:, None], width)
    return diagnose(truth_credibility(grids, truth), truth, grids[:, 0])


def test_a_calibrated_toy_has_a_flat_rank_histogram_on_the_diagonal() -> None:
    result = gaussian_toy(1.0)
    hist = result["rank_histogram"]
    assert stats.chi2.sf(hist["chi2"], df=len(hist["counts"]) - 1) > 1e-3
    assert abs(hist["edge_fraction"] - 0.2) < 0.03
    assert result["coverage_curve"]["max_distance"] < 0.04


def test_an_overconfident_toy_piles_ranks_at_the_ends_below_the_diagonal() -> None:
    result = gaussian_toy(0.3)
    assert result["rank_histogram"]["edge_fraction"] > 0.5
    curve = result["coverage_curve"]
    assert curve["max_distance"] > 0.3
    assert all(c <= level + 0.02 for c, level in zip(curve["coverage"], curve["levels"]))


def test_an_underconfident_toy_piles_ranks_in_the_middle() -> None:
    counts = gaussian_toy(3.0)["rank_histogram"]["counts"]
    assert counts[4] + counts[5] > 3 * (counts[0] + counts[-1])
