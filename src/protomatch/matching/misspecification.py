"""Is a batch of observations unlike the library? A kernel two-sample test in embedding space.

The per-observation "no good analogue" warning asks whether one observation's best match is
unusually poor. A batch can be unlike the library in a way no single observation shows
(every source a little too compact, say), so ``match`` with several observations through
their beams also tests the batch as a whole: the maximum mean discrepancy (MMD) between the
observations' embeddings and embeddings of library images seen the same way (each
observation contributes the same number of library images, convolved to its beam and noised
to its level), with a Gaussian kernel whose bandwidth is the median distance of the pooled
sample, and a permutation p-value. Under the hypothesis that the observations come from the
library's distribution the p-value is uniform, so a p-value below 0.05 rejects it with a 5 %
false-alarm rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protomatch.matching.search import EmbeddingSample

__all__ = ["MIN_BATCH", "MmdTest", "batch_phrase", "batch_test", "mmd_test"]

#: Fewest observations a batch test is run on (below it the test has almost no power).
MIN_BATCH = 5
#: Permutations of the pooled sample for the p-value.
PERMUTATIONS = 999


@dataclass(frozen=True)
class MmdTest:
    """The outcome of :func:`mmd_test`.

    Attributes
    ----------
    mmd2
        Unbiased estimate of the squared MMD between the two samples.
    p_value
        Permutation p-value, (1 + permutations at least as large) / (1 + permutations).
    bandwidth
        The Gaussian kernel's length scale (median pooled distance).
    n_observations, n_reference
        Sizes of the two samples.
    """

    mmd2: float
    p_value: float
    bandwidth: float
    n_observations: int
    n_reference: int

    def record(self) -> dict[str, float | int]:
        """The JSON form."""
        return {
            "mmd2": self.mmd2,
            "p_value": self.p_value,
            "bandwidth": self.bandwidth,
            "n_observations": self.n_observations,
            "n_reference": self.n_reference,
        }


def _unbiased_mmd2(kernel: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 for each row of ``labels`` (P, n + m) marking the first sample."""
    labels = labels.astype(np.float64)
    other = 1.0 - labels
    n, m = labels[0].sum(), other[0].sum()
    diagonal = np.diag(kernel)
    within_x = np.einsum("pi,ij,pj->p", labels, kernel, labels) - labels @ diagonal
    within_y = np.einsum("pi,ij,pj->p", other, kernel, other) - other @ diagonal
    between = np.einsum("pi,ij,pj->p", labels, kernel, other)
    return within_x / (n * (n - 1)) + within_y / (m * (m - 1)) - 2 * between / (n * m)


def mmd_test(
    observations: np.ndarray,
    reference: np.ndarray,
    *,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> MmdTest:
    """Kernel two-sample test of observation embeddings against library embeddings.

    Parameters
    ----------
    observations
        (n, D) embeddings of the observations, n >= 2.
    reference
        (m, D) embeddings of library images compared the same way, m >= 2.
    permutations
        Random relabellings of the pooled sample for the p-value.
    seed
        Seed of the permutations.

    Returns
    -------
    MmdTest
        The statistic, its p-value and the kernel's bandwidth.
    """
    x = np.asarray(observations, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("an MMD test needs at least two embeddings on each side")
    pooled = np.concatenate([x, y])
    squared = np.sum(pooled**2, axis=1)
    distances2 = np.maximum(squared[:, None] + squared[None, :] - 2 * pooled @ pooled.T, 0.0)
    upper = distances2[np.triu_indices(len(pooled), k=1)]
    bandwidth2 = float(np.median(upper[upper > 0])) if (upper > 0).any() else 1.0
    kernel = np.exp(-distances2 / (2 * bandwidth2))
    labels = np.zeros(len(pooled), dtype=bool)
    labels[: len(x)] = True
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(labels) for _ in range(permutations)])
    observed = float(_unbiased_mmd2(kernel, labels[None])[0])
    null = _unbiased_mmd2(kernel, shuffled)
    p_value = (1 + int((null >= observed).sum())) / (1 + permutations)
    return MmdTest(observed, p_value, float(np.sqrt(bandwidth2)), len(x), len(y))


#: The batch test's significance level.
LEVEL = 0.05


def batch_test(samples: Sequence[EmbeddingSample]) -> dict[str, Any]:
    """The batch test's record for the targets matched through their beams.

    Parameters
    ----------
    samples
        Each such target's embedding and its reference library embeddings.

    Returns
    -------
    dict
        ``tested`` False with a ``reason`` below :data:`MIN_BATCH` targets; otherwise
        ``tested`` True, the :class:`MmdTest` numbers, ``level`` and ``rejected``
        (p-value below the level: the batch does not look like the library).
    """
    if len(samples) < MIN_BATCH:
        return {
            "tested": False,
            "reason": f"the batch test needs at least {MIN_BATCH} observations with a beam "
            f"({len(samples)} here)",
        }
    result = mmd_test(
        np.stack([s.query for s in samples]), np.concatenate([s.reference for s in samples])
    )
    return {"tested": True, **result.record(), "level": LEVEL, "rejected": result.p_value < LEVEL}


def batch_phrase(record: Mapping[str, Any]) -> str:
    """One sentence saying what the batch test found."""
    if not record.get("tested"):
        return f"no batch test: {record.get('reason', '')}"
    what = (
        "these observations, taken together, do NOT look like the library seen through their "
        "beams: treat every estimate with caution"
        if record["rejected"]
        else "no sign that these observations, taken together, are unlike the library"
    )
    return (
        f"batch test (MMD of {record['n_observations']} observations' embeddings against "
        f"{record['n_reference']} library images seen the same way): p = "
        f"{record['p_value']:.3g}; {what}"
    )
