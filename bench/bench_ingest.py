"""Benchmark ``ingest_library``: images per second with one and with several worker processes.

Builds a synthetic library in the HDF5 schema (Gaussian discs with random clumps, written
with h5py into a temporary folder), ingests it with ``workers=1`` and ``workers=N`` and prints
the best-of-``--repeat`` throughput of each and their ratio.

    python bench/bench_ingest.py [--systems 40 --snapshots 6 --side 128 --size 64 --workers 2]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from protomatch.library import schema
from protomatch.library.ingest import IngestConfig, ingest_library
from protomatch.library.store import LibraryStore


def build_library(root: Path, systems: int, snapshots: int, side: int, seed: int) -> int:
    """Write ``systems`` x ``snapshots`` files of 8 projections; return the image count."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] - side / 2 + 0.5
    for system in range(systems):
        for snapshot in range(snapshots):
            path = schema.library_file_path(root, system, snapshot)
            path.parent.mkdir(parents=True, exist_ok=True)
            width = side * rng.uniform(0.05, 0.2)
            with h5py.File(path, "w") as handle:
                for k in range(1, schema.N_PROJECTIONS + 1):
                    squash = 0.2 + 0.8 * abs(np.cos(np.pi * k / schema.N_PROJECTIONS))
                    disc = np.exp(-(x**2 + (y / squash) ** 2) / (2 * width**2))
                    clumps = rng.lognormal(0.0, 0.5, size=(side, side))
                    handle[schema.projection_dataset(k)] = (1e-18 * disc * clumps).astype("f8")
                for name in schema.DEFAULT_PARAMETERS:
                    handle[name] = rng.uniform(0.1, 10.0)
                handle.attrs[schema.PIXEL_SCALE_ATTRIBUTE] = 5.0
    return systems * snapshots * schema.N_PROJECTIONS


def time_ingest(src: Path, out: Path, size: int, workers: int) -> tuple[float, str]:
    """Seconds taken by one ingest, and the store fingerprint (the store is then removed)."""
    started = time.perf_counter()
    result = ingest_library(src, out, config=IngestConfig(size=size), workers=workers)
    seconds = time.perf_counter() - started
    assert len(LibraryStore.open(out)) == result.n_images
    shutil.rmtree(out)
    return seconds, result.fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=40)
    parser.add_argument("--snapshots", type=int, default=6)
    parser.add_argument("--side", type=int, default=128, help="library image side, pixels")
    parser.add_argument("--size", type=int, default=64, help="stored image side, pixels")
    parser.add_argument("--workers", type=int, default=2, help="worker processes to compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting (best is kept)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        n_images = build_library(root / "lib", args.systems, args.snapshots, args.side, args.seed)
        built = time.perf_counter() - started
        print(
            f"library: {args.systems} systems x {args.snapshots} snapshots x "
            f"{schema.N_PROJECTIONS} projections = {n_images} images of {args.side}x{args.side} "
            f"(written in {built:.1f} s); store size {args.size}x{args.size}"
        )
        timings = {}
        fingerprints = set()
        for workers in (1, args.workers):
            runs = [
                time_ingest(root / "lib", root / f"store_{workers}_{r}", args.size, workers)
                for r in range(args.repeat)
            ]
            seconds = min(t for t, _ in runs)
            timings[workers] = seconds
            fingerprints.update(f for _, f in runs)
            print(
                f"workers={workers}: best of {args.repeat} {seconds:6.2f} s  "
                f"{n_images / seconds:8.0f} images/s  (fingerprint {runs[0][1]})"
            )
        print(f"speed-up workers={args.workers} vs 1: {timings[1] / timings[args.workers]:.2f}x")
        print(f"stores identical: {len(fingerprints) == 1}")


if __name__ == "__main__":
    main()
