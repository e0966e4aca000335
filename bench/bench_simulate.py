"""Benchmark the built-in simulator: the demo library with one worker, then with two.

Usage: ``python bench/bench_simulate.py [--systems 48 --snapshots 12 --size 64 --workers 1 2]``.
Prints images per second for each worker count and the speed-up over the first one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from protomatch.simulate import simulate_library


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=48)
    parser.add_argument("--snapshots", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(
        f"simulate_library: {args.systems} systems x {args.snapshots} snapshots x 8 projections "
        f"at {args.size}x{args.size} px, {os.cpu_count()} CPU cores"
    )
    print("(load average before each run shows whether other work shared the cores)")
    rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench_simulate_") as tmp:
        for workers in args.workers:
            load = os.getloadavg()[0]
            result = simulate_library(
                Path(tmp) / f"workers{workers}",
                systems=args.systems,
                snapshots=args.snapshots,
                size=args.size,
                seed=args.seed,
                workers=workers,
            )
            rate = result.n_images / result.seconds
            rates.append(rate)
            print(
                f"workers={workers}: {result.n_images} images in {result.seconds:6.1f} s  "
                f"{rate:7.1f} images/s  ({1e3 / rate:5.2f} ms/image)  "
                f"speed-up x{rate / rates[0]:.2f}  (load {load:.2f})"
            )


if __name__ == "__main__":
    main()
