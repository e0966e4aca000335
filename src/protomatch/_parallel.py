"""Run independent tasks in worker processes, with a progress bar.

Workers are started with "spawn" (safe beside torch's and OpenMP's threads) and run one
thread each: the parallelism is across processes.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

from tqdm import tqdm

Task = TypeVar("Task")
Result = TypeVar("Result")


def unordered_map(
    function: Callable[[Task], Result],
    tasks: Sequence[Task],
    workers: int,
    *,
    desc: str,
    unit: str,
) -> Iterator[Result]:
    """``function(task)`` for every task, in completion order; in-process when workers is 1.

    ``function`` must be importable (a module-level function) for the worker processes.
    """
    bar = tqdm(total=len(tasks), unit=unit, desc=desc, disable=None, file=sys.stderr)
    with bar:
        for result in _results(function, tasks, workers):
            bar.update(1)
            yield result


def _results(
    function: Callable[[Task], Result], tasks: Sequence[Task], workers: int
) -> Iterator[Result]:
    if workers == 1:
        yield from map(function, tasks)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        futures = [pool.submit(function, task) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _init_worker() -> None:
    """One thread per worker process."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
