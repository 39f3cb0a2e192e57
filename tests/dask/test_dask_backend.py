"""Pool(backend="dask") on real clusters: a LocalCluster of processes, and a scheduler
plus two workers started from Dask's command line, as a user deploys them.

Both clusters are module-scoped: their processes are exempt from the
per-test leak check (tests/conftest.py: CLUSTERS), and each fixture checks
that every one of them is gone when it stops its cluster.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

import corepool  # noqa: E402
from conftest import CLUSTER_START_S, CLUSTERS, stop_cluster  # noqa: E402
from corepool import WorkerDied  # noqa: E402
from corepool._backends.base import WorkerLost  # noqa: E402
from tasks import add, fail_on, read_state, sigkill_on, sleep_then, square  # noqa: E402

TESTS = Path(__file__).resolve().parent.parent
DASK = Path(sys.executable).with_name("dask")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cli_cluster() -> Iterator[str]:
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    port = address.rsplit(":", 1)[1]
    common = ["--no-dashboard"]
    processes = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", port, *common], **quiet
        )
    ]
    processes += [
        subprocess.Popen(
            [DASK, "worker", address, "--nthreads", "1", "--memory-limit", "0", *common],
            **quiet,
        )
        for _ in range(2)
    ]
    CLUSTERS["cli"] = lambda: {p.pid for p in processes}

    def stop() -> None:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(20)

    try:
        with distributed.Client(address, timeout=CLUSTER_START_S) as client:
            client.wait_for_workers(2, timeout=CLUSTER_START_S)
    except BaseException:
        stop_cluster("cli", stop)
        raise
    yield address
    stop_cluster("cli", stop)


@pytest.fixture(scope="module", params=["local", "cli"])
def address(request: pytest.FixtureRequest) -> str:
    """Each cluster in turn (module-scoped: started before a test's leak check looks)."""
    return str(request.getfixturevalue(f"{request.param}_cluster"))


pytestmark = pytest.mark.timeout(CLUSTER_START_S + 30)


# -- the calls ---------------------------------------------------------------------


def test_calls_give_the_serial_results(address: str) -> None:
    items = list(range(200))
    with corepool.Pool(backend="dask", address=address) as pool:
        assert pool.workers == 2
        assert pool.map(square, items) == [square(x) for x in items]
        assert list(pool.imap(square, items)) == [square(x) for x in items]
        assert sorted(pool.imap_unordered(square, items)) == sorted(square(x) for x in items)
        assert pool.starmap(add, [(x, 1) for x in items]) == [x + 1 for x in items]
        assert pool.submit(add, 2, y=3).result(timeout=30) == 5
        assert pool.map(square, [], progress=True) == []
        assert pool.map(square, range(50), progress=True) == [x * x for x in range(50)]


def test_a_task_error_keeps_its_type_traceback_and_note(local_cluster: str) -> None:
    with corepool.Pool(backend="dask", address=local_cluster) as pool:
        with pytest.raises(ValueError, match="bad item 5") as info:
            pool.map(fail_on, range(10))
        results = pool.map(fail_on, range(10), return_exceptions=True)
    assert isinstance(info.value.__cause__, corepool.RemoteTraceback)
    assert "in fail_on" in str(info.value.__cause__)
    if sys.version_info >= (3, 11):
        assert "raised by task 5 of map(fail_on), item 5" in info.value.__notes__
    assert isinstance(results[5], ValueError)
    assert results[:5] + results[6:] == [0, 1, 2, 3, 4, 6, 7, 8, 9]


# -- input, state, stopping ----------------------------------------------------------


def test_an_endless_input_is_read_lazily(local_cluster: str) -> None:
    pulled = itertools.count()

    def endless() -> Iterator[int]:
        while True:
            yield next(pulled)

    with corepool.Pool(backend="dask", address=local_cluster) as pool:
        results = pool.imap(square, endless(), read_ahead_bytes="64KiB")
        first = [next(results) for _ in range(500)]
        time.sleep(0.5)  # give the scheduler every chance to read on
        read = next(pulled)
        results.close()
    assert first == [x * x for x in range(500)]
    assert read < 20_000, f"the input was read {read} items far for 500 results"


def test_closing_the_pool_interrupts_a_call(local_cluster: str) -> None:
    pool = corepool.Pool(backend="dask", address=local_cluster)
    results = pool.imap(sleep_then, [0.2] * 100, chunksize=1)
    assert next(results) is None
    pool.terminate()
    with pytest.raises(corepool.PoolClosed, match="terminated"):
        list(results)
    pool.join(30)


def test_shared_objects_reach_tasks_through_worker_state(local_cluster: str) -> None:
    table = {"answer": 42}
    with corepool.Pool(backend="dask", address=local_cluster, shared={"table": table}) as pool:
        assert pool.map(read_state, ["table"] * 20) == [table] * 20


def test_big_arrays_are_sent_once_per_call(local_cluster: str) -> None:
    numpy = pytest.importorskip("numpy")
    big = numpy.zeros(1_000_000, dtype=numpy.float64)  # 8 MB
    with corepool.Pool(backend="dask", address=local_cluster) as pool:
        counts = pool.starmap(_count_in_place, [(big, i) for i in range(40)], chunksize=1)
    # Sent with each task, every task would see a fresh zero; sent once, the
    # tasks on one worker count up on the same copy.
    assert max(counts) > 1
    assert big[0] == 0  # the caller's array is not the workers'


def _count_in_place(array: Any, _: int) -> float:
    array[0] += 1
    return float(array[0])


# -- worker deaths -------------------------------------------------------------------


def test_a_task_that_kills_its_worker_gets_worker_died(address: str) -> None:
    with corepool.Pool(backend="dask", address=address) as pool:
        results = pool.map(sigkill_on, range(30), chunksize=10, return_exceptions=True)
        after = pool.map(square, range(10))
    died = results[7]
    assert isinstance(died, WorkerDied), results
    assert died.task_index == 7
    assert "in task 7 of map(sigkill_on)" in str(died)
    assert results[:7] + results[8:] == [x for x in range(30) if x != 7]
    assert after == [x * x for x in range(10)]


def test_retries_say_how_many_attempts(local_cluster: str) -> None:
    pool = corepool.Pool(backend="dask", address=local_cluster, retries=1)
    with pool, pytest.raises(WorkerDied, match="The task was tried 2 times") as info:
        pool.map(sigkill_on, [7])
    assert info.value.attempts == 2


@pytest.mark.timeout(CLUSTER_START_S + 60)
def test_without_an_address_a_local_cluster_lives_with_the_pool() -> None:
    with corepool.Pool(backend="dask", workers=1) as pool:
        assert "backend='dask'" in repr(pool)
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
    # The leak check (tests/conftest.py) fails this test if any worker is left.


# -- errors, refusals, imports -------------------------------------------------------


def test_every_dask_error_has_a_mapping() -> None:
    from corepool._backends import dask as dask_backend

    # Not errors a client sees: internal signals of Dask's own code.
    internal = {"AllExit", "Reschedule"}
    modules = [
        distributed.client,
        distributed.core,
        distributed.comm.core,
        distributed.exceptions,
        distributed.scheduler,
    ]
    found = {
        obj
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseException)
        and obj.__module__.startswith("distributed")
        and obj.__module__ == module.__name__
        and obj.__name__ not in internal
    }
    unmapped = sorted(
        cls.__name__ for cls in found if dask_backend.dask_outcome(cls.__new__(cls)) is None
    )
    assert not unmapped, f"add these to DASK_ERRORS: {unmapped}"
    chunk_lost = dask_backend.translate(
        distributed.scheduler.KilledWorker("k", None, 0),
        "running chunk 1",
        lost=lambda: WorkerLost(0, 0, None, [], None),
    )
    assert isinstance(chunk_lost, WorkerLost)
    with pytest.raises(
        corepool.BackendError, match="the Dask cluster failed running chunk 1"
    ) as info:
        dask_backend.translate(distributed.comm.core.CommClosedError("gone"), "running chunk 1")
    assert isinstance(info.value.__cause__, distributed.comm.core.CommClosedError)


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        ("task_timeout", "a task on a Dask worker's thread cannot be stopped"),
        ("max_tasks_per_worker", "corepool does not replace them"),
        ("max_memory_per_worker", "dask worker --memory-limit"),
        ("start_method", "Dask starts its own worker processes"),
        ("preload", "dask worker --preload"),
        ("inner_threads", "OMP_NUM_THREADS"),
    ],
)
def test_options_it_cannot_honour_are_refused(option: str, reason: str) -> None:
    value = {
        "task_timeout": 1.0,
        "max_tasks_per_worker": 5,
        "max_memory_per_worker": "1GB",
        "start_method": "spawn",
        "preload": ("json",),
        "inner_threads": 1,
    }[option]
    with pytest.raises(ValueError, match=f"backend='dask' cannot honour {option} .*{reason}"):
        corepool.Pool(backend="dask", address="tcp://127.0.0.1:1", **{option: value})


def test_address_needs_the_dask_backend_and_workers_need_no_address() -> None:
    with pytest.raises(ValueError, match="address names a Dask scheduler and needs backend='dask'"):
        corepool.Pool(address="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="workers=3 sizes the LocalCluster corepool starts"):
        corepool.Pool(backend="dask", address="tcp://127.0.0.1:1", workers=3)


@pytest.mark.timeout(60)
def test_an_unreachable_scheduler_is_a_backend_error() -> None:
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(corepool.BackendError, match=r"while connecting to tcp://127\.0\.0\.1:"),
    ):
        corepool.Pool(backend="dask", address=f"tcp://127.0.0.1:{_free_port()}")


def test_import_corepool_does_not_import_dask() -> None:
    code = (
        "import sys, corepool; corepool.Pool; corepool.map; "
        "print('dask' in sys.modules, 'distributed' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
