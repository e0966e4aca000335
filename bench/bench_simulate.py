"""Benchmark the built-in simulator: the demo library with one worker, then with two.

Usage: ``python bench/bench_simulate.py [--systems 96 --snapshots 6 --size 64 --workers 1 2]``.
Prints images per second for each worker count and the speed-up over the first one, with the
CPU time used (this process and its workers) and the mean number of busy cores, so a speed-up
held back by other work sharing the machine (see the load average) can be told apart.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from protomatch.simulators.library import SimulateConfig, simulate_library


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished child processes [s]."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=96)
    parser.add_argument("--snapshots", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(
        f"simulate_library: {args.systems} systems x {args.snapshots} snapshots x 8 projections "
        f"at {args.size}x{args.size} px, {os.cpu_count()} CPU cores"
    )
    rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench_simulate_") as tmp:
        for workers in args.workers:
            load, cpu = os.getloadavg()[0], _cpu_seconds()
            config = SimulateConfig(
                systems=args.systems, snapshots=args.snapshots, size=args.size, seed=args.seed
            )
            result = simulate_library(
                Path(tmp) / f"workers{workers}", config=config, workers=workers
            )
            cpu = _cpu_seconds() - cpu
            rate = result.n_images / result.seconds
            rates.append(rate)
            print(
                f"workers={workers}: {result.n_images} images in {result.seconds:5.1f} s, "
                f"{rate:6.1f} images/s, speed-up x{rate / rates[0]:.2f} | "
                f"cpu {cpu:5.1f} s ({1e3 * cpu / result.n_images:.1f} ms/image), "
                f"{cpu / result.seconds:.2f} cores busy, load before {load:.2f}"
            )


if __name__ == "__main__":
    main()
