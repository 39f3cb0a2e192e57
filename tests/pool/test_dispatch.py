"""Dispatch at scale: fairness, no head-of-line stall, read-ahead in bytes, a million submits.

Counted, never timed: the machine is shared and noisy (benchmarks/ measures speed).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Iterator

import corepool
import tasks


def test_an_ordered_imap_keeps_free_workers_busy_behind_a_slow_head(start_method: str) -> None:
    """The first task waits until 100 of the 200 behind it have run: with a stall they would not.

    (Not all 200: the head's worker holds one chunk queued behind it.)
    """
    counter = corepool.Counter(0)
    task = functools.partial(tasks.head_waits_for_the_rest, counter, 100)
    with corepool.Pool(2, start_method=start_method) as pool:
        results = list(pool.imap(task, range(201), chunksize=1))
    assert results[0] == "not stalled"
    assert results[1:] == ["ran"] * 200


def test_read_ahead_is_bounded_in_bytes() -> None:
    produced = 0

    def megabytes() -> Iterator[bytes]:
        nonlocal produced
        for _ in itertools.count():
            produced += 1
            yield b"x" * 1_000_000

    with corepool.Pool(2) as pool:
        results = pool.imap(len, megabytes(), read_ahead_bytes="8MiB")
        taken = [next(results) for _ in range(30)]
        ahead = produced - len(taken)
        results.close()  # type: ignore[attr-defined]
    assert taken == [1_000_000] * 30
    # 8 MiB of 1 MB items, plus the chunk being made when the bound was reached.
    assert ahead <= 8 + 8, f"{ahead} items of 1 MB were read ahead of the consumer"


def test_concurrent_calls_share_the_workers_fairly() -> None:
    """A short call started while a long one runs finishes long before it."""
    long_done = corepool.Counter(0)
    long_task = functools.partial(tasks.count_then_sleep, long_done, 0.005)
    with corepool.Pool(2) as pool:
        runner = threading.Thread(target=pool.map, args=(long_task, range(1000)), kwargs={})
        runner.start()
        while long_done.value < 20:  # the long call is under way
            threading.Event().wait(0.01)
        assert pool.map(tasks.square, range(50)) == [x * x for x in range(50)]
        at_short_end = long_done.value
        runner.join(60)
    assert at_short_end < 500, f"the long call had run {at_short_end} of 1000 tasks first"


def test_a_million_submits_all_resolve() -> None:
    with corepool.Pool(2) as pool:
        futures = [pool.submit(tasks.identity, n) for n in range(1_000_000)]
        assert sum(future.result() == n for n, future in enumerate(futures)) == 1_000_000


def test_submits_of_several_functions_from_many_threads() -> None:
    """Consecutive submits of one function travel together; alternating ones stay correct.

    Each switch of function opens a job, so the scheduler is woken again and
    again from three threads at once: a lost wake-up hangs this test.
    """
    for _ in range(3):
        with corepool.Pool(2) as pool:

            def submit_many(offset: int) -> list[tuple[int, int]]:
                futures = [
                    (n, pool.submit(tasks.square if n % 3 else tasks.identity, n))
                    for n in range(offset, offset + 2000)
                ]
                return [(n, future.result(timeout=30)) for n, future in futures]

            out: list[tuple[int, int]] = []
            offsets = (0, 10_000, 20_000)
            threads = [
                threading.Thread(target=lambda o=o, out=out: out.extend(submit_many(o)))
                for o in offsets
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(40)
        expected = [(n, n * n if n % 3 else n) for o in offsets for n in range(o, o + 2000)]
        assert sorted(out) == expected
