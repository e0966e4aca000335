"""The evaluation's parameter-recovery metrics on tiny hand-made inputs, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from protomatch.calibration.intervals import grid_levels
from protomatch.evaluation import recovery as R


def test_errors_are_in_dex_for_log_parameters() -> None:
    truth = R.error_space(np.array([1000.0, 1e-6]), log10=True)
    estimate = R.error_space(np.array([100.0, 1e-5]), log10=True)
    np.testing.assert_allclose(truth, [3.0, -6.0])
    assert R.median_absolute_error(estimate, truth) == pytest.approx(1.0)
    assert R.median_absolute_error(np.array([10.0, 20.0, 35.0]), np.array([12.0, 20.0, 30.0])) == 2
    assert np.isnan(R.error_space(np.array([0.0]), log10=True)[0])
    assert R.error_space(np.array([-2.0]), log10=False)[0] == -2.0


def test_intervals_from_the_true_distribution_cover_nominally() -> None:
    rng = np.random.default_rng(4)
    n_queries, n_matches = 2000, 200
    truth = rng.normal(size=n_queries)
    matches = rng.normal(size=(n_queries, n_matches))  # posterior = the true distribution
    quantiles = R.recovered_quantiles(matches, np.ones_like(matches))
    scores = R.recovery_scores(quantiles, truth, spread=1.0)
    assert scores["coverage68"] == pytest.approx(0.68, abs=0.03)
    assert scores["coverage95"] == pytest.approx(0.95, abs=0.02)
    # the median of 200 N(0, 1) draws misses a N(0, 1) truth by ~0.67 sigma (median |N|)
    assert scores["median_abs_error"] == pytest.approx(0.674, abs=0.05)
    assert scores["error_over_prior_spread"] == scores["median_abs_error"]


def test_weighted_quantiles_follow_the_similarity_weights() -> None:
    values = np.array([[1.0, 2.0, 3.0, 100.0]])
    weights = np.array([[1.0, 1.0, 1.0, 0.0]])  # zero weight: ignored
    q = R.recovered_quantiles(values, weights)
    assert q[0, R.quantile_index("median")] == pytest.approx(2.0)
    assert q[0, R.quantile_index("q97.5")] <= 3.0
    empty = R.recovered_quantiles(values, weights, valid=np.zeros((1, 4), bool))
    assert np.isnan(empty).all()


def test_interval_coverage_and_prior_spread_by_hand() -> None:
    truth = np.array([0.0, 1.0, 2.0, np.nan])
    low, high = np.array([-1.0, 1.5, 1.0, 0.0]), np.array([1.0, 2.0, 2.0, 1.0])
    assert R.interval_coverage(truth, low, high) == pytest.approx(2 / 3)
    spread = R.prior_spread(np.random.default_rng(5).normal(0, 2, size=100_000))
    assert spread == pytest.approx(2.0, rel=0.02)


def test_prior_leaves_out_the_own_system() -> None:
    values = np.array([1.0, 1.0, 1.0, 10.0, 10.0, 20.0])
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    prior = R.group_quantiles(values, groups, ["a", "c"], [0.5])
    assert prior["a"][0] == pytest.approx(10.0)  # b and c only
    assert prior["c"][0] == pytest.approx(1.0)  # a, a, a, b, b


def test_parameter_recovery_scores_each_ranking_and_the_prior() -> None:
    values = np.array([2.0, 2.0, 2.0, 6.0, 7.0, 8.0])
    groups = np.array([0, 0, 1, 1, 2, 2])
    queries = np.array([0, 3])
    rankings = {
        # query 0 finds the other system's 2.0; query 3 finds 6.0 ... 8.0 around its 6.0
        "good": (np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2, -1], [5, 0]])),
        "bad": (np.ones((2, 2)), np.array([[5, 4], [0, 1]])),
    }
    prior = R.held_out_prior(values, queries, groups)
    recovered = R.parameter_recovery(values, values[queries], prior, rankings, k=2)
    recovery = recovered.recovery
    scores = recovery["methods"]
    assert recovery["prior_spread"] == R.prior_spread(values)
    assert recovered.quantiles("good")[0, R.quantile_index("median")] == pytest.approx(2.0)
    np.testing.assert_array_equal(recovered.grids["prior"], prior)
    assert scores["good"]["median_abs_error"] < scores["bad"]["median_abs_error"]
    # bad: medians 7.5 (truth 2) and 2 (truth 6) -> errors 5.5 and 4 -> median 4.75
    assert scores["bad"]["median_abs_error"] == pytest.approx(4.75)
    # prior of query 0 (system 0): median of 2, 6, 7, 8 = 6.5; of query 3 (system 1):
    # median of 2, 2, 7, 8 = 4.5 -> errors 4.5 and 1.5
    assert scores["prior"]["median_abs_error"] == pytest.approx(3.0)
    assert scores["good"]["error_over_prior_spread"] == pytest.approx(
        scores["good"]["median_abs_error"] / R.prior_spread(values)
    )


def test_parameter_recovery_with_one_prior_for_every_query() -> None:
    """Observations share the whole library's prior; ``k`` defaults to every match."""
    values = np.array([1.0, 2.0, 3.0, 4.0])
    rankings = {"m": (np.ones((2, 2)), np.array([[0, 1], [2, 3]]))}
    prior = np.quantile(values, grid_levels())
    recovered = R.parameter_recovery(values, np.array([1.5, 3.5]), prior, rankings)
    recovery = recovered.recovery
    assert list(recovered.grids) == ["m", "prior"]
    assert recovered.grids["prior"].shape == (2, len(grid_levels()))
    np.testing.assert_array_equal(recovered.grids["prior"][1], prior)
    assert recovery["methods"]["m"]["median_abs_error"] == pytest.approx(0.0)
    assert recovery["methods"]["prior"]["median_abs_error"] == pytest.approx(1.0)


def test_bootstrap_intervals_hold_the_point_value_and_pair_the_methods() -> None:
    rng = np.random.default_rng(1)
    truths = rng.normal(size=(150, 2))
    spreads = [1.0, 2.0]
    medians = {
        "exact": truths.copy(),
        "good": truths + rng.normal(0.0, 0.2, size=truths.shape),
        "poor": truths + rng.normal(0.0, 1.0, size=truths.shape),
    }
    result = R.bootstrap_relative_error(medians, truths, spreads, "good", draws=500)

    assert result["interval"]["exact"] == [0.0, 0.0]
    for method, values in medians.items():
        point = np.mean(np.median(np.abs(values - truths), axis=0) / spreads)
        low, high = result["interval"][method]
        assert low <= point <= high
    low, high = result["difference"]["poor"]
    assert high < 0  # good is resolved better than poor
    low, high = result["difference"]["exact"]
    assert low > 0  # and resolved worse than exact
    assert "good" not in result["difference"]


def test_bootstrap_of_a_method_against_itself_is_zero() -> None:
    truths = np.arange(20.0)[:, None]
    same = truths + 1.0
    result = R.bootstrap_relative_error({"a": same, "b": same.copy()}, truths, [2.0], "a")
    assert result["difference"]["b"] == [0.0, 0.0]
    assert result["interval"]["a"] == pytest.approx([0.5, 0.5])


def test_per_parameter_differences_and_their_verdicts() -> None:
    rng = np.random.default_rng(2)
    truths = rng.normal(size=(200, 2))
    good = truths + rng.normal(0.0, 0.1, size=truths.shape)
    mixed = truths.copy()
    mixed[:, 1] += rng.normal(0.0, 1.0, size=200)  # exact on the first, poor on the second
    result = R.bootstrap_relative_error({"good": good, "mixed": mixed}, truths, [1.0, 1.0], "good")

    first, second = result["parameter_difference"]["mixed"]
    assert R.verdict(first) == "worse" and R.verdict(second) == "better"
    assert R.verdict([-0.1, 0.2]) == "not resolved"


def test_intervals_count_systems_and_the_median_counts_similarity() -> None:
    """Nine near-twin images of one system do not make the interval look nine times surer."""
    values = np.array([[1.0] * 9 + [5.0, 6.0]])
    systems = np.array([["a"] * 9 + ["b", "c"]])
    weights = np.ones_like(values)
    per_image = R.recovered_quantiles(values, weights)
    per_system = R.recovered_quantiles(values, weights, systems=systems)
    q = {name: R.quantile_index(name) for name in ("median", "q16", "q84")}
    assert per_image[0, q["median"]] == per_system[0, q["median"]] == pytest.approx(1.0)

    # per system a, b, c weigh alike: the interval spans their spread (1 to 6), moved to the
    # median; per image, system a's nine twins squeeze it
    def width(quantiles: np.ndarray) -> float:
        return float(quantiles[0, q["q84"]] - quantiles[0, q["q16"]])

    assert width(per_system) == pytest.approx(5.0)
    assert width(per_image) < 0.7 * width(per_system)


def test_cross_fitted_calibration_is_reported_beside_the_uncalibrated_coverage() -> None:
    """Overconfident matches (all near the truth's neighbourhood but too tight) get wider."""
    rng = np.random.default_rng(3)
    n, k = 200, 30
    truth = rng.normal(size=n)
    centre = truth + rng.normal(size=n)  # the matches scatter about a noisy centre ...
    library = (centre[:, None] + 0.2 * rng.normal(size=(n, k))).reshape(-1)  # 5x too tight
    rows = np.arange(n * k).reshape(n, k)
    rankings = {"tight": (np.ones((n, k)), rows)}
    prior = np.quantile(library, grid_levels())
    folds = np.arange(n) % 5
    recovered = R.parameter_recovery(library, truth, prior, rankings, folds=folds)
    scores = recovered.recovery["methods"]["tight"]
    assert scores["uncalibrated"]["coverage68"] < 0.3
    assert 0.6 < scores["coverage68"] < 0.78
    assert 0.9 < scores["coverage95"] < 0.99
    assert (
        scores["diagnostics"]["calibrated"]["coverage_curve"]["max_distance"]
        < (scores["diagnostics"]["uncalibrated"]["coverage_curve"]["max_distance"])
    )
    # the median (and so the error) is not moved by calibration
    np.testing.assert_allclose(recovered.grids["tight"][:, 0], recovered.raw["tight"][:, 0])
