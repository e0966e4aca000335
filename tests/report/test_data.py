"""How the report writes numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protomatch.report.data import plain_number


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1600.0, "1600"),  # a bug: written as 1.6e+03 in "field compared"
        (1234.56, "1235"),
        (-2500.0, "-2500"),
        (999.4, "999"),
        (25.0, "25"),
        (0.0577, "0.0577"),
        (0.0, "0"),
        (12000.0, "1.20e4"),
        (2.59e-7, "2.59e-7"),
        (7, "7"),
        (np.int64(4608), "4608"),
        (math.inf, "–"),
        (None, "–"),
    ],
)
def test_plain_number_writes_about_three_significant_figures_without_exponents_below_1e4(
    value: object, text: str
) -> None:
    assert plain_number(value) == text
