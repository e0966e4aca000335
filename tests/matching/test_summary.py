"""Summary statistics of the matches: distinct systems, width ratio and shift vs the prior.

Tiny hand-checkable inputs; the report that shows these numbers is tested in tests/report.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from protomatch.matching.summary import (
    ConstraintRule,
    constraint,
    distinct_systems,
    summarise,
)


def _q(q16: float, median: float, q84: float) -> dict[str, float]:
    return {"q16": q16, "median": median, "q84": q84}


LINEAR_PRIOR = np.linspace(0.0, 100.0, 11)  # not all positive: linear scale
LOG_PRIOR = np.array([1.0, 10.0, 100.0, 1000.0])  # positive, three decades: log10 scale


def test_distinct_systems_counts_each_system_once():
    matches = pd.DataFrame({"system": [1, 1, 2, 3, 3, 3], "similarity": np.ones(6)})
    assert distinct_systems(matches) == 3
    assert distinct_systems(pd.DataFrame({"system": ["a", None, "a", "b"]})) == 2
    assert distinct_systems(pd.DataFrame({"similarity": [0.9]})) is None


def test_linear_width_ratio_and_shift_by_hand():
    # prior 16-84 % is [20, 80]: width 60, half-width 30; matches [40, 60]: width 20
    result = constraint(_q(40, 50, 60), _q(20, 40, 80), LINEAR_PRIOR)
    assert result["scale"] == "linear"
    assert result["width_ratio"] == pytest.approx(20 / 60)
    assert result["shift"] == pytest.approx((50 - 40) / 30)
    assert result["constrained"] is True


def test_log_width_ratio_and_shift_by_hand():
    # log10: prior [0, 3] around 1 (width 3, half-width 1.5); matches [1, 2] around 1
    result = constraint(_q(10, 10, 100), _q(1, 10, 1000), LOG_PRIOR)
    assert result["scale"] == "log10"
    assert result["width_ratio"] == pytest.approx(1 / 3)
    assert result["shift"] == pytest.approx(0.0)
    assert result["constrained"] is True


def test_positive_prior_within_a_decade_stays_linear():
    result = constraint(_q(2, 3, 4), _q(2, 3, 4), np.array([1.0, 5.0, 9.0]))
    assert result["scale"] == "linear"


def test_the_prior_itself_is_not_constrained():
    result = constraint(_q(20, 40, 80), _q(20, 40, 80), LINEAR_PRIOR)
    assert result == {"scale": "linear", "width_ratio": 1.0, "shift": 0.0, "constrained": False}


def test_a_shift_alone_constrains():
    # same width, median moved by 0.6 prior half-widths (18 / 30)
    result = constraint(_q(38, 58, 98), _q(20, 40, 80), LINEAR_PRIOR)
    assert result["width_ratio"] == pytest.approx(1.0)
    assert result["shift"] == pytest.approx(0.6)
    assert result["constrained"] is True
    lenient = ConstraintRule(width_ratio_max=0.8, shift_min=0.7)
    assert constraint(_q(38, 58, 98), _q(20, 40, 80), LINEAR_PRIOR, lenient)["constrained"] is False


def test_a_prior_without_width_says_nothing():
    result = constraint(_q(5, 5, 5), _q(5, 5, 5), np.full(4, 5.0))
    assert result["width_ratio"] is None and result["shift"] is None
    assert result["constrained"] is None


def test_summarise_adds_systems_and_constraints_as_json():
    rng = np.random.default_rng(0)
    prior = pd.DataFrame({"mass": rng.uniform(0.5, 2.0, 400), "age": 10 ** rng.uniform(4, 6, 400)})
    matches = prior.iloc[:200].copy()  # the prior's own values, equal weights
    matches["age"] = 10 ** rng.normal(4.5, 0.05, 200)  # narrow: constrained
    matches["similarity"] = 0.9
    matches["system"] = np.arange(200) % 7
    summary = summarise(matches, prior, ["mass", "age"], {"mass": "Msun", "age": "yr"}, None)
    assert summary["distinct_systems"] == 7
    mass, age = summary["parameters"]["mass"]["constraint"], summary["parameters"]["age"]
    assert mass["scale"] == "linear" and mass["constrained"] is False
    assert age["constraint"]["scale"] == "log10" and age["constraint"]["constrained"] is True
    assert json.loads(json.dumps(summary)) == summary


def test_a_calibrated_interval_does_not_go_below_zero_for_a_positive_parameter() -> None:
    from protomatch.calibration.intervals import CREDIBILITY, IntervalCalibration

    matches = pd.DataFrame({"similarity": np.ones(20), "mass": np.linspace(0.5, 1.5, 20)})
    prior = pd.DataFrame({"mass": np.linspace(0.1, 3.0, 50)})
    wide = IntervalCalibration({"mass": (20.0,) * len(CREDIBILITY)}, "toy", 10, "toy")
    summary = summarise(matches, prior, ["mass"], {}, None, calibration=wide)
    q = summary["parameters"]["mass"]["matches"]
    assert q["q2.5"] == 0.0 and q["q16"] == 0.0  # would be far below 0 unclipped
    assert q["median"] == pytest.approx(1.0)
    assert q["q97.5"] > 3.0  # no upper bound is imposed
