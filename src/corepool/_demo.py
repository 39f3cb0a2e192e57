"""The demo's workloads: the seed's square map and a CPU-bound prime count.

Each workload runs serially, on ``multiprocessing.Pool`` and on corepool, and
the timings come back as rows for ``cli.py`` to print. Uses only corepool's
public API.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import corepool

__all__ = ["Timing", "Workload", "count_primes", "run_workload", "square", "workloads"]


def square(x: int) -> int:
    """The seed's first example."""
    return x * x


def count_primes(bounds: tuple[int, int]) -> int:
    """Count the primes in ``[low, high)`` by trial division: pure-Python CPU work."""
    low, high = bounds
    count = 0
    for n in range(max(low, 2), high):
        if n % 2 == 0:
            count += n == 2
            continue
        for divisor in range(3, math.isqrt(n) + 1, 2):
            if n % divisor == 0:
                break
        else:
            count += 1
    return count


@dataclass(frozen=True)
class Workload:
    """One demo workload: a function and its inputs."""

    title: str
    fn: Callable[[Any], Any]
    items: Sequence[Any]
    mp_chunksize: int | None  # what a tutorial would pass to multiprocessing.Pool.map


@dataclass(frozen=True)
class Timing:
    """How long one way of running a workload took."""

    workload: str
    runner: str
    seconds: float


def workloads(scale: float = 1.0) -> list[Workload]:
    """The seed's square map over a million numbers, and primes counted in ranges."""
    squares = int(1_000_000 * scale)
    top = int(1_500_000 * scale)
    step = 10_000
    ranges = [(low, min(low + step, top)) for low in range(0, top, step)]
    return [
        Workload(f"square {squares:,} numbers", square, list(range(squares)), None),
        Workload(f"count primes below {top:,}", count_primes, ranges, 1),
    ]


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run_workload(work: Workload, workers: int, progress: bool) -> list[Timing]:
    """Run ``work`` serially, on multiprocessing.Pool and on corepool; check they agree."""
    serial_s, expected = _timed(lambda: [work.fn(item) for item in work.items])
    with multiprocessing.Pool(workers) as mp_pool:
        mp_s, mp_result = _timed(lambda: mp_pool.map(work.fn, work.items, work.mp_chunksize))
    with corepool.Pool(workers) as pool:
        pool.map(square, range(workers))  # the workers are up, as they are for mp_pool
        if progress:
            importlib.import_module("tqdm")  # the bar's import (60 ms) is not the pool's time
        ours_s, ours = _timed(lambda: pool.map(work.fn, work.items, progress=progress))
    if not expected == mp_result == ours:
        raise AssertionError(f"{work.title}: the three runs disagree")
    return [
        Timing(work.title, "serial loop", serial_s),
        Timing(work.title, "multiprocessing.Pool", mp_s),
        Timing(work.title, "corepool.Pool", ours_s),
    ]
