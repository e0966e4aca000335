"""Run independent tasks in worker processes, with a progress bar.

One start method for every pool: "fork" on Linux (as torch's DataLoader), the platform's
default elsewhere. Forked workers start in milliseconds and need no ``if __name__ ==
"__main__":`` guard in the calling script; they stay safe beside torch because each worker
runs one thread (torch, OpenMP and BLAS are limited to one, so no thread pool inherited
from the parent is ever entered) and opens its own HDF5 files. Measured on 2 cores, spawned
workers cost about 2.3 s per pool (importing torch), which made a demo-sized ingest slower
with two workers than with one. In-process runs (``workers == 1``) also run torch with one
thread, since the small per-task tensors gain nothing from threads and lose to their
hand-off.

Workers die with their parent: on Linux the kernel kills each worker when the process that
started it dies (``PR_SET_PDEATHSIG``), elsewhere a watchdog thread in the worker notices
that its parent is gone; so a parent killed with SIGKILL leaves no orphans busy or holding
memory.

:func:`unordered_map` yields results as tasks finish; :func:`ordered_map` yields them in
task order with a bounded backlog, so a parent can stream them to disk in order.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import TypeVar

from tqdm import tqdm

Task = TypeVar("Task")
Result = TypeVar("Result")

#: Tasks in flight per worker in :func:`ordered_map`.
_BACKLOG_PER_WORKER = 4
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: Linux prctl option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
#: Seconds between the watchdog's checks that the parent is alive (non-Linux).
_WATCHDOG_INTERVAL = 0.5


def unordered_map(
    function: Callable[[Task], Result],
    tasks: Sequence[Task],
    workers: int,
    *,
    desc: str,
    unit: str,
) -> Generator[Result, None, None]:
    """``function(task)`` for every task, in completion order.

    Parameters
    ----------
    function
        A picklable callable (module-level function or ``functools.partial`` of one).
    tasks
        Picklable task arguments.
    workers
        Worker processes; 1 runs in this process.
    desc, unit
        Label and unit of the progress bar (shown on stderr when it is a terminal).

    Returns
    -------
    Generator
        One result per task, in the order the tasks finish; closing it cancels the tasks
        not yet started.
    """
    results = _in_process(function, tasks) if workers <= 1 else _unordered(function, tasks, workers)
    return _progress(results, len(tasks), desc, unit)


def ordered_map(
    function: Callable[[Task], Result],
    tasks: Sequence[Task],
    workers: int,
    *,
    desc: str,
    unit: str,
) -> Generator[Result, None, None]:
    """``function(task)`` for every task, in task order, with a bounded backlog.

    At most ``4 * workers`` tasks are in flight, so memory stays bounded however many
    tasks there are. Closing the iterator early cancels the tasks not yet started.

    Parameters
    ----------
    function
        A picklable callable (module-level function or ``functools.partial`` of one).
    tasks
        Picklable task arguments.
    workers
        Worker processes; 1 runs in this process.
    desc, unit
        Label and unit of the progress bar (shown on stderr when it is a terminal).

    Returns
    -------
    Generator
        One result per task, in the order of ``tasks``.
    """
    results = _in_process(function, tasks) if workers <= 1 else _ordered(function, tasks, workers)
    return _progress(results, len(tasks), desc, unit)


def _progress(
    results: Generator[Result, None, None], total: int, desc: str, unit: str
) -> Generator[Result, None, None]:
    """Pass ``results`` through, counting them on a progress bar; closing closes both."""
    bar = tqdm(total=total, unit=unit, desc=desc, disable=None, file=sys.stderr)
    with bar, contextlib.closing(results):
        for result in results:
            bar.update(1)
            yield result


def _in_process(
    function: Callable[[Task], Result], tasks: Iterable[Task]
) -> Generator[Result, None, None]:
    with _torch_threads(1):
        yield from map(function, tasks)


def _pool(workers: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),)
    )


def _unordered(
    function: Callable[[Task], Result], tasks: Sequence[Task], workers: int
) -> Generator[Result, None, None]:
    with _pool(workers) as pool:
        futures = [pool.submit(function, task) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _ordered(
    function: Callable[[Task], Result], tasks: Iterable[Task], workers: int
) -> Generator[Result, None, None]:
    pool = _pool(workers)
    pending: deque[Future[Result]] = deque()
    remaining = iter(tasks)
    try:
        for task in remaining:
            pending.append(pool.submit(function, task))
            if len(pending) >= _BACKLOG_PER_WORKER * workers:
                break
        while pending:
            result = pending.popleft().result()
            for task in remaining:
                pending.append(pool.submit(function, task))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(parent: int) -> None:
    """Make the worker die with ``parent``; run it with one thread.

    The thread limits are set before torch or numpy start their pools.
    """
    _die_with_parent(parent)
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _die_with_parent(parent: int) -> None:
    """End this process as soon as ``parent`` (the pid that started it) is gone.

    Linux: ask the kernel for SIGKILL when the parent dies, then check the parent did not
    die before the request. Elsewhere (or if prctl is unavailable): a daemon thread that
    polls the parent pid every :data:`_WATCHDOG_INTERVAL` seconds.
    """
    if not (sys.platform.startswith("linux") and _request_death_signal()):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)


def _request_death_signal() -> bool:
    """Ask Linux to send SIGKILL to this process when its parent dies; True if granted."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    """Exit the process once its parent is no longer ``parent`` (it died; we were adopted)."""
    while os.getppid() == parent:
        time.sleep(_WATCHDOG_INTERVAL)
    os._exit(1)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run torch (if loaded) with ``count`` intra-op threads inside the block."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
