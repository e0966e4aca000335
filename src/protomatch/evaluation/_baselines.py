"""The vectors and rankings the library evaluation compares (:mod:`protomatch.evaluation.library`).

One pass over the library store embeds every image with the model, projects its model-input
pixels on a PCA basis fitted on training-split images (:func:`pca_fit_rows`), and keeps each
query's best raw-pixel cosine matches among the images of other systems
(:func:`library_pass`), and the same by the strong-pixel similarity (asinh stretch, best of
the 8 rotations and flips; :mod:`protomatch.matching.pixels`); :func:`method_rankings` then
gives the top-k (scores, rows) of every method and of the ideal ranking by the true
similarity. The store is read in blocks and the
pixel ranking is kept as a running top k, so memory stays bounded for large libraries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from protomatch.evaluation import metrics as M
from protomatch.library.preprocess import PreprocessConfig, intensity_transform
from protomatch.library.store import LibraryStore
from protomatch.matching.pixels import SOFTENING_FLOOR, asinh_rows
from protomatch.matching.summary import unit_rows
from protomatch.neural_nets.trained import TrainedModel
from protomatch.optics.orientation import DIHEDRAL, dihedral_image

log = logging.getLogger(__name__)

#: Training-split images used to fit the PCA baseline (a random subset keeps it fast).
_PCA_FIT_MAX = 2000
#: Store images read per block of the library pass.
_READ_BLOCK = 1024


class _PassSettings(Protocol):
    """The settings read here (of :class:`protomatch.evaluation.library.EvaluateConfig`)."""

    @property
    def pca_components(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def batch_size(self) -> int: ...


class PassSetup(Protocol):
    """What the pass and the rankings read of the evaluation's setup (``library._Setup``)."""

    @property
    def store(self) -> LibraryStore: ...

    @property
    def trained(self) -> TrainedModel: ...

    @property
    def config(self) -> _PassSettings: ...

    @property
    def group(self) -> np.ndarray: ...

    @property
    def z_unit(self) -> np.ndarray: ...

    @property
    def queries(self) -> np.ndarray: ...

    @property
    def pca_rows(self) -> np.ndarray: ...

    @property
    def k_max(self) -> int: ...


def pca_fit_rows(
    trained: TrainedModel, system: np.ndarray, evaluated: tuple[str, ...], rng: np.random.Generator
) -> tuple[np.ndarray, str | None]:
    """Rows to fit the PCA baseline on: training-split images (at most ``_PCA_FIT_MAX``)."""
    train = list((trained.manifest.get("split") or {}).get("train", []))
    others = ~np.isin(system, list(evaluated))
    rows, note = np.flatnonzero(np.isin(system, train) & others), None
    if len(rows) < 2:
        rows = np.flatnonzero(others) if others.sum() >= 2 else np.arange(len(system))
        note = "no training-split images in this library: PCA fitted on " + (
            "its other images" if others.sum() >= 2 else "all of it, queries included"
        )
    if len(rows) > _PCA_FIT_MAX:
        rows = np.sort(rng.choice(rows, _PCA_FIT_MAX, replace=False))
    return rows, note


@dataclass(frozen=True, eq=False)
class LibraryVectors:
    """What :func:`library_pass` computes: every library image's vectors, the pixel ranking."""

    embeddings: np.ndarray  # (N, D) float32 unit rows
    pca: np.ndarray  # (N, C) float32 unit rows
    pixel_top: tuple[np.ndarray, np.ndarray]  # raw-pixel cosine top-k scores, ids (Q, K)
    strong_top: tuple[np.ndarray, np.ndarray]  # strong-pixel top-k scores, ids (Q, K)


def _pixels(images: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """The model's input pixels, flattened: (B, H, W) linear images -> (B, H*W) float32."""
    batch = torch.from_numpy(np.require(images, np.float32, ["C", "W"]))
    return intensity_transform(batch, preprocess).reshape(len(batch), -1).numpy()


def _read_rows(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Images at sorted ``rows`` of a memory map, read in order."""
    return np.asarray(images[np.sort(rows)], dtype=np.float32)


def _fit_pca(setup: PassSetup) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and components (D, C) of training-split pixels (randomised PCA, seeded)."""
    pixels = _pixels(_read_rows(setup.store.images, setup.pca_rows), setup.trained.preprocess)
    wanted = max(1, min(setup.config.pca_components, len(pixels) - 1, pixels.shape[1]))
    if wanted < setup.config.pca_components:
        log.warning("PCA baseline limited to %d components by its fit sample", wanted)
    data = torch.from_numpy(pixels)
    mean = data.mean(dim=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(setup.config.seed)
        _, _, basis = torch.pca_lowrank(data - mean, q=min(wanted + 8, len(pixels)), center=False)
    return mean.numpy(), basis[:, :wanted].numpy()


def library_pass(setup: PassSetup) -> LibraryVectors:
    """Embed every library image, project it on the PCA basis, and rank it by pixel cosine."""
    store, trained, config = setup.store, setup.trained, setup.config
    mean, basis = _fit_pca(setup)
    query_images = _read_rows(store.images, setup.queries)
    query_pixels = unit_rows(_pixels(query_images, trained.preprocess))
    query_turns = _turned_rows(query_images)
    query_groups = setup.group[setup.queries]
    pixel_top = M.RunningTopK(len(setup.queries), setup.k_max)
    strong_top = M.RunningTopK(len(setup.queries), setup.k_max)
    n = len(store)
    embeddings = np.empty((n, trained.encoder_config.embedding_dim), dtype=np.float32)
    pca = np.empty((n, basis.shape[1]), dtype=np.float32)
    step = max(_READ_BLOCK, config.batch_size)
    for start in tqdm(range(0, n, step), desc="evaluate: library", leave=False, disable=None):
        block = np.array(store.images[start : start + step], dtype=np.float32)
        stop = start + len(block)
        brightness = store.table["mean_intensity"].to_numpy()[start:stop]
        embeddings[start:stop] = trained.embed(block, brightness, config.batch_size)
        pixels = _pixels(block, trained.preprocess)
        pca[start:stop] = unit_rows((pixels - mean) @ basis)
        own = M.own_group_mask(query_groups, setup.group[start:stop])
        scores = query_pixels @ unit_rows(pixels).T
        scores[own] = -np.inf
        pixel_top.push(scores, np.arange(start, stop))
        strong = asinh_rows(block, SOFTENING_FLOOR)
        best = np.max([turn @ strong.T for turn in query_turns], axis=0)
        best[own] = -np.inf
        strong_top.push(best, np.arange(start, stop))
    return LibraryVectors(embeddings, pca, pixel_top.result(), strong_top.result())


def _turned_rows(images: np.ndarray) -> list[np.ndarray]:
    """The strong-pixel rows of images under each of the 8 rotations and flips.

    Library images have no noise, so the stretch softens at :data:`SOFTENING_FLOOR`.
    """
    return [
        asinh_rows(np.stack([dihedral_image(i, turns, flip) for i in images]), SOFTENING_FLOOR)
        for turns, flip in DIHEDRAL
    ]


def method_rankings(
    setup: PassSetup, vectors: LibraryVectors
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Top-k (scores, rows) per method, and the ideal ranking by true similarity."""
    q, groups, k = setup.queries, setup.group, setup.k_max
    rankings = {
        "protomatch": M.top_k_excluding(
            vectors.embeddings[q], vectors.embeddings, groups[q], groups, k
        ),
        "pixels": vectors.pixel_top,
        "pixels_strong": vectors.strong_top,
        "pca": M.top_k_excluding(vectors.pca[q], vectors.pca, groups[q], groups, k),
        "random": M.random_top_k(
            groups[q], groups, k, np.random.default_rng([setup.config.seed, 1])
        ),
        "ideal": M.top_k_excluding(setup.z_unit[q], setup.z_unit, groups[q], groups, k),
    }
    return rankings
