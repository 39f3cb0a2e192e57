"""Concurrent calls on one pool while its workers crash: every result right, none lost.

Each round opens a 2-worker pool and, at once, runs two ``map`` calls (from
threads), one ``imap`` and 100 ``submit`` calls of ``fault_tasks.chaos``,
which SIGKILLs its worker, raises or calls ``os._exit`` on some items; then
checks every result and error. The rows of the fault table fail one call at a
time; this is where crashes meet each other, strides of tiny tasks, queued
chunks and retries. ``tests/stress/chaos.py`` runs the same rounds for minutes.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import corepool
import fault_tasks

ROUNDS = 3


def check(results: list[Any], *, one_call: bool = True) -> None:
    """Each slot holds what ``fault_tasks.chaos`` makes of its index.

    ``one_call``: the results come from one call, whose task indices they are
    (a ``submit`` is a call of its own, with task index 0).
    """
    for index, result in enumerate(results):
        kind = index % 97
        if kind in (3, 11):
            assert isinstance(result, corepool.WorkerDied), (index, result)
            assert result.task_index == (index if one_call else 0)
        elif kind == 5:
            assert isinstance(result, ValueError), (index, result)
        else:
            assert result == index * 2, (index, result)


def one_round(start_method: str, rng: random.Random) -> None:
    size = rng.choice([50, 200, 500])
    chunksizes = [rng.choice([None, 1, 7]) for _ in range(2)]
    with (
        corepool.Pool(2, start_method=start_method) as pool,  # type: ignore[arg-type]
        ThreadPoolExecutor(2) as threads,
    ):
        maps = [
            threads.submit(
                pool.map, fault_tasks.chaos, range(size), return_exceptions=True, chunksize=c
            )
            for c in chunksizes
        ]
        check(list(pool.imap(fault_tasks.chaos, range(size), return_exceptions=True)))
        for call in maps:
            check(call.result(timeout=60))
        futures = [pool.submit(fault_tasks.chaos, i) for i in range(100)]
        check(
            [future.exception(timeout=30) or future.result() for future in futures],
            one_call=False,
        )


@pytest.mark.timeout(120)
def test_concurrent_calls_survive_crashes(start_method: str) -> None:
    rng = random.Random(f"chaos-{start_method}")
    for _ in range(ROUNDS):
        one_round(start_method, rng)
