"""Benchmark pair batches per second: the library store vs a per-item HDF5 loader (goal >= 20x).

Store side (as training reads pairs): ``PairSampler`` batches of 128 pairs, gathered by
``PairBatchDataset`` from the store's memory-mapped image array, intensity stretch applied per
batch. Baseline (the research pipeline's way): a torch Dataset whose item is one pair, opening
the two HDF5 library files, preparing each image (geometry + intensity stage) and computing the
label, collated by a DataLoader with batch_size=128. Both read the SAME pairs (the sampler's
store rows mapped back to file and projection). Then the store loader runs with two worker
processes and each worker's memory is read from /proc to show the memory map is shared.

    python bench/bench_pairs.py [--quick] [--library PATH] [--batches N --baseline-batches N]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import (
    MIB,
    add_library_arguments,
    draw_pairs,
    hdf5_loader,
    library_line,
    mapping_kib,
    prepare_library,
    print_header,
    private_kib,
    set_threads,
    status_kib,
    stretched,
    time_iterations,
)
from protomatch.training.pairs import PairBatchDataset

GOAL = 20.0


def store_loader(
    images: np.ndarray, batches: list, num_workers: int
) -> torch.utils.data.DataLoader:
    """The training loader: one item = one whole pair batch gathered from the memory map."""
    return torch.utils.data.DataLoader(
        PairBatchDataset(images, batches), batch_size=None, num_workers=num_workers
    )


def check_same_pairs(store_batch: tuple, baseline_batch: tuple) -> str:
    """Largest differences between the two loaders' first batches (images, labels)."""
    image_diff = max(
        float((s - b).abs().max()) for s, b in zip(store_batch[:2], baseline_batch[:2])
    )
    label_diff = float((store_batch[2] - baseline_batch[2]).abs().max())
    return (
        f"same pairs check (first batch): max |image diff| {image_diff:.2e}, "
        f"max |label diff| {label_diff:.2e}"
    )


def worker_memory(store_images: np.memmap, batches: list, warmup: int) -> list[str]:
    """Run the store loader with 2 workers; report throughput and each worker's memory."""
    before = {p.pid for p in multiprocessing.active_children()}
    loader = store_loader(store_images, batches, num_workers=2)
    preprocess_batches = iter(loader)
    workers = [p for p in multiprocessing.active_children() if p.pid not in before]
    n = len(batches) - warmup
    seconds = time_iterations(preprocess_batches, n, warmup)
    # all batches consumed but StopIteration not yet reached: the workers are still alive
    path = Path(store_images.filename)
    array_mib = store_images.nbytes / MIB
    lines = [
        f"store loader, num_workers=2: {n / seconds:8.1f} batches/s (gather only, stretch not "
        "included)",
        f"memory of the 2 loader workers (image array {array_mib:.1f} MiB, memory-mapped from "
        f"{path.name}):",
    ]
    parent = status_kib(os.getpid())
    lines.append(
        f"  parent (main process): VmRSS {parent['VmRSS'] / 1024:7.1f} MiB "
        f"(RssAnon {parent['RssAnon'] / 1024:.1f}, RssFile {parent['RssFile'] / 1024:.1f})"
    )
    for worker in workers:
        status = status_kib(worker.pid)
        mapped = mapping_kib(worker.pid, path)
        lines.append(
            f"  worker pid {worker.pid}: VmRSS {status['VmRSS'] / 1024:7.1f} MiB "
            f"(RssAnon {status['RssAnon'] / 1024:.1f}, RssFile {status['RssFile'] / 1024:.1f}), "
            f"private to the worker {private_kib(worker.pid) / 1024:.1f} MiB; "
            f"image map: resident {mapped['Rss'] / 1024:.1f} MiB, private "
            f"{(mapped['Private_Clean'] + mapped['Private_Dirty']) / 1024:.1f} MiB, "
            f"proportional share (Pss) {mapped['Pss'] / 1024:.1f} MiB"
        )
    lines += [
        "  -> each worker's RssAnon is the parent's heap inherited at fork (shared copy-on-write,"
        " counted in every VmRSS);",
        "     the image pages are the file's page cache, mapped read-only and shared by the "
        "workers and the parent: no per-worker copy of the array",
    ]
    del preprocess_batches
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 30 s")
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per batch")
    parser.add_argument("--batches", type=int, help="timed store batches (default 300, quick 60)")
    parser.add_argument(
        "--baseline-batches", type=int, help="timed baseline batches (default 20, quick 4)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches before timing")
    add_library_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    set_threads(args)
    n_store = args.batches or (60 if args.quick else 300)
    n_base = args.baseline_batches or (4 if args.quick else 20)
    warmup = args.warmup

    with tempfile.TemporaryDirectory(prefix="bench_pairs_") as tmp:
        library = prepare_library(args, Path(tmp))
        store = library.store
        batches, normaliser = draw_pairs(store, n_store + warmup, args.batch_size, args.seed)
        print_header(
            "bench_pairs: pair batches per second, library store vs per-item HDF5 loader",
            [
                library_line(library),
                f"batches of {args.batch_size} pairs; {warmup} warm-up batches excluded; "
                "both loaders in the main process (num_workers=0)",
            ],
        )
        preprocess = store.preprocess

        base_loader = hdf5_loader(store, batches[: n_base + warmup], normaliser, args.batch_size)
        first_store = next(iter(stretched(store_loader(store.images, batches, 0), preprocess)))
        print(check_same_pairs(first_store, next(iter(base_loader))))

        base_seconds = time_iterations(base_loader, n_base, warmup)
        base_rate = n_base / base_seconds
        print(
            f"baseline  (per-item HDF5, 2 files opened per pair): {n_base:4d} batches in "
            f"{base_seconds:6.2f} s = {base_rate:8.2f} batches/s "
            f"({base_seconds / n_base / args.batch_size * 1e3:.2f} ms per pair)"
        )
        loader = stretched(store_loader(store.images, batches, 0), preprocess)
        store_seconds = time_iterations(loader, n_store, warmup)
        store_rate = n_store / store_seconds
        print(
            f"store     (PairBatchDataset on the memory map + stretch): {n_store:4d} batches in "
            f"{store_seconds:6.2f} s = {store_rate:8.2f} batches/s "
            f"({store_seconds / n_store / args.batch_size * 1e3:.3f} ms per pair)"
        )
        ratio = store_rate / base_rate
        verdict = "met" if ratio >= GOAL else "NOT met"
        print(f"ratio store / baseline: {ratio:.1f}x  (goal >= {GOAL:.0f}x: {verdict})")
        if library.file_side <= args.size:
            print(
                f"note: library files hold {library.file_side}x{library.file_side} px images; "
                "real 800x800 files make every baseline item far costlier (the store side is "
                "unchanged), so this ratio is a lower bound"
            )
        started = time.perf_counter()
        for line in worker_memory(store.images, batches, warmup):
            print(line)
        print(f"(worker run took {time.perf_counter() - started:.1f} s including start-up)")


if __name__ == "__main__":
    main()
