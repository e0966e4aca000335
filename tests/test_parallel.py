"""The process-pool helpers: ordered and unordered maps, in-process and in workers."""

from __future__ import annotations

import math
import operator

import pytest

from protomatch._parallel import ordered_map, unordered_map


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
