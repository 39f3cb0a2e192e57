"""The promises every backend keeps, checked once per backend; then what each refuses."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import corepool
import fault_tasks
import tasks

BACKENDS = ["process", "thread", "dask"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pool_of(backend: str, request: pytest.FixtureRequest) -> Callable[..., corepool.Pool]:
    """Open a pool of ``workers`` on ``backend``; on Dask, the module's cluster (2 workers)."""
    if backend != "dask":
        return lambda workers=2, **options: corepool.Pool(workers, backend=backend, **options)
    address = request.getfixturevalue("local_cluster")
    return lambda workers=2, **options: corepool.Pool(backend="dask", address=address, **options)


def test_map_starmap_and_several_iterables_keep_order(
    pool_of: Callable[..., corepool.Pool],
) -> None:
    with pool_of(2) as pool:
        assert pool.map(tasks.square, range(2000)) == [x * x for x in range(2000)]
        assert pool.map(tasks.add, [1, 2, 3], (10, 20)) == [11, 22]
        assert pool.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.map(lambda x: x + 1, iter(range(5))) == [1, 2, 3, 4, 5]


def test_imap_is_ordered_and_imap_unordered_complete(pool_of: Callable[..., corepool.Pool]) -> None:
    durations = [0.03 if i % 7 == 0 else 0.0 for i in range(40)]
    with pool_of(2) as pool:
        assert list(pool.imap(tasks.sleep_then, durations, range(40), chunksize=1)) == list(
            range(40)
        )
        assert sorted(pool.imap_unordered(tasks.square, range(300), chunksize=7)) == [
            x * x for x in range(300)
        ]


def test_submit_gives_futures(pool_of: Callable[..., corepool.Pool]) -> None:
    with pool_of(2) as pool:
        futures = [pool.submit(tasks.add, n, y=1) for n in range(50)]
        assert [f.result(timeout=10) for f in futures] == list(range(1, 51))


def test_an_error_names_the_failing_item(pool_of: Callable[..., corepool.Pool]) -> None:
    with pool_of(2) as pool:
        with pytest.raises(ValueError, match="bad item 5") as caught:
            pool.map(tasks.fail_on, range(10))
        if sys.version_info >= (3, 11):  # exception notes are new in 3.11
            assert "raised by task 5 of map(fail_on), item 5" in caught.value.__notes__
        results = pool.map(tasks.fail_on, range(8), return_exceptions=True)
        assert isinstance(results[5], ValueError)
        assert results[:5] == [0, 1, 2, 3, 4] and results[6:] == [6, 7]
        with pytest.raises(ValueError, match="bad item 5"):
            pool.submit(tasks.fail_on, 5).result(timeout=10)


def test_retries_rerun_what_retry_on_names(
    pool_of: Callable[..., corepool.Pool], tmp_path: Any
) -> None:
    with pool_of(2, retries=1, retry_on=(ConnectionError,)) as pool:
        assert pool.map(fault_tasks.flaky, [str(tmp_path)] * 10, range(10)) == list(range(10))
    with pool_of(2) as pool, pytest.raises(ConnectionError, match="first"):
        pool.map(fault_tasks.flaky, [str(tmp_path)], [99])


def test_progress_bar_on_stderr(
    pool_of: Callable[..., corepool.Pool], capsys: pytest.CaptureFixture[str]
) -> None:
    with pool_of(2) as pool:
        assert pool.map(tasks.square, range(300), progress=True) == [x * x for x in range(300)]
    err = capsys.readouterr().err
    assert "map(square)" in err and "300/300" in err


def test_imap_reads_its_input_lazily_and_stops_with_the_consumer(
    pool_of: Callable[..., corepool.Pool],
) -> None:
    pulled = itertools.count()

    def endless() -> Iterator[int]:
        for i in itertools.count():
            next(pulled)
            yield i

    with pool_of(2, read_ahead_bytes="1MiB") as pool:
        results = pool.imap(tasks.identity, endless())
        assert [next(results) for _ in range(500)] == list(range(500))
        results.close()  # type: ignore[attr-defined]
        time.sleep(0.2)
        settled = next(pulled)
        time.sleep(0.2)
        assert next(pulled) == settled + 1  # nothing more was read once closed
    assert settled < corepool.pool.READ_AHEAD_TASKS + 25_000


def test_a_call_timeout_raises_and_the_pool_goes_on(pool_of: Callable[..., corepool.Pool]) -> None:
    with pool_of(1) as pool:
        with pytest.raises(TimeoutError, match=r"map\(sleep_then\) did not finish within"):
            pool.map(tasks.sleep_then, [0.3] * 4, timeout=0.1)
        assert pool.map(tasks.square, [3]) == [9]


def test_initializer_and_shared_objects_reach_tasks(pool_of: Callable[..., corepool.Pool]) -> None:
    with pool_of(
        2,
        initializer=tasks.set_state,
        initargs=("model", "loaded"),
        shared={"table": [1, 2, 3]},
    ) as pool:
        assert pool.map(tasks.read_state, ["model"] * 6) == ["loaded"] * 6
        assert pool.map(tasks.read_state, ["table"] * 2) == [[1, 2, 3]] * 2


def test_a_failing_initializer_breaks_the_pool(pool_of: Callable[..., corepool.Pool]) -> None:
    with (
        pytest.raises(corepool.InitializerError, match="initializer"),
        pool_of(1, initializer=fault_tasks.failing_init) as pool,
    ):
        pool.map(tasks.square, range(3))


def test_unpicklable_items_fail_on_processes_and_work_on_threads() -> None:
    lock = threading.Lock()
    with (
        corepool.Pool(2) as pool,
        pytest.raises(corepool.SerializationError, match="task 1 of map"),
    ):
        pool.map(tasks.identity, [1, lock, 3])
    with corepool.Pool(2, backend="thread") as pool:
        assert pool.map(tasks.identity, [1, lock, 3]) == [1, lock, 3]


# -- threads -------------------------------------------------------------------


def test_threads_share_objects_and_each_thread_has_its_own_worker_state() -> None:
    seen: list[str] = []
    guard = threading.Lock()

    def record(x: int) -> str:
        with guard:
            seen.append(threading.current_thread().name)
        time.sleep(0.01)
        return threading.current_thread().name

    with corepool.Pool(3, backend="thread") as pool:
        assert repr(pool).startswith("<corepool.Pool workers=3 backend='thread'")
        names = pool.map(record, range(30), chunksize=1)
        assert len(set(names)) == 3 and sorted(seen) == sorted(names)
        pool.map(tasks.set_state, ["mine"] * 3, range(3), chunksize=1)
        assert "mine" not in corepool.worker_state()  # the caller's thread is not a worker


def test_threads_run_io_bound_tasks_side_by_side() -> None:
    with corepool.Pool(8, backend="thread") as pool:
        started = time.perf_counter()
        pool.map(time.sleep, [0.2] * 8, chunksize=1)
        assert time.perf_counter() - started < 1.0  # 8 sleeps at once, not one after another


def test_threads_pickle_nothing_so_identity_survives() -> None:
    values = [object() for _ in range(10)]
    with corepool.Pool(2, backend="thread") as pool:
        assert all(a is b for a, b in zip(pool.map(tasks.identity, values), values, strict=True))


class _Unrebuildable(Exception):
    """An exception that pickles but cannot be rebuilt from its args (as urllib's HTTPError)."""

    def __init__(self, url: str, code: int) -> None:
        super().__init__(f"{url}: {code}")
        self.code = code


def _raise_unrebuildable(url: str) -> None:
    raise _Unrebuildable(url, 404)


def test_a_threads_exception_is_the_very_object_raised() -> None:
    with corepool.Pool(2, backend="thread") as pool:
        with pytest.raises(_Unrebuildable, match="/missing: 404") as caught:
            pool.map(_raise_unrebuildable, ["/missing"])
        failed = pool.map(_raise_unrebuildable, ["/a"], return_exceptions=True)[0]
    assert caught.value.code == 404
    assert caught.traceback[-1].name == "_raise_unrebuildable"  # its own traceback, kept
    assert isinstance(failed, _Unrebuildable) and failed.__traceback__ is not None


def test_a_task_that_raises_system_exit_fails_alone_on_threads() -> None:
    with corepool.Pool(2, backend="thread") as pool:
        results = pool.map(tasks.sys_exit_on, range(4), return_exceptions=True)
        assert isinstance(results[2], SystemExit)
        assert pool.map(tasks.square, [4]) == [16]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"task_timeout": 5}, "task_timeout"),
        ({"max_tasks_per_worker": 10}, "max_tasks_per_worker"),
        ({"max_memory_per_worker": "1GB"}, "max_memory_per_worker"),
        ({"start_method": "spawn"}, "start_method"),
        ({"preload": ("json",)}, "preload"),
        ({"inner_threads": 1}, "inner_threads"),
    ],
)
def test_threads_refuse_what_only_a_process_can_do(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=f"backend='thread' cannot honour {named} ") as caught:
        corepool.Pool(2, backend="thread", **options)
    assert "or use backend='process'" in str(caught.value)


def test_threads_refuse_a_task_timeout_per_call() -> None:
    with corepool.Pool(2, backend="thread") as pool:
        with pytest.raises(ValueError, match="cannot honour task_timeout"):
            pool.map(tasks.square, range(3), task_timeout=1)
        assert pool.map(tasks.square, range(3)) == [0, 1, 4]


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend must be one of 'process', 'thread'"):
        corepool.Pool(2, backend="gpu")  # type: ignore[arg-type]


def test_asyncio_calls_work_on_every_backend(pool_of: Callable[..., corepool.Pool]) -> None:
    async def main(pool: corepool.Pool) -> tuple[list[int], list[int], int]:
        mapped = await pool.amap(tasks.square, range(50))
        streamed = [r async for r in pool.aimap(tasks.square, range(20))]
        one = await pool.arun(tasks.add, 2, 3)
        return mapped, streamed, one

    with pool_of(2) as pool:
        mapped, streamed, one = asyncio.run(main(pool))
    assert mapped == [x * x for x in range(50)]
    assert streamed == [x * x for x in range(20)]
    assert one == 5
