"""The research pipeline's matching, kept as a reference: every pair through the network.

Same ranking as the index (:mod:`protomatch.matching.index`) at N forward passes' cost;
tests and ``bench/bench_search.py`` compare the two.
"""

from __future__ import annotations

import numpy as np
import torch

from protomatch.library.preprocess import intensity_transform
from protomatch.neural_nets.trained import TrainedModel

__all__ = ["score_pairwise"]


@torch.no_grad()
def score_pairwise(
    trained: TrainedModel,
    target: np.ndarray,
    library_images: np.ndarray,
    target_intensity: float | None = None,
    library_intensity: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """The research pipeline's matching: every (target, library image) pair through the network.

    Returns the predicted similarity (N,) of the prepared ``target`` (H, W) to each of
    ``library_images`` (N, H, W); brightness-aware models also need the target's and the
    library images' mean intensities. Same ranking as the index, at N forwards' cost.

    Parameters
    ----------
    trained
        The model.
    target
        (H, W) float32 prepared linear image (peak 1) on the library's grid.
    library_images
        (N, H, W) linear, peak-1 library images (an array or the store's image dataset),
        read in batches.
    target_intensity
        The target's mean intensity in the library's unit; needed (positive) by
        brightness-aware models, ignored by the others.
    library_intensity
        (N,) mean intensities of the library images in the same unit; needed like
        ``target_intensity``.
    batch_size
        Pairs per forward pass.

    Returns
    -------
    numpy.ndarray
        (N,) float32 predicted cosine similarities in [-1, 1].
    """
    network = trained.network.eval()
    device = trained.device
    n = len(library_images)
    target_input = intensity_transform(
        torch.from_numpy(target[None]).to(device), trained.preprocess
    )
    target_scalars = trained.brightness_features(
        None if target_intensity is None else np.array([target_intensity]), 1
    )
    library_scalars = trained.brightness_features(library_intensity, n)
    scores = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = np.array(library_images[start : start + batch_size], dtype=np.float32)
        inputs = intensity_transform(torch.from_numpy(batch).to(device), trained.preprocess)
        targets = target_input.unsqueeze(1).expand(len(batch), -1, -1, -1)
        scalars: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        if target_scalars is not None and library_scalars is not None:
            scalars = (
                target_scalars.to(device).expand(len(batch), -1),
                library_scalars[start : start + len(batch)].to(device),
            )
        predicted = network(targets, inputs.unsqueeze(1), *scalars)
        scores[start : start + len(batch)] = predicted.float().cpu().numpy()
    return scores
