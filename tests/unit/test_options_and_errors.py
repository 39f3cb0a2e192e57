"""Option validation and error messages, without processes."""

from __future__ import annotations

import pickle
import re
from concurrent.futures import BrokenExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest

import corepool
from corepool.errors import SerializationError, WorkerDied, signal_name
from corepool.options import MapOptions, PoolOptions, default_workers, parse_bytes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers must be None or an int >= 1, got 0"),
        ({"workers": True}, "workers must be None or an int >= 1, got True"),
        ({"max_tasks_per_worker": -1}, "max_tasks_per_worker must be None or an int >= 1, got -1"),
        ({"start_method": "vfork"}, "start_method must be one of fork, forkserver, spawn or None"),
        ({"task_timeout": 0}, "task_timeout must be None or > 0 seconds, got 0"),
        ({"retries": -1}, "retries must be an int >= 0, got -1"),
    ],
)
def test_pool_options_reject_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PoolOptions(**kwargs)  # type: ignore[arg-type]


def test_pool_options_type_errors() -> None:
    with pytest.raises(TypeError, match="initializer must be callable, got 3"):
        PoolOptions(initializer=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="initargs must be a tuple, got list"):
        PoolOptions(initargs=[1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"retry_on must be a tuple of exception types, got \(3,\)"):
        PoolOptions(retry_on=(3,))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunksize": 0}, "chunksize must be None or an int >= 1, got 0"),
        ({"timeout": 0}, "timeout must be None or > 0 seconds, got 0"),
        ({"task_timeout": -1.0}, "task_timeout must be None or > 0 seconds, got -1.0"),
    ],
)
def test_map_options_reject_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MapOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "size"),
    [(1024, 1024), ("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1.5 kb", 1500), ("7", 7)],
)
def test_memory_sizes(value: int | str, size: int) -> None:
    assert parse_bytes(value, "max_memory_per_worker") == size
    assert PoolOptions(max_memory_per_worker=value).max_memory_bytes == size


@pytest.mark.parametrize("value", ["lots", "2 parsecs", 0, -5, True])
def test_bad_memory_sizes(value: object) -> None:
    with pytest.raises(ValueError, match="max_memory_per_worker must be"):
        PoolOptions(max_memory_per_worker=value)  # type: ignore[arg-type]


def test_defaults_resolve() -> None:
    options = PoolOptions()
    assert options.resolved_workers == default_workers() >= 1
    assert options.resolved_start_method in ("forkserver", "spawn")


def test_worker_died_message_names_signal_task_and_cause() -> None:
    error = WorkerDied(worker_id=2, pid=8121, exitcode=-9, task_index=14, job="map(resize)")
    assert str(error) == (
        "worker 2 (pid 8121) got SIGKILL in task 14 of map(resize). Likely out of memory "
        "(the kernel's OOM killer sends SIGKILL) or killed by another process: try fewer "
        "workers or a smaller chunksize. It was replaced."
    )
    assert (error.signal, error.exitcode, error.task_index) == ("SIGKILL", -9, 14)


def test_worker_died_for_a_plain_exit() -> None:
    error = WorkerDied(worker_id=0, pid=1, exitcode=3, task_index=None, job="imap(f)")
    assert error.signal is None
    assert "exited with code 3 during imap(f)" in str(error)
    assert "os._exit(), sys.exit()" in str(error)


def test_worker_died_with_an_unknown_exit_status() -> None:
    """What a Dask worker's loss gives: the scheduler says only that it was lost."""
    error = WorkerDied(worker_id=1, pid=4242, exitcode=None, task_index=7, job="map(f)")
    assert str(error).startswith("worker 1 (pid 4242) was lost in task 7 of map(f). ")
    assert "Its exit status is unknown (a Dask scheduler only says" in str(error)
    assert "the worker's own log says more. It was replaced." in str(error)


def test_errors_survive_pickling() -> None:
    died = WorkerDied(worker_id=1, pid=2, exitcode=-11, task_index=3, job="map(f)")
    copy = pickle.loads(pickle.dumps(died))
    assert str(copy) == str(died) and copy.signal == "SIGSEGV"
    ser = SerializationError("no", type_name="T", traceback_text="tb")
    copy2 = pickle.loads(pickle.dumps(ser))
    assert (str(copy2), copy2.type_name, copy2.traceback_text) == ("no", "T", "tb")


def test_signal_names() -> None:
    assert signal_name(-9) == "SIGKILL"
    assert signal_name(0) is None
    assert signal_name(None) is None


def test_task_timeout_is_a_timeout_error() -> None:
    assert issubclass(corepool.TaskTimeout, TimeoutError)
    assert issubclass(corepool.TaskTimeout, corepool.PoolError)


@pytest.mark.parametrize(
    ("error", "stdlib"),
    [
        (corepool.WorkerDied, BrokenProcessPool),
        (corepool.WorkerDied, BrokenExecutor),
        (corepool.InitializerError, BrokenProcessPool),
        (corepool.PoolClosed, RuntimeError),
        (corepool.SerializationError, pickle.PicklingError),
        (corepool.SerializationError, pickle.UnpicklingError),
        (corepool.TaskTimeout, TimeoutError),
    ],
)
def test_errors_are_the_stdlibs_too(error: type[Exception], stdlib: type[Exception]) -> None:
    """An ``except`` written for multiprocessing or concurrent.futures catches corepool's error."""
    assert issubclass(error, stdlib)
    assert issubclass(error, corepool.PoolError)


def test_public_api_is_pinned() -> None:
    assert corepool.__all__ == [
        "BackendError",
        "Barrier",
        "BoundedSemaphore",
        "BytesMoved",
        "CallStats",
        "Condition",
        "Connection",
        "Counter",
        "Event",
        "InitializerError",
        "Lock",
        "MapOptions",
        "Pipe",
        "Pool",
        "PoolClosed",
        "PoolError",
        "PoolOptions",
        "PoolStats",
        "Process",
        "Queue",
        "QueueClosed",
        "RLock",
        "RemoteTraceback",
        "Semaphore",
        "SerializationError",
        "SharedArray",
        "TaskTimeout",
        "TimeSpent",
        "Value",
        "WorkerDied",
        "__version__",
        "map",
        "worker_state",
    ]
