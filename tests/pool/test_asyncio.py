"""asyncio on the native Pool: amap, aimap, aimap_unordered and arun, with real workers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psutil
import pytest

import corepool
import tasks

# Long enough that a task still running when its test ends was not stopped.
LONG_S = 30.0


async def _until_gone(pids: set[int], within: float = 5.0) -> bool:
    """Whether the processes ``pids`` end (or are zombies) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(_is_gone(pid) for pid in pids):
            return True
        await asyncio.sleep(0.02)
    return False


def _is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- the same results and errors as the synchronous calls ----------------------------


def test_amap_returns_what_map_returns(start_method: str) -> None:
    async def main(pool: corepool.Pool) -> tuple[Any, ...]:
        return (
            await pool.amap(tasks.square, range(1000)),
            await pool.amap(tasks.square, range(1000), ordered=False),
            await pool.amap(tasks.add, [1, 2, 3], (10, 20)),
            await pool.amap(tasks.fail_on, range(10), return_exceptions=True, chunksize=3),
            await pool.amap(tasks.square, []),
        )

    with corepool.Pool(2, start_method=start_method) as pool:
        ordered, unordered, pairs, mixed, empty = asyncio.run(main(pool))
        assert ordered == pool.map(tasks.square, range(1000)) == sorted(unordered)
        assert pairs == [11, 22]
        expected = pool.map(tasks.fail_on, range(10), return_exceptions=True, chunksize=3)
        assert [repr(value) for value in mixed] == [repr(value) for value in expected]
        assert empty == []


def test_amap_raises_the_error_of_map_naming_the_item() -> None:
    with corepool.Pool(2) as pool:
        with pytest.raises(ValueError, match="bad item 5") as sync:
            pool.map(tasks.fail_on, range(10))
        with pytest.raises(ValueError, match="bad item 5") as awaited:
            asyncio.run(pool.amap(tasks.fail_on, range(10)))
    assert isinstance(awaited.value.__cause__, corepool.RemoteTraceback)
    sync_notes = getattr(sync.value, "__notes__", [])
    assert getattr(awaited.value, "__notes__", []) == [
        note.replace("of map(", "of amap(") for note in sync_notes
    ]
    if sys.version_info >= (3, 11):
        assert awaited.value.__notes__ == ["raised by task 5 of amap(fail_on), item 5"]


def test_aimap_yields_what_imap_yields(start_method: str) -> None:
    durations = [0.05 if i % 7 == 0 else 0.0 for i in range(40)]

    async def main(pool: corepool.Pool) -> tuple[list[Any], list[Any], list[Any]]:
        ordered = [x async for x in pool.aimap(tasks.sleep_then, durations, range(40), chunksize=1)]
        unordered = [x async for x in pool.aimap_unordered(tasks.square, range(500), chunksize=7)]
        before_error: list[Any] = []
        with pytest.raises(ValueError, match="bad item 5"):
            async for x in pool.aimap(tasks.fail_on, range(10), chunksize=1):
                before_error.append(x)
        return ordered, unordered, before_error

    with corepool.Pool(2, start_method=start_method) as pool:
        ordered, unordered, before_error = asyncio.run(main(pool))
    assert ordered == list(range(40))
    assert sorted(unordered) == [x * x for x in range(500)]
    assert before_error == [0, 1, 2, 3, 4]


def test_timeouts_of_the_call_are_those_of_map_and_imap() -> None:
    async def main(pool: corepool.Pool) -> list[Any]:
        with pytest.raises(TimeoutError, match=r"amap\(sleep_then\) did not finish within"):
            await pool.amap(tasks.sleep_then, [1.0], timeout=0.2)
        got = []
        with pytest.raises(TimeoutError, match=r"aimap\(sleep_then\) did not finish within"):
            async for x in pool.aimap(tasks.sleep_then, [0.0, 1.0], ["1st", "2nd"], timeout=0.5):
                got.append(x)
        return got

    with corepool.Pool(2) as pool:
        assert asyncio.run(main(pool)) == ["1st"]


def test_an_async_iterable_input_is_refused_with_advice() -> None:
    async def source() -> AsyncIterator[int]:
        yield 1

    async def main(pool: corepool.Pool) -> None:
        with pytest.raises(TypeError, match=r"aimap\(\) takes plain iterables.*Collect it first"):
            async for _ in pool.aimap(tasks.square, source()):
                pass
        with pytest.raises(TypeError, match=r"amap\(\) takes plain iterables"):
            await pool.amap(tasks.square, [1], source())
        assert await pool.amap(tasks.square, [3]) == [9]

    with corepool.Pool(1) as pool:
        asyncio.run(main(pool))


# -- laziness ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["aimap", "aimap_unordered"])
def test_aimap_stops_reading_its_input_when_the_consumer_stops(method: str) -> None:
    pulled = 0

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        for _ in itertools.count():
            pulled += 1
            yield bytes(1000)  # ~2 KB per task ahead (input + result): 256 KiB hold ~130

    async def settled() -> int:
        """How many items were read, once no more have been for 0.3 s (within 10 s)."""
        deadline = time.monotonic() + 10
        before = -1
        while pulled != before and time.monotonic() < deadline:
            before = pulled
            await asyncio.sleep(0.3)
        return pulled

    async def main(pool: corepool.Pool) -> tuple[int, int, list[int]]:
        results = getattr(pool, method)(tasks.identity, endless(), read_ahead_bytes="256KiB")
        async with contextlib.aclosing(results):
            async for taken, _ in aiter_enumerate(results):
                if taken == 20:
                    break
            idle = await settled()  # the consumer idles: reading stops at the bound
        await asyncio.sleep(0.3)  # closed: the input is dropped
        return idle, pulled, await pool.amap(tasks.square, range(5))

    with corepool.Pool(2) as pool:
        idle, closed, after = asyncio.run(main(pool))
    assert 20 < idle < 2000, f"{idle} items read for 21 taken"
    assert closed == idle
    assert after == [0, 1, 4, 9, 16]


async def aiter_enumerate(results: AsyncIterator[Any]) -> AsyncIterator[tuple[int, Any]]:
    taken = 0
    async for value in results:
        yield taken, value
        taken += 1


# -- cancellation stops the work ----------------------------------------------------------


def test_cancelling_arun_kills_the_running_task(start_method: str) -> None:
    queue = corepool.Queue()

    async def main(pool: corepool.Pool) -> tuple[int, int, int, float]:
        before = await pool.arun(os.getpid)
        running = asyncio.create_task(pool.arun(tasks.report_pid_then_sleep, queue, LONG_S, 0))
        await asyncio.sleep(0)  # the call is submitted
        ran_in = queue.get(timeout=10)  # and it runs
        started = time.monotonic()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert await _until_gone({ran_in}), f"worker {ran_in} still runs the cancelled task"
        after = await pool.arun(os.getpid)
        return before, ran_in, after, time.monotonic() - started

    with corepool.Pool(1, start_method=start_method) as pool:
        before, ran_in, after, took = asyncio.run(main(pool))
    assert before == ran_in != after
    assert took < 5.0


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="asyncio.timeout is new in 3.11; test_wait_for_around_arun covers 3.10",
)
def test_asyncio_timeout_around_arun_is_a_per_task_time_limit() -> None:
    async def main(pool: corepool.Pool) -> tuple[float, int, int, int]:
        before = await pool.arun(os.getpid)  # the worker is ready: the task starts at once
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await pool.arun(tasks.sleep_then, LONG_S)
        took = time.monotonic() - started
        return took, await pool.arun(tasks.square, 3), before, await pool.arun(os.getpid)

    with corepool.Pool(1) as pool:
        took, nine, before, after = asyncio.run(main(pool))
    assert took < 2.5
    assert nine == 9
    assert before != after  # the worker running the task was replaced


def test_wait_for_around_arun() -> None:
    async def main(pool: corepool.Pool) -> tuple[float, int]:
        await pool.arun(tasks.square, 0)
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pool.arun(tasks.sleep_then, LONG_S), 0.5)
        return time.monotonic() - started, await pool.arun(tasks.square, 4)

    with corepool.Pool(1) as pool:
        took, sixteen = asyncio.run(main(pool))
    assert took < 2.5
    assert sixteen == 16


def test_cancelling_amap_drops_pending_tasks_and_stops_running_ones() -> None:
    queue = corepool.Queue()
    report = functools.partial(tasks.report_pid_then_sleep, queue, LONG_S)

    async def main(pool: corepool.Pool) -> list[int]:
        call = asyncio.create_task(pool.amap(report, range(100)))
        await asyncio.sleep(0)  # the call has started
        running = {queue.get(timeout=10) for _ in range(2)}  # one task per worker
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert len(running) == 2
        gone = await _until_gone(running)
        assert gone, "the workers running the cancelled call's tasks were not stopped"
        await asyncio.sleep(0.3)  # time for another task of the call to start, were one to
        return await pool.amap(tasks.square, range(4))

    with corepool.Pool(2) as pool:
        after = asyncio.run(main(pool))
    assert queue.empty(), "a task of the cancelled call started after the cancellation"
    assert after == [0, 1, 4, 9]


def test_leaving_aimap_early_stops_its_running_tasks() -> None:
    queue = corepool.Queue()
    report = functools.partial(tasks.report_pid_then_sleep, queue)
    seconds = [0.0] + [LONG_S] * 50  # the first result comes at once; the rest run long

    async def consume(results: AsyncIterator[Any]) -> None:
        async for _ in results:
            pass

    async def main(pool: corepool.Pool) -> list[int]:
        # aclose() after the first result.
        results = pool.aimap(report, seconds, range(51))
        assert await results.__anext__() == 0
        running = {queue.get(timeout=10) for _ in range(3)}  # task 0, then one per worker
        await results.aclose()
        assert await _until_gone(running), "aclose() left the call's tasks running"
        # Cancelling the task that iterates.
        results = pool.aimap_unordered(report, seconds[1:], range(50))
        consumer = asyncio.create_task(consume(results))
        await asyncio.sleep(0)
        running = {queue.get(timeout=10) for _ in range(2)}
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert await _until_gone(running), "cancelling the consumer left the tasks running"
        return await pool.amap(tasks.square, range(3))

    with corepool.Pool(2) as pool:
        assert asyncio.run(main(pool)) == [0, 1, 4]


# -- no thread per call -------------------------------------------------------------------


def test_a_thousand_concurrent_aruns_make_no_thread() -> None:
    async def main(pool: corepool.Pool) -> tuple[int, int, int, list[int]]:
        await pool.arun(tasks.square, 0)  # the pool's own threads are up
        threads = threading.active_count()
        calls = [asyncio.create_task(pool.arun(tasks.square, n)) for n in range(1000)]
        await asyncio.sleep(0)  # every call submitted; most wait
        during = threading.active_count()
        results = await asyncio.gather(*calls)
        return threads, during, threading.active_count(), results

    with corepool.Pool(2) as pool:
        threads, during, after, results = asyncio.run(main(pool))
    assert results == [n * n for n in range(1000)]
    assert threads == during == after
