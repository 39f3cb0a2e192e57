"""The process pool with real workers, under every start method."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import subprocess
import sys
import textwrap
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import Executor, Future

import pytest

import corepool
import tasks


def test_map_squares_in_order(start_method: str) -> None:
    with corepool.Pool(2, start_method=start_method) as pool:
        assert pool.map(tasks.square, range(10_000)) == [x * x for x in range(10_000)]


def test_map_over_several_iterables_stops_at_the_shortest(start_method: str) -> None:
    with corepool.Pool(2, start_method=start_method) as pool:
        assert pool.map(tasks.add, [1, 2, 3], (10, 20)) == [11, 22]
        assert pool.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]


def test_a_range_travels_as_ranges_not_its_items() -> None:
    """``map(fn, range(n))`` sends each chunk as a range: a few bytes, whatever its size."""
    sent = {}
    for kind, numbers in (("range", range(200_000)), ("list", list(range(200_000)))):
        with corepool.Pool(2) as pool:
            assert pool.map(tasks.square, numbers) == [x * x for x in range(200_000)]
            sent[kind] = pool.stats().moved.sent_inline_bytes
    assert sent["list"] is not None and sent["range"] is not None
    assert sent["range"] * 20 < sent["list"], sent


def test_a_worker_lost_on_a_range_costs_only_its_item() -> None:
    with corepool.Pool(2) as pool:
        results = pool.map(tasks.sigkill_on, range(40), return_exceptions=True)
    assert isinstance(results[7], corepool.WorkerDied)
    assert results[:7] + results[8:] == [*range(7), *range(8, 40)]


def test_lambdas_closures_and_generators(start_method: str) -> None:
    offset = 5
    with corepool.Pool(2, start_method=start_method) as pool:
        assert pool.map(lambda x: x + offset, (i for i in range(100))) == list(range(5, 105))


def test_empty_input(start_method: str) -> None:
    with corepool.Pool(2, start_method=start_method) as pool:
        assert pool.map(tasks.square, []) == []
        assert list(pool.imap(tasks.square, iter([]))) == []


def test_unordered_map_and_imap_return_everything(start_method: str) -> None:
    with corepool.Pool(2, start_method=start_method) as pool:
        assert sorted(pool.map(tasks.square, range(500), ordered=False)) == [
            x * x for x in range(500)
        ]
        assert sorted(pool.imap_unordered(tasks.square, range(500), chunksize=7)) == [
            x * x for x in range(500)
        ]


def test_imap_is_ordered_with_uneven_durations(start_method: str) -> None:
    durations = [0.05 if i % 7 == 0 else 0.0 for i in range(40)]
    with corepool.Pool(2, start_method=start_method) as pool:
        results = list(pool.imap(tasks.sleep_then, durations, range(40), chunksize=1))
    assert results == list(range(40))


def test_imap_over_an_endless_generator_stays_bounded() -> None:
    pulled = itertools.count()

    def endless() -> Iterator[int]:
        for i in itertools.count():
            next(pulled)
            yield i

    with corepool.Pool(2) as pool:
        results = pool.imap(tasks.square, endless())
        first = [next(results) for _ in range(2000)]
        assert first == [x * x for x in range(2000)]
        results.close()
        ahead = next(pulled) - 2000
    # Chunks grow to ~20 ms of work; the bound is a few chunks per worker.
    assert ahead < 2_000_000


def test_imap_stops_pulling_when_the_consumer_does() -> None:
    pulled: list[int] = []

    def source() -> Iterator[int]:
        for i in range(1_000_000):
            pulled.append(i)
            yield i

    with corepool.Pool(2) as pool:
        results = pool.imap(tasks.identity, source(), chunksize=10)
        assert next(results) == 0
        settled = -1
        while settled != len(pulled):  # wait until the scheduler stops reading
            settled = len(pulled)
            time.sleep(0.2)
        # At most the read-ahead cap, plus the chunk being made when it was reached.
        assert settled <= corepool.pool.READ_AHEAD_TASKS + 25_000
        results.close()  # type: ignore[attr-defined]


def test_input_iterable_error_reaches_map() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    with corepool.Pool(2) as pool, pytest.raises(OSError, match="disk gone"):
        pool.map(tasks.square, broken())


def test_submit_returns_futures_and_pool_is_an_executor(start_method: str) -> None:
    with corepool.Pool(2, start_method=start_method) as pool:
        assert isinstance(pool, Executor)
        futures = [pool.submit(tasks.add, i, y=1) for i in range(20)]
        assert all(isinstance(f, Future) for f in futures)
        assert [f.result(timeout=10) for f in futures] == list(range(1, 21))
        failed = pool.submit(tasks.fail_on, 5)
        with pytest.raises(ValueError, match="bad item 5"):
            failed.result(timeout=10)


def test_run_in_executor() -> None:
    async def main(pool: corepool.Pool) -> list[int]:
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(*(loop.run_in_executor(pool, tasks.square, i) for i in range(5)))
        )

    with corepool.Pool(2) as pool:
        assert asyncio.run(main(pool)) == [0, 1, 4, 9, 16]


def test_initializer_state_reaches_tasks(start_method: str) -> None:
    with corepool.Pool(
        2, start_method=start_method, initializer=tasks.set_state, initargs=("model", "loaded")
    ) as pool:
        assert pool.map(tasks.read_state, ["model"] * 20) == ["loaded"] * 20
    assert corepool.worker_state().get("model") is None  # the parent's own dict


def test_max_tasks_per_worker_recycles_workers(start_method: str) -> None:
    with corepool.Pool(1, start_method=start_method, max_tasks_per_worker=3) as pool:
        pids = pool.map(tasks.pid_of, range(9))
    assert len(set(pids)) == 3
    assert pids == sorted(pids, key=pids.index)  # each worker ran a contiguous run
    assert all(pids.count(pid) == 3 for pid in set(pids))


def test_function_is_sent_once_per_worker_per_job() -> None:
    counter = tasks.UnpickleCounter()
    with corepool.Pool(2) as pool:
        loads = pool.map(counter, range(2000), chunksize=10)
    # 200 chunks, but each worker unpickled the function once: the call returns
    # how many times this worker has unpickled it so far.
    assert set(loads) == {1}


def test_explicit_chunksize_is_honoured() -> None:
    with corepool.Pool(2) as pool:
        pairs = pool.map(tasks.pid_of, range(100), chunksize=25)
    runs = [len(list(group)) for _, group in itertools.groupby(pairs)]
    assert all(run % 25 == 0 for run in runs)


def test_progress_bar_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with corepool.Pool(2) as pool:
        assert pool.map(tasks.square, range(300), progress=True) == [x * x for x in range(300)]
    err = capsys.readouterr().err
    assert "map(square)" in err and "300/300" in err


def test_timeout_cancels_the_call() -> None:
    with corepool.Pool(1) as pool:
        with pytest.raises(TimeoutError, match=r"map\(sleep_then\) did not finish within"):
            pool.map(tasks.sleep_then, [0.5] * 4, timeout=0.2)
        assert pool.map(tasks.square, [3]) == [9]


def test_one_shot_map() -> None:
    assert corepool.map(tasks.square, range(100), workers=2) == [x * x for x in range(100)]
    assert corepool.map(tasks.add, [1], [2]) == [3]


def test_close_waits_for_pending_work(start_method: str) -> None:
    pool = corepool.Pool(2, start_method=start_method)
    futures = [pool.submit(tasks.sleep_then, 0.05, i) for i in range(6)]
    pool.close()
    pool.join()
    assert [f.result(timeout=0) for f in futures] == list(range(6))
    assert "closed" in repr(pool)


def test_terminate_fails_pending_work() -> None:
    pool = corepool.Pool(1)
    future = pool.submit(tasks.sleep_then, 30, 1)
    pool.terminate()
    pool.join()
    with pytest.raises(corepool.PoolClosed, match="terminated"):
        future.result(timeout=5)


def test_a_closed_pool_finishes_its_work_even_when_dropped() -> None:
    pool = corepool.Pool(1, initializer=tasks.set_state, initargs=("k", 1))  # no parking
    futures = [pool.submit(tasks.sleep_then, 0.05, i) for i in range(4)]
    pool.close()
    del pool
    assert [f.result(timeout=10) for f in futures] == [0, 1, 2, 3]


def test_a_dropped_pool_stops_its_workers() -> None:
    pool = corepool.Pool(2)
    assert pool.map(tasks.square, [2]) == [4]
    del pool  # the finalizer terminates; the leak fixture checks that nothing is left


def test_workers_are_the_pool_size(start_method: str) -> None:
    with corepool.Pool(3, start_method=start_method) as pool:
        pids = set(pool.map(tasks.sleep_then, [0.05] * 30, [os.getpid()] * 30, chunksize=1))
        worker_pids = set(pool.map(tasks.pid_of, range(60), chunksize=1))
        assert pids == {os.getpid()}
        assert 1 <= len(worker_pids) <= 3
        assert pool.workers == 3
        assert f"start_method={start_method!r}" in repr(pool)


@pytest.mark.parametrize("how", ["script", "-c", "stdin"])
def test_no_main_guard_needed(start_method: str, how: str, tmp_path: object) -> None:
    """Workers never import __main__: top-level code runs once, in the parent.

    Functions defined there travel by value, with the globals they use (a
    constant, a compiled regex).
    """
    code = textwrap.dedent(
        f"""
        import re
        import corepool
        print("top level ran")
        NUMBER = re.compile(r"[0-9]+")
        SCALE = 2
        def double(x):
            return SCALE * x
        def numbers(text):
            return NUMBER.findall(text)
        with corepool.Pool(2, start_method={start_method!r}) as pool:
            print(pool.map(double, range(5)), pool.map(lambda x: x + 1, [1]))
            print(pool.map(numbers, ["a1b22", "c333"]))
        """
    )
    if how == "script":
        script = os.path.join(str(tmp_path), "script.py")
        with open(script, "w") as handle:
            handle.write(code)
        args, stdin = [sys.executable, script], None
    elif how == "-c":
        args, stdin = [sys.executable, "-c", code], None
    else:
        args, stdin = [sys.executable, "-"], code
    done = subprocess.run(
        args, check=False, input=stdin, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "top level ran",
        "[0, 2, 4, 6, 8] [2]",
        "[['1', '22'], ['333']]",
    ]


def test_calls_from_several_threads_share_the_pool() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with corepool.Pool(2) as pool, ThreadPoolExecutor(4) as threads:
        calls = [threads.submit(pool.map, tasks.add, range(500), [k] * 500) for k in range(8)]
        for k, call in enumerate(calls):
            assert call.result(timeout=30) == [i + k for i in range(500)]


def test_large_items_and_results_both_ways() -> None:
    blobs = [bytes([i]) * 3_000_000 for i in range(6)]  # 18 MB in, 18 MB out
    with corepool.Pool(2) as pool:
        assert pool.map(tasks.identity, blobs, chunksize=3) == blobs


def test_a_fork_in_another_thread_cannot_hang_worker_start() -> None:
    """A multiprocessing fork pool opened while corepool starts its workers.

    The fork copies whatever descriptors the scheduler thread holds at that
    moment; starting a process must not wait on any of them.
    """
    code = textwrap.dedent(
        """
        import multiprocessing, corepool
        for _ in range(5):
            with corepool.Pool(2, start_method="spawn") as pool:
                with multiprocessing.get_context("fork").Pool(2) as mp_pool:
                    assert mp_pool.map(abs, [-1]) == [1]
                    assert pool.map(abs, [-2, -3]) == [2, 3]
        with corepool.Pool(2) as pool, multiprocessing.get_context("fork").Pool(2) as mp_pool:
            assert pool.map(abs, [-4]) == [4] and mp_pool.map(abs, [-5]) == [5]
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_stopped_pool_never_writes_to_descriptors_it_closed() -> None:
    """Its wakeup pipe's numbers get reused; a late terminate() must not write there.

    (A dropped pool's finalizer once wrote a byte into a ProcessPoolExecutor's
    wakeup pipe that had reused the number, and that executor hung.)
    """
    import gc
    import select

    pool = corepool.Pool(1)
    closed_fd = pool._scheduler._wakeup._write_fd
    pool.close()
    pool.join()
    pipes = []
    for _ in range(64):
        pipes.append(os.pipe())
        if closed_fd in pipes[-1]:
            break
    try:
        assert any(closed_fd in pipe for pipe in pipes)
        pool.terminate()
        pool.close()
        del pool
        gc.collect()
        readable, _, _ = select.select([r for r, _ in pipes], [], [], 0.1)
        assert readable == []
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_a_calls_inputs_are_let_go_once_it_returns() -> None:
    box = tasks.Box(1)
    alive = weakref.ref(box)
    with corepool.Pool(1) as pool:
        assert [b.value for b in pool.map(tasks.identity, [box])] == [1]
        del box
        gc.collect()
        assert alive() is None, "the pool still holds the input of a finished call"


def test_retiring_workers_while_closing_is_no_failure(start_method: str) -> None:
    """max_tasks_per_worker=1: every task retires its worker, close() comes meanwhile."""
    for _ in range(3):
        pool = corepool.Pool(3, max_tasks_per_worker=1, start_method=start_method)
        futures = [pool.submit(tasks.sleep_then, 0.05, n) for n in range(6)]
        pool.close()
        pool.join(30)
        assert [future.result(timeout=0) for future in futures] == list(range(6))
