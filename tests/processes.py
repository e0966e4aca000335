"""Helpers for tests that run the real command line in a subprocess and kill it by its pid.

Linux only: children and process states are read from ``/proc``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

#: Skip marker for tests that need /proc.
needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")


def start_protomatch(*args: object, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``python -m protomatch ARGS...`` (it inherits PYTHONPATH), capturing its output."""
    return subprocess.Popen(
        [sys.executable, "-m", "protomatch", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_protomatch(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m protomatch ARGS...`` to the end."""
    return subprocess.run(
        [sys.executable, "-m", "protomatch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` every 10 ms until it is truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def children(pid: int) -> list[int]:
    """The pids of the live children of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def is_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL ``process`` (if still running), reap it and close its pipes.

    It is waited for, not read to the end: orphans it left could keep its pipes open.
    """
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
