"""Train/validation/test splits by system and weakly supervised pair sampling.

Projections and neighbouring snapshots of one system are near-duplicates, so splits are made
over *systems*, never images. A pair joins two snapshots (each a "unit" with one parameter
vector θ) and shows each through a randomly chosen projection; its label is the cosine
similarity of the two normalised θ (:func:`protomatch.library.params.similarity_labels`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, model_validator

from protomatch.errors import ProtomatchError
from protomatch.library.params import similarity_labels

SPLIT_NAMES = ("train", "validation", "test")


class SplitConfig(BaseModel):
    """Fractions of *systems* in each split, and the seed that draws them.

    Attributes
    ----------
    train, validation, test
        Fractions of the systems, >= 0, summing to 1 (train > 0).
    seed
        Seed of the shuffle of the systems.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: float = 0.7
    validation: float = 0.15
    test: float = 0.15
    seed: int = 0

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        fractions = (self.train, self.validation, self.test)
        if min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6 or self.train == 0:
            raise ValueError("split fractions must be >= 0, train > 0, and sum to 1")
        return self


@dataclass(frozen=True)
class SystemSplit:
    """Which systems are in which split (sorted system ids)."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def rows(self, table: pd.DataFrame, split: str) -> np.ndarray:
        """The images of one split.

        Parameters
        ----------
        table
            A store's parameter table (``system`` and ``image_id`` columns).
        split
            ``"train"``, ``"validation"`` or ``"test"``.

        Returns
        -------
        numpy.ndarray
            (n,) store row ids (``image_id``) of the split's images, in table order.
        """
        systems = set(getattr(self, split))
        mask = table["system"].astype(str).isin(systems).to_numpy()
        return table["image_id"].to_numpy()[mask]

    def to_dict(self) -> dict[str, list[str]]:
        """The split as JSON-serialisable lists of system ids, by split name."""
        return {name: list(getattr(self, name)) for name in SPLIT_NAMES}


def split_by_system(systems: Iterable[object], config: SplitConfig) -> SystemSplit:
    """Shuffle the unique systems with ``config.seed`` and cut them by the split fractions.

    Every split with a non-zero fraction gets at least one system.

    Parameters
    ----------
    systems
        The system id of every image (repeats allowed; compared as strings).
    config
        Split fractions and seed.

    Returns
    -------
    SystemSplit
        The sorted system ids of each split.

    Raises
    ------
    ProtomatchError
        If there are fewer systems than non-empty splits.
    """
    unique = sorted({str(s) for s in systems})
    wanted = [name for name in SPLIT_NAMES if getattr(config, name) > 0]
    if len(unique) < len(wanted):
        raise ProtomatchError(
            f"{len(unique)} system(s) cannot fill {len(wanted)} splits ({', '.join(wanted)}); "
            "simulate or ingest more systems"
        )
    order = np.random.default_rng(config.seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    counts = _split_counts(len(unique), [getattr(config, n) for n in SPLIT_NAMES])
    bounds = np.cumsum([0, *counts])
    parts = [tuple(sorted(shuffled[bounds[i] : bounds[i + 1]])) for i in range(3)]
    return SystemSplit(*parts)


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    counts = [round(f * n) if f > 0 else 0 for f in fractions]
    for i, fraction in enumerate(fractions):
        if fraction > 0 and counts[i] == 0:
            counts[i] = 1
    while sum(counts) > n:
        counts[int(np.argmax(counts))] -= 1
    counts[0] += n - sum(counts)
    return counts


class PairConfig(BaseModel):
    """How pairs are drawn each epoch.

    Attributes
    ----------
    pairs_per_epoch
        Pairs drawn per epoch.
    batch_size
        Pairs per batch.
    balanced
        Draw pairs evenly over ``bins`` bins of the similarity label.
    bins
        Label bins over [-1, 1] for balanced sampling.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pairs_per_epoch: int = 8192
    batch_size: int = 128
    balanced: bool = False
    bins: int = 10


@dataclass(frozen=True)
class PairBatch:
    """Store row ids of B pairs and their similarity labels (B,) float32."""

    index_a: np.ndarray
    index_b: np.ndarray
    label: np.ndarray


class PairSampler:
    """Fresh random pairs every epoch, deterministic given (seed, epoch).

    Parameters
    ----------
    table
        Store parameter table restricted to one split (needs image_id, system, snapshot).
    z
        (len(table), P) normalised parameters of those rows.
    weights
        (P,) parameter weights of the label.
    config
        Pairs per epoch, batch size, and similarity-balanced sampling: with ``balanced``
        a pool of candidate pairs is drawn and pairs are taken evenly from ``bins`` label
        bins over [-1, 1], so rare very-similar pairs are seen as often as common ones.
    seed
        Seed of the pairs; with the epoch number it fixes each epoch's pairs.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        z: np.ndarray,
        weights: np.ndarray | None,
        config: PairConfig,
        seed: int,
    ) -> None:
        if len(table) == 0:
            raise ProtomatchError("cannot draw pairs from an empty split")
        units = table.groupby(["system", "snapshot"], sort=True).indices
        self._unit_rows = [
            np.asarray(table["image_id"].to_numpy()[rows]) for rows in units.values()
        ]
        self._unit_z = np.stack([z[rows[0]] for rows in units.values()])
        self._weights = weights
        self.config = config
        self.seed = seed

    @property
    def n_units(self) -> int:
        """Snapshots (system, snapshot) pairs are drawn from."""
        return len(self._unit_rows)

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-self.config.pairs_per_epoch // self.config.batch_size)

    def epoch(self, epoch: int) -> Iterator[PairBatch]:
        """The batches of pairs of one epoch.

        Parameters
        ----------
        epoch
            Epoch number; the same (seed, epoch) always gives the same pairs.

        Returns
        -------
        Iterator of PairBatch
            ``len(self)`` batches of store row ids and labels.
        """
        rng = np.random.default_rng([self.seed, epoch])
        unit_a, unit_b = self._draw_units(rng, self.config.pairs_per_epoch)
        labels = similarity_labels(
            self._unit_z[unit_a], self._unit_z[unit_b], self._weights
        ).numpy()
        index_a = self._random_projection(rng, unit_a)
        index_b = self._random_projection(rng, unit_b)
        size = self.config.batch_size
        for start in range(0, len(unit_a), size):
            window = slice(start, start + size)
            yield PairBatch(index_a[window], index_b[window], labels[window])

    def _draw_units(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.config.balanced:
            return rng.integers(self.n_units, size=n), rng.integers(self.n_units, size=n)
        pool = 8 * n
        a, b = rng.integers(self.n_units, size=pool), rng.integers(self.n_units, size=pool)
        labels = similarity_labels(self._unit_z[a], self._unit_z[b], self._weights).numpy()
        chosen = _balanced_choice(rng, labels, self.config.bins, n)
        return a[chosen], b[chosen]

    def _random_projection(self, rng: np.random.Generator, units: np.ndarray) -> np.ndarray:
        counts = np.array([len(self._unit_rows[u]) for u in units])
        picks = (rng.random(len(units)) * counts).astype(int)
        return np.array([self._unit_rows[u][p] for u, p in zip(units, picks)], dtype=np.int64)


def _balanced_choice(rng: np.random.Generator, labels: np.ndarray, bins: int, n: int) -> np.ndarray:
    """Indices of ``n`` labels drawn evenly over the occupied bins of [-1, 1]."""
    which = np.clip(((labels + 1) / 2 * bins).astype(int), 0, bins - 1)
    occupied = [np.flatnonzero(which == k) for k in range(bins)]
    occupied = [members for members in occupied if len(members)]
    bin_of_pick = rng.integers(len(occupied), size=n)
    return np.array([rng.choice(occupied[k]) for k in bin_of_pick], dtype=np.int64)


class PairBatchDataset(torch.utils.data.Dataset):
    """One epoch's pair batches read from the store's memory-mapped image array.

    Each item is a whole batch: ``(images_a (B, H, W), images_b (B, H, W), labels (B,),
    features_a (B, F), features_b (B, F))``, where the features are per-image scalars
    (``F = 0`` without them). Worker processes share the memory map: only the batch
    indices travel between them.

    Parameters
    ----------
    images
        (N, H, W) store images (a memory map).
    batches
        The epoch's pair batches.
    features
        (N, F) per-image scalar features (None: F = 0).
    """

    def __init__(
        self,
        images: np.ndarray,
        batches: Sequence[PairBatch],
        features: np.ndarray | None = None,
    ) -> None:
        self._images = images
        self._batches = list(batches)
        if features is None:
            features = np.zeros((len(images), 0), dtype=np.float32)
        self._features = np.asarray(features, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, ...]:
        batch = self._batches[item]
        return (
            _gather(self._images, batch.index_a),
            _gather(self._images, batch.index_b),
            torch.from_numpy(batch.label),
            torch.from_numpy(self._features[batch.index_a]),
            torch.from_numpy(self._features[batch.index_b]),
        )


def _gather(images: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Rows of a memory map in one sorted read, back in the requested order."""
    order = np.argsort(rows, kind="stable")
    block = np.empty((len(rows), *images.shape[1:]), dtype=np.float32)
    block[order] = images[rows[order]]
    return torch.from_numpy(block)
