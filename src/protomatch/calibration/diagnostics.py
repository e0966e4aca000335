"""Calibration diagnostics: rank histograms and expected-coverage curves.

Both read the credibility of the truth (:func:`protomatch.calibration.intervals.
truth_credibility`: the smallest central interval holding it). For honest intervals it is
uniform on [0, 1]:

* the **expected-coverage curve** (as TARP draws it, here per parameter with the median as
  the reference point) is the fraction of queries whose level-L interval holds the truth,
  against L; honest intervals lie on the diagonal, overconfident ones below it;
* the **rank statistic** (as in simulation-based calibration) is where the truth falls in
  the estimate's distribution, ``0.5 -/+ credibility / 2`` below / above the median; its
  histogram is flat for honest estimates, peaked at both ends for overconfident ones and in
  the middle for underconfident ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from protomatch.calibration.intervals import CREDIBILITY

__all__ = ["coverage_curve", "diagnose", "rank_histogram", "signed_ranks"]

#: Bins of the rank histogram.
RANK_BINS = 10


def coverage_curve(credibility: np.ndarray) -> dict[str, Any]:
    """Expected coverage at every level of :data:`CREDIBILITY`, and its distance from L.

    Parameters
    ----------
    credibility
        (Q,) credibility of each query's truth (NaN: ignored).

    Returns
    -------
    dict
        ``levels``, ``coverage`` (fraction with credibility <= L), ``max_distance`` and
        ``mean_distance`` from the diagonal (None without a finite query).
    """
    c = np.asarray(credibility, dtype=np.float64)
    c = c[np.isfinite(c)]
    levels = np.asarray(CREDIBILITY)
    if c.size == 0:
        return {
            "levels": levels.tolist(),
            "coverage": None,
            "max_distance": None,
            "mean_distance": None,
        }
    coverage = (c[:, None] <= levels[None, :] + 1e-9).mean(axis=0)
    gap = np.abs(coverage - levels)
    return {
        "levels": levels.tolist(),
        "coverage": coverage.tolist(),
        "max_distance": float(gap.max()),
        "mean_distance": float(gap.mean()),
    }


def signed_ranks(credibility: np.ndarray, truth: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Rank of the truth in [0, 1]: ``0.5 - c/2`` below the median, ``0.5 + c/2`` above.

    Returns
    -------
    numpy.ndarray
        (Q,) ranks; NaN where the credibility is NaN.
    """
    side = np.where(np.asarray(truth) >= np.asarray(median), 1.0, -1.0)
    return 0.5 + side * np.asarray(credibility, dtype=np.float64) / 2


def rank_histogram(ranks: np.ndarray, bins: int = RANK_BINS) -> dict[str, Any]:
    """Counts of the ranks in equal bins of [0, 1] and how far they are from flat.

    Returns
    -------
    dict
        ``counts`` (bins,), ``expected`` per bin, ``chi2`` (sum of (count - expected)^2 /
        expected) and ``edge_fraction`` (share in the outer two bins; 2/bins when flat).
    """
    r = np.asarray(ranks, dtype=np.float64)
    r = r[np.isfinite(r)]
    counts, _ = np.histogram(np.clip(r, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    expected = r.size / bins
    chi2 = float(((counts - expected) ** 2 / expected).sum()) if r.size else math.nan
    edges = float((counts[0] + counts[-1]) / r.size) if r.size else math.nan
    return {"counts": counts.tolist(), "expected": expected, "chi2": chi2, "edge_fraction": edges}


def diagnose(credibility: np.ndarray, truth: np.ndarray, median: np.ndarray) -> dict[str, Any]:
    """The coverage curve and the rank histogram of one parameter's estimates.

    Parameters
    ----------
    credibility, truth, median
        (Q,) the truth's credibility, the truth and the estimated median.
    """
    return {
        "coverage_curve": coverage_curve(credibility),
        "rank_histogram": rank_histogram(signed_ranks(credibility, truth, median)),
    }
