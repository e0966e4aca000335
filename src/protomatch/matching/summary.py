"""Summaries of a set of best matches: weighted quantiles of their parameters, the prior's.

Shared by matching, the report and the evaluation, so that all three quote the same
statistics of the same matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from protomatch._quantiles import weighted_quantiles

#: Summary quantiles of a parameter distribution, by name.
QUANTILES = MappingProxyType(
    {"median": 0.5, "q16": 0.16, "q84": 0.84, "q2.5": 0.025, "q97.5": 0.975}
)


#: Best matches summarised by default. On mock observations against a 4,096-image library,
#: 100 gave better-calibrated 68 % intervals than 50 (coverage 0.60-0.75 vs 0.53-0.75) and
#: no larger errors.
DEFAULT_MATCHES = 100


def unit_rows(vectors: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 (N, D); all-zero rows stay zero.

    With ``weights`` (D,) each column is multiplied first, so the dot product of two rows is
    the weighted cosine of :func:`protomatch.library.params.similarity_labels`.

    Parameters
    ----------
    vectors
        (N, D) rows.
    weights
        (D,) column weights, or None for none.

    Returns
    -------
    numpy.ndarray
        (N, D) float32 rows of unit L2 norm (all-zero rows stay zero).
    """
    x = np.asarray(vectors, dtype=np.float64)
    if weights is not None:
        x = x * np.asarray(weights, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)


def summarise(
    matches: pd.DataFrame,
    prior: pd.DataFrame,
    names: Sequence[str],
    units: Mapping[str, str],
    truth: Mapping[str, float] | None,
) -> dict[str, Any]:
    """Per parameter: similarity-weighted quantiles of the matches, the prior's, the truth.

    Parameters
    ----------
    matches
        The best matches, best first: a ``similarity`` column (cosine in [-1, 1]; negative
        ones get weight 0) and one column per parameter in ``names``.
    prior
        The library's parameter values, one column per name.
    names
        Parameters to summarise.
    units
        Unit of each parameter (missing ones: ``""``).
    truth
        True parameter values of a simulated target, or None when unknown.

    Returns
    -------
    dict
        ``n_matches``, ``best_similarity`` (the first row's) and ``parameters``: per name
        its ``unit``, the ``matches``' and the ``prior``'s quantiles (keys of
        :data:`QUANTILES`) and its ``truth`` (None when unknown).
    """
    qs = list(QUANTILES.values())
    parameters = {}
    for name in names:
        weighted = weighted_quantiles(matches[name], matches["similarity"], qs)
        plain = np.quantile(prior[name].to_numpy(dtype=np.float64), qs)
        parameters[name] = {
            "unit": units.get(name, ""),
            "matches": dict(zip(QUANTILES, weighted.tolist())),
            "prior": dict(zip(QUANTILES, plain.tolist())),
            "truth": None if truth is None else float(truth[name]),
        }
    return {
        "n_matches": len(matches),
        "best_similarity": float(matches["similarity"].iloc[0]),
        "parameters": parameters,
    }
