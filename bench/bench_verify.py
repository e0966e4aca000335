"""What checking a store's checksums costs: opening and reading with and without them.

Builds a demo-sized store (96 systems x 6 snapshots x 8 projections = 4608 images of 64 px,
as ``protomatch demo``; ``--quick``: 6 x 4) and a copy of it whose manifest is as written
before checksums (so nothing is checked), then times, in the same run with a warm page
cache, median of ``--repeats``:

* open: ``LibraryStore.open`` (checked: ``params.parquet`` hashed whole);
* open + 10 images: what ``match`` reads (checked: the blocks holding them);
* open + every image: what ``train`` and ``index`` read (checked: every block, once);
* ``verify_artefact``: the full check of ``protomatch verify`` (checked store only).

    /work/venv/bin/python bench/bench_verify.py [--quick] [--library PATH] [--repeats 7]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from _common import MIB, add_library_arguments, library_line, prepare_library, print_header
from protomatch.library.store import LibraryStore
from protomatch.verify import verify_artefact


def _median_seconds(action: Callable[[], object], repeats: int) -> float:
    action()  # warm the page cache and imports
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _unchecked_copy(store: Path, target: Path) -> Path:
    shutil.copytree(store, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.pop("files")
    manifest["schema_version"] = 1
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def _read_rows(store: Path, rows: np.ndarray | None) -> float:
    opened = LibraryStore.open(store)
    images = opened.images[:] if rows is None else opened.images[rows]
    return float(images.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    add_library_arguments(parser)
    parser.set_defaults(systems=None, snapshots=None)
    args = parser.parse_args()
    if not args.quick:
        args.systems, args.snapshots = args.systems or 96, args.snapshots or 6
    logging.getLogger("protomatch").setLevel(logging.ERROR)  # the "no checksums" note
    with tempfile.TemporaryDirectory() as tmp:
        library = prepare_library(args, Path(tmp))
        checked = library.store.path
        unchecked = _unchecked_copy(checked, Path(tmp) / "unchecked")
        print_header("store checksums: cost of checking on open and read", [library_line(library)])
        data = np.random.default_rng(0).bytes(64 * MIB)
        started = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        print(f"SHA-256 throughput: {64 / (time.perf_counter() - started):.0f} MiB/s")
        rows = np.sort(np.random.default_rng(1).choice(len(library.store), 10, replace=False))
        cases: dict[str, Callable[[Path], object]] = {
            "open": LibraryStore.open,
            "open + 10 images (match)": lambda s: _read_rows(s, rows),
            "open + every image (train, index)": lambda s: _read_rows(s, None),
        }
        print(f"{'':36s} {'unchecked':>11s} {'checked':>11s} {'ratio':>7s}")
        for name, case in cases.items():
            before = _median_seconds(functools.partial(case, unchecked), args.repeats)
            after = _median_seconds(functools.partial(case, checked), args.repeats)
            print(f"{name:36s} {before * 1e3:9.1f} ms {after * 1e3:9.1f} ms {after / before:6.2f}x")
        full = _median_seconds(lambda: verify_artefact(checked), max(1, args.repeats // 2))
        print(f"{'protomatch verify (full re-hash)':36s} {'':>11s} {full * 1e3:9.1f} ms")


if __name__ == "__main__":
    main()
