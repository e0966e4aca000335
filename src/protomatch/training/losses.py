"""Losses comparing predicted similarities with ground-truth (weak-label) similarities.

Every loss takes ``pred`` (B,) — the network's cosine similarity in [-1, 1] — and ``truth``
(B,) — the cosine similarity of the pairs' normalised parameter vectors in [-1, 1] — and
returns :class:`LossParts` so training can log the pull (similar) and push (dissimilar)
contributions separately. Losses are composed from a distance function rather than
branching on options, and are looked up by name in the plain registry :data:`LOSSES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, NamedTuple

import torch

from protomatch.errors import ProtomatchError

__all__ = [
    "LOSSES",
    "ContrastiveLoss",
    "LossParts",
    "SimilarityMSELoss",
    "cosine_to_distance",
    "make_loss",
    "similarity_to_target",
]


class LossParts(NamedTuple):
    """A loss value and its two contributions; ``total == similar + dissimilar``.

    Attributes
    ----------
    total
        0-d tensor to back-propagate.
    similar
        0-d tensor: the part that pulls pairs together (batch mean).
    dissimilar
        0-d tensor: the part that pushes pairs apart (batch mean).
    """

    total: torch.Tensor
    similar: torch.Tensor
    dissimilar: torch.Tensor


def cosine_to_distance(pred: torch.Tensor) -> torch.Tensor:
    """Distance d = (1 - pred) / 2 from a cosine similarity.

    Parameters
    ----------
    pred
        (B,) predicted similarities in [-1, 1].

    Returns
    -------
    torch.Tensor
        (B,) distances in [0, 1].
    """
    return (1.0 - pred) / 2.0


def similarity_to_target(truth: torch.Tensor) -> torch.Tensor:
    """Soft "same" label t = (truth + 1) / 2 from a similarity.

    Parameters
    ----------
    truth
        (B,) true similarities in [-1, 1].

    Returns
    -------
    torch.Tensor
        (B,) soft labels in [0, 1].
    """
    return (truth + 1.0) / 2.0


def _check_pair(pred: torch.Tensor, truth: torch.Tensor) -> None:
    if pred.ndim != 1 or pred.shape != truth.shape:
        raise ProtomatchError(
            "a loss takes predicted and true similarities as two tensors of shape (B,); "
            f"got {tuple(pred.shape)} and {tuple(truth.shape)}"
        )


@dataclasses.dataclass(frozen=True)
class ContrastiveLoss:
    """Contrastive loss of the research pipeline with soft labels.

    With d = distance(pred) and t = target(truth),
    ``L = ½ t d² + ½ (1 - t) max(m - d, 0)²``, averaged over the batch.

    Parameters
    ----------
    margin
        m > 0. Default 1.0, chosen because the loss is then *calibrated*: for one pair the
        minimum of L over d ∈ [0, m] is at d* = m (1 - t) (set dL/dd = t d - (1 - t)(m - d)
        to 0), i.e. pred* = 1 - 2 m (1 - t). With m = 1 this gives pred* = truth exactly,
        so predicted similarities live on the same scale as the labels and a similarity
        threshold means the same thing for both. Any m > 0 preserves the ranking (pred* is
        increasing in truth); m = 0.5 maps truth ∈ [-1, 1] to pred* ∈ [0, 1], i.e. it only
        asks dissimilar pairs to be orthogonal. As d ≤ 1, m > 1 cannot be reached by
        dissimilar pairs and their term never vanishes.
    distance
        Maps pred (B,) to d (B,); default :func:`cosine_to_distance`.
    target
        Maps truth (B,) to t (B,); default :func:`similarity_to_target`.
    """

    margin: float = 1.0
    distance: Callable[[torch.Tensor], torch.Tensor] = cosine_to_distance
    target: Callable[[torch.Tensor], torch.Tensor] = similarity_to_target

    def __post_init__(self) -> None:
        if not self.margin > 0:
            raise ProtomatchError(f"contrastive margin {self.margin} must be positive")

    def __call__(self, pred: torch.Tensor, truth: torch.Tensor) -> LossParts:
        """Loss of predicted similarities ``pred`` (B,) against ``truth`` (B,)."""
        _check_pair(pred, truth)
        d = self.distance(pred)
        t = self.target(truth)
        similar = (0.5 * t * d.square()).mean()
        dissimilar = (0.5 * (1.0 - t) * torch.clamp(self.margin - d, min=0.0).square()).mean()
        return LossParts(similar + dissimilar, similar, dissimilar)


@dataclasses.dataclass(frozen=True)
class SimilarityMSELoss:
    """Mean squared error between predicted and true similarities.

    ``total = mean((pred - truth)²)``. The parts split the batch by the sign of the label:
    ``similar`` sums the squared errors of pairs with truth >= 0, ``dissimilar`` those with
    truth < 0, both divided by the full batch size B, so ``total = similar + dissimilar`` as
    for :class:`ContrastiveLoss`.
    """

    def __call__(self, pred: torch.Tensor, truth: torch.Tensor) -> LossParts:
        """Loss of predicted similarities ``pred`` (B,) against ``truth`` (B,)."""
        _check_pair(pred, truth)
        squared = (pred - truth).square()
        is_similar = truth >= 0
        similar = torch.where(is_similar, squared, torch.zeros_like(squared)).mean()
        dissimilar = torch.where(is_similar, torch.zeros_like(squared), squared).mean()
        return LossParts(similar + dissimilar, similar, dissimilar)


LOSSES: MappingProxyType[str, type] = MappingProxyType(
    {"contrastive": ContrastiveLoss, "mse": SimilarityMSELoss}
)


def make_loss(name: str, **options: Any) -> ContrastiveLoss | SimilarityMSELoss:
    """Build a registered loss by name.

    Parameters
    ----------
    name
        A key of :data:`LOSSES` (``"contrastive"`` or ``"mse"``).
    **options
        Constructor arguments of that loss (e.g. ``margin`` for ``"contrastive"``).

    Returns
    -------
    ContrastiveLoss or SimilarityMSELoss
        The loss, called as ``loss(pred, truth) -> LossParts``.

    Raises
    ------
    ProtomatchError
        For an unknown name or an option the loss does not take.
    """
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ProtomatchError(
            f"unknown loss '{name}': choose one of {', '.join(sorted(LOSSES))}"
        ) from None
    accepted = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(options) - accepted)
    if unknown:
        takes = ", ".join(sorted(accepted)) if accepted else "no options"
        raise ProtomatchError(
            f"loss '{name}' does not take option(s) {', '.join(unknown)} (it takes: {takes})"
        )
    return cls(**options)
