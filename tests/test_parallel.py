"""The process-pool helpers: ordered and unordered maps, in-process and in workers."""

from __future__ import annotations

import math
import operator
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from protomatch._parallel import ordered_map, unordered_map
from protomatch.library.ingest import ingest_library
from tests.conftest import write_foreign_library
from tests.processes import children, is_running, kill, needs_proc, start_protomatch, wait_for


@pytest.mark.parametrize("workers", [1, 2])
def test_ordered_map_keeps_task_order(workers: int) -> None:
    tasks = list(range(40))
    results = list(ordered_map(operator.neg, tasks, workers, desc="test", unit="task"))
    assert results == [-t for t in tasks]


@pytest.mark.parametrize("workers", [1, 2])
def test_unordered_map_returns_every_result(workers: int) -> None:
    tasks = [float(t) for t in range(20)]
    results = unordered_map(math.sqrt, tasks, workers, desc="test", unit="task")
    assert sorted(results) == [math.sqrt(t) for t in tasks]


def test_a_failing_task_raises_in_the_caller() -> None:
    with pytest.raises(ValueError, match="math domain error"):
        list(ordered_map(math.sqrt, [4.0, -1.0, 9.0], 2, desc="test", unit="task"))


def test_closing_early_stops_the_map() -> None:
    results = ordered_map(operator.neg, list(range(100)), 2, desc="test", unit="task")
    assert next(results) == 0
    results.close()


@needs_proc
@pytest.mark.slow
def test_a_killed_ingest_leaves_no_workers_and_the_next_run_clears_its_temporary(
    tmp_path: Path,
) -> None:
    library = write_foreign_library(
        tmp_path / "library", {"au_per_pixel": 10.0, "intensity_unit": "Jy/sr"}, systems=200
    )
    out = tmp_path / "store"
    ingest = start_protomatch("ingest", library, "-o", out, "--workers", 2)
    workers: list[int] = []
    try:
        workers = list(
            wait_for(lambda: len(children(ingest.pid)) >= 2 and children(ingest.pid), 60, "workers")
        )
        kill(ingest)
        wait_for(lambda: not any(map(is_running, workers)), 5, "the workers to exit")
    finally:
        kill(ingest)
        for pid in filter(is_running, workers):
            os.kill(pid, signal.SIGKILL)
    [stale] = tmp_path.glob(f".store.pid{ingest.pid}.*.tmp")
    ingest_library(library, out, workers=1)
    assert not stale.exists() and (out / "manifest.json").is_file()


@needs_proc
def test_watchdog_ends_a_worker_whose_parent_died() -> None:
    """The watchdog used where the kernel cannot kill orphans (not Linux) works for real."""
    script = (
        "import os, threading, time\n"
        "from protomatch._parallel import _watch_parent\n"
        "parent = os.getpid()\n"
        "if os.fork() == 0:\n"
        "    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    orphans: list[int] = []
    try:
        orphans = list(wait_for(lambda: children(parent.pid), 30, "the worker"))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        wait_for(lambda: not any(map(is_running, orphans)), 5, "the orphan to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        for pid in filter(is_running, orphans):
            os.kill(pid, signal.SIGKILL)
