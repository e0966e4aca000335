"""Shared parts of the pair, training and search benchmarks.

* a header describing the machine (cores, torch threads, load) and the library;
* a real library: simulated with :func:`protomatch.simulators.library.simulate_library` (or
  an existing one given with ``--library``) and ingested with
  :func:`protomatch.library.ingest.ingest_library`;
* one epoch of pairs drawn by :class:`protomatch.training.pairs.PairSampler`, and the same pairs
  mapped back to (library file, projection) for the baseline;
* the research pipeline's data path, the baseline: a torch ``Dataset`` whose item is ONE pair,
  read by opening both HDF5 library files, preparing each image (geometry + intensity stage)
  and computing the label;
* memory readings of a process from ``/proc`` (Linux).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from protomatch.library import schema
from protomatch.library.ingest import IngestConfig, ingest_library
from protomatch.library.params import ParameterNormaliser, similarity_labels
from protomatch.library.preprocess import PreprocessConfig, intensity_transform, prepare_image
from protomatch.library.store import LibraryStore
from protomatch.simulators.library import SimulateConfig, simulate_library
from protomatch.training.pairs import PairBatch, PairConfig, PairSampler

MIB = 1024**2


# --------------------------------------------------------------------------- header


def print_header(title: str, lines: Sequence[str] = ()) -> None:
    """Title, machine line, then ``lines``."""
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"== {title}")
    print(
        f"machine: {cores} cores ({usable} usable), torch {torch.__version__} with "
        f"{torch.get_num_threads()} intra-op threads, {platform.machine()}, "
        f"load average {load:.2f} (other work sharing the cores slows both sides)"
    )
    for line in lines:
        print(line)


def library_line(library: BenchLibrary) -> str:
    store = library.store
    n, side, _ = store.images.shape
    origin = (
        f"simulated in {library.simulate_seconds:.1f} s"
        if library.simulate_seconds is not None
        else "given with --library"
    )
    return (
        f"library: {library.n_files} HDF5 files ({library.file_side}x{library.file_side} px "
        f"projections, {origin}) -> store of {n} images {side}x{side} float32 "
        f"({store.images.nbytes / MIB:.1f} MiB, ingested in {library.ingest_seconds:.1f} s)"
    )


# --------------------------------------------------------------------------- library


@dataclass(frozen=True)
class BenchLibrary:
    """A library folder in the HDF5 schema and its store."""

    root: Path
    store: LibraryStore
    n_files: int
    file_side: int
    simulate_seconds: float | None
    ingest_seconds: float


def add_library_arguments(parser: argparse.ArgumentParser) -> None:
    """``--library``, the simulator's size options and the store image size."""
    group = parser.add_argument_group("library")
    group.add_argument(
        "--library", type=Path, help="existing HDF5 library folder (default: simulate one)"
    )
    group.add_argument("--systems", type=int, help="simulated systems (default 16, quick 6)")
    group.add_argument("--snapshots", type=int, help="snapshots per system (default 8, quick 4)")
    group.add_argument("--side", type=int, default=64, help="simulated image side, px")
    group.add_argument("--size", type=int, default=64, help="store / model image side, px")
    group.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's, one per core)"
    )


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (before anything runs torch)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def prepare_library(args: argparse.Namespace, tmp: Path) -> BenchLibrary:
    """Simulate (unless ``args.library``) and ingest a library into ``tmp``."""
    simulate_seconds = None
    if args.library is not None:
        root = args.library
    else:
        root = tmp / "library"
        started = time.perf_counter()
        config = SimulateConfig(
            systems=args.systems or (6 if args.quick else 16),
            snapshots=args.snapshots or (4 if args.quick else 8),
            size=args.side,
            seed=args.seed,
        )
        simulate_library(root, config=config)
        simulate_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = ingest_library(root, tmp / "store", config=IngestConfig(size=args.size))
    ingest_seconds = time.perf_counter() - started
    store = LibraryStore.open(result.path)
    if store.manifest["form"] != "hdf5":
        raise SystemExit(f"{root}: the benchmarks need a library in the HDF5 schema")
    first = Path(store.manifest["source"]) / str(store.table["source"].iloc[0])
    with h5py.File(first, "r") as handle:
        file_side = int(handle[schema.projection_dataset(1)].shape[-1])
    return BenchLibrary(root, store, result.n_files, file_side, simulate_seconds, ingest_seconds)


# --------------------------------------------------------------------------- pairs


def draw_pairs(
    store: LibraryStore, n_batches: int, batch_size: int, seed: int
) -> tuple[list[PairBatch], ParameterNormaliser]:
    """One epoch of ``n_batches`` pair batches over the whole store, and the normaliser.

    The normalisation is fitted on every image (a benchmark has no held-out split to protect).
    """
    theta = store.theta()
    normaliser = ParameterNormaliser.fit(theta, store.param_names)
    config = PairConfig(pairs_per_epoch=n_batches * batch_size, batch_size=batch_size)
    sampler = PairSampler(store.table, normaliser.transform(theta), None, config, seed)
    return list(sampler.epoch(0)), normaliser


@dataclass(frozen=True)
class PairItem:
    """One pair as the research pipeline addresses it: two (library file, projection)."""

    file_a: Path
    projection_a: int
    file_b: Path
    projection_b: int


def pair_items(store: LibraryStore, batches: Iterable[PairBatch]) -> list[PairItem]:
    """The sampler's store rows mapped back to files and projections, in batch order."""
    root = Path(store.manifest["source"])
    sources = store.table["source"].astype(str).to_numpy()
    projections = store.table["projection"].to_numpy()
    return [
        PairItem(root / sources[a], int(projections[a]), root / sources[b], int(projections[b]))
        for batch in batches
        for a, b in zip(batch.index_a, batch.index_b)
    ]


class HDF5PairDataset(torch.utils.data.Dataset):
    """The baseline: one pair per item, read from the library's HDF5 files every time.

    ``__getitem__`` opens both files with h5py, reads one projection and the scalar
    parameters of each, prepares each image (geometry stage, then intensity stage) and
    computes the label (cosine of the normalised parameter vectors).
    """

    def __init__(
        self,
        items: Sequence[PairItem],
        param_names: Sequence[str],
        normaliser: ParameterNormaliser,
        preprocess: PreprocessConfig,
    ) -> None:
        self._items = list(items)
        self._names = tuple(param_names)
        self._normaliser = normaliser
        self._preprocess = preprocess

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pair = self._items[item]
        raw_a, theta_a = _read_projection(pair.file_a, pair.projection_a, self._names)
        raw_b, theta_b = _read_projection(pair.file_b, pair.projection_b, self._names)
        z = self._normaliser.transform(np.stack([theta_a, theta_b]))
        label = similarity_labels(z[:1], z[1:])[0]
        return self._prepare(raw_a), self._prepare(raw_b), label

    def _prepare(self, raw: np.ndarray) -> torch.Tensor:
        prepared = prepare_image(raw, self._preprocess).image
        return intensity_transform(torch.from_numpy(prepared)[None], self._preprocess)[0]


def _read_projection(path: Path, projection: int, names: Sequence[str]) -> tuple[np.ndarray, ...]:
    with h5py.File(path, "r") as handle:
        image = handle[schema.projection_dataset(projection)][()]
        theta = np.array([handle[name][()] for name in names], dtype=np.float64)
    return image, theta


def hdf5_loader(
    store: LibraryStore,
    batches: Sequence[PairBatch],
    normaliser: ParameterNormaliser,
    batch_size: int,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """DataLoader over :class:`HDF5PairDataset` yielding the same batches as the store's."""
    dataset = HDF5PairDataset(
        pair_items(store, batches), store.param_names, normaliser, store.preprocess
    )
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )


def stretched(
    batches: Iterable[tuple[torch.Tensor, ...]], preprocess: PreprocessConfig
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Store loader batches with the intensity stage applied per batch, as training does."""
    for images_a, images_b, labels, *_ in batches:
        yield (
            intensity_transform(images_a, preprocess),
            intensity_transform(images_b, preprocess),
            labels,
        )


# --------------------------------------------------------------------------- timing


def time_iterations(
    iterable: Iterable[object], n: int, warmup: int, step: Callable[[object], None] | None = None
) -> float:
    """Seconds for ``n`` items of ``iterable`` after ``warmup`` untimed ones (each passed to
    ``step`` if given). The iterable must hold at least ``warmup + n`` items."""
    iterator = iter(iterable)
    for _ in range(warmup):
        item = next(iterator)
        if step is not None:
            step(item)
    started = time.perf_counter()
    for _ in range(n):
        item = next(iterator)
        if step is not None:
            step(item)
    return time.perf_counter() - started


# --------------------------------------------------------------------------- memory


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem of process ``pid`` in KiB (from /proc/PID/status)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            values[key] = int(rest.split()[0])
    return values


def private_kib(pid: int) -> int:
    """Memory of ``pid`` that no other process shares (Private_Clean + Private_Dirty), KiB."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def mapping_kib(pid: int, path: Path) -> dict[str, int]:
    """Rss, Pss, Shared_Clean, Private_Clean, Private_Dirty (KiB) of ``pid``'s mappings of
    the file ``path``, summed (from /proc/PID/smaps)."""
    target = str(path.resolve())
    fields = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")
    totals = dict.fromkeys(fields, 0)
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            inside = len(head) >= 6 and " ".join(head[5:]) == target
        elif inside and head and head[0].rstrip(":") in totals:
            totals[head[0].rstrip(":")] += int(head[1])
    return totals
