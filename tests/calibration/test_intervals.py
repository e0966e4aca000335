"""Interval calibration on cases with a known posterior."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from protomatch.calibration.intervals import (
    CREDIBILITY,
    IntervalCalibration,
    calibrated_grid,
    cross_fitted,
    fit_scales,
    grid_levels,
    group_folds,
    standard_quantiles,
    truth_credibility,
    weighted_grid,
)

NOISE = 0.5  # x = theta + NOISE * eps, theta ~ N(0, 1)


def knn_grids(rng: np.random.Generator, n: int, library: tuple[np.ndarray, np.ndarray]):
    """Queries (theta, x) and the quantile grids of the theta of their 40 nearest x."""
    theta_lib, x_lib = library
    theta = rng.normal(size=n)
    x = theta + NOISE * rng.normal(size=n)
    nearest = np.argsort(np.abs(x[:, None] - x_lib[None, :]), axis=1)[:, :40]
    grids = np.stack([weighted_grid(theta_lib[r], np.ones(len(r))) for r in nearest])
    return theta, grids


def coverage(grid: np.ndarray, truth: np.ndarray, level: float) -> float:
    return float(np.mean(truth_credibility(grid, truth) <= level + 1e-9))


def test_the_known_posterior_needs_no_scaling() -> None:
    """Exact Gaussian posterior grids: the fitted scales are close to 1 at every level."""
    rng = np.random.default_rng(0)
    theta = rng.normal(size=4000)
    x = theta + NOISE * rng.normal(size=theta.size)
    mean, sd = x / (1 + NOISE**2), np.sqrt(NOISE**2 / (1 + NOISE**2))
    grids = stats.norm.ppf(np.asarray(grid_levels())[None, :], mean[:, None], sd)
    scales = fit_scales(grids, theta, spread=1.0)
    middle = [i for i, level in enumerate(CREDIBILITY) if 0.2 <= level <= 0.95]
    np.testing.assert_allclose(scales[middle], 1.0, atol=0.08)


def test_fitted_scales_give_nominal_coverage_on_new_queries() -> None:
    """kNN posteriors made 3x too narrow: calibrated on 600 queries, nominal on 3000 others."""
    rng = np.random.default_rng(1)
    theta_lib = rng.normal(size=6000)
    library = (theta_lib, theta_lib + NOISE * rng.normal(size=theta_lib.size))
    fit_theta, fit_grids = knn_grids(rng, 600, library)
    test_theta, test_grids = knn_grids(rng, 3000, library)

    def narrow(grid: np.ndarray) -> np.ndarray:  # every quantile 3x closer to the median
        return grid[:, :1] + (grid - grid[:, :1]) / 3

    fit_grids, test_grids = narrow(fit_grids), narrow(test_grids)
    assert coverage(test_grids, test_theta, 0.68) < 0.35  # overconfident before
    calibration = IntervalCalibration.fit(
        {"theta": fit_grids},
        {"theta": fit_theta},
        {"theta": 1.0},
        fitted_on="600 toy queries",
        ranking="toy",
    )
    calibrated = calibration.apply("theta", test_grids)
    assert coverage(calibrated, test_theta, 0.68) == pytest.approx(0.68, abs=0.04)
    assert coverage(calibrated, test_theta, 0.95) == pytest.approx(0.95, abs=0.025)
    np.testing.assert_array_equal(calibrated[:, 0], test_grids[:, 0])  # medians kept


def test_calibrated_intervals_are_nested_and_standard_quantiles_ordered() -> None:
    rng = np.random.default_rng(2)
    scales = rng.uniform(0.2, 3.0, size=len(CREDIBILITY))  # not monotone on purpose
    out = calibrated_grid(
        np.stack([weighted_grid(rng.normal(size=30), np.ones(30)) for _ in range(50)]), scales
    )
    g = len(CREDIBILITY)
    assert (np.diff(out[:, 1 : 1 + g], axis=1) <= 1e-12).all()  # lower ends move down
    assert (np.diff(out[:, 1 + g :], axis=1) >= -1e-12).all()  # upper ends move up
    q = standard_quantiles(out)  # median, q16, q84, q2.5, q97.5
    assert (q[:, 3] <= q[:, 1]).all() and (q[:, 1] <= q[:, 0]).all()
    assert (q[:, 0] <= q[:, 2]).all() and (q[:, 2] <= q[:, 4]).all()


def test_cross_fitting_never_uses_a_query_s_own_fold() -> None:
    """A fold whose truths are far off changes only the other folds' scales."""
    grids = np.tile(np.asarray(grid_levels()) - 0.5, (20, 1))  # median 0, width grows with L
    truth = np.full(20, 0.01)
    folds = np.repeat([0, 1], 10)
    truth[folds == 1] = 0.4
    out = cross_fitted(grids, truth, folds, spread=1.0)
    # fold 0 is calibrated on fold 1's far truths (wide); fold 1 on fold 0's near ones
    assert out[folds == 0, -1].min() > out[folds == 1, -1].max()


def test_group_folds_keep_a_system_in_one_fold() -> None:
    groups = ["a", "b", "a", "c", "d", "b", "e", "f"]
    folds = group_folds(groups, n_folds=3)
    by_group: dict[str, set[int]] = {}
    for g, f in zip(groups, folds):
        by_group.setdefault(g, set()).add(int(f))
    assert all(len(v) == 1 for v in by_group.values())
    assert set(folds.tolist()) == {0, 1, 2}


def test_record_round_trips_and_bad_records_are_refused() -> None:
    grids = np.tile(np.asarray(grid_levels()), (10, 1))
    calibration = IntervalCalibration.fit(
        {"mass": grids},
        {"mass": np.linspace(0, 1, 10)},
        {"mass": 1.0},
        fitted_on="ten",
        ranking="protomatch_fused",
    )
    again = IntervalCalibration.from_record(calibration.record())
    assert again.record() == calibration.record()
    bad = calibration.record()
    bad["scales"]["mass"][3] = float("nan")
    with pytest.raises(ValueError, match="mass"):
        IntervalCalibration.from_record(bad)
    with pytest.raises(ValueError, match="levels"):
        IntervalCalibration.from_record({**calibration.record(), "credibility": [0.5]})
    with pytest.raises(ValueError, match="no query"):
        fit_scales(grids, np.full(10, np.nan), 1.0)
