"""Task functions for the tests, importable by workers under every start method."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from typing import Any

import corepool


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def identity(x: Any) -> Any:
    return x


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


_UNREAD: list[Any] = []


def fill_an_unread_stdlib_queue(_: Any = None) -> int:
    """Put 1 MiB on a new ``multiprocessing.Queue`` nobody reads; return this worker's pid.

    The worker's exit then waits for the queue's feeder thread, blocked on
    the full pipe, as a stdlib process's exit would: it cannot end by itself.
    """
    queue = multiprocessing.Queue()
    queue.put(b"x" * (1 << 20))
    _UNREAD.append(queue)
    return os.getpid()


def pid_of(_: Any) -> int:
    return os.getpid()


def fail_on(x: int, bad: int = 5) -> int:
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def sigkill_on(x: int, bad: int = 7) -> int:
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def exit_on(x: int, bad: int = 2) -> int:
    if x == bad:
        os._exit(13)
    return x


def sys_exit_on(x: int, bad: int = 2) -> int:
    if x == bad:
        sys.exit(4)
    return x


def set_state(key: str, value: Any) -> None:
    corepool.worker_state()[key] = value


def read_state(key: str) -> Any:
    return corepool.worker_state().get(key)


_unpickled = 0


def _rebuild_counter() -> UnpickleCounter:
    global _unpickled
    _unpickled += 1
    return UnpickleCounter()


class UnpickleCounter:
    """A callable that returns how many times this process has unpickled one."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_counter, ())

    def __call__(self, _: Any) -> int:
        return _unpickled


def is_writable(array: Any) -> bool:
    """Whether a task may write into the array it received."""
    return bool(array.flags.writeable)


def try_to_write(array: Any) -> str:
    """Write into a received array; return what happened."""
    try:
        array[0] = 1
    except ValueError as exc:
        return f"ValueError: {exc}"
    return "written"


def fill_slice(out: Any, start: int, stop: int, value: float) -> int:
    """Write ``value`` into ``out[start:stop]`` (a SharedArray) and return the count."""
    out[start:stop] = value
    return stop - start


def shared_array_of(size: int, value: int) -> Any:
    """A new SharedArray made in a worker, filled with ``value``."""
    made = corepool.SharedArray.zeros(size, "int64")
    made[:] = value
    return made


def state_item_info(key: str) -> tuple[int, int, bool, float]:
    """``(pid, id, writable, sum)`` of the shared object ``key`` as this worker sees it."""
    value = corepool.worker_state()[key]
    return os.getpid(), id(value), bool(value.flags.writeable), float(value.sum())


def sigkill_with(array: Any) -> None:
    """Die by SIGKILL holding a large argument."""
    os.kill(os.getpid(), signal.SIGKILL)


def modules_loaded(names: list[str]) -> list[bool]:
    """Which of ``names`` this worker had imported before the task ran."""
    return [name in sys.modules for name in names]


def meet_then_report(counter: Any, others: int, names: list[str]) -> tuple[int, list[bool]]:
    """Wait (30 s at most) until ``others`` tasks run beside this one; then this worker's pid and
    which of ``names`` it had imported. Run ``others + 1`` at once on as many workers: one each."""
    loaded = modules_loaded(names)
    counter.add(1)
    if not _count_reaches(counter, others + 1):
        raise TimeoutError(f"only {counter.value} of {others + 1} tasks met")
    return os.getpid(), loaded


def _count_reaches(counter: Any, count: int, within_s: float = 30.0) -> bool:
    """Whether ``counter`` reaches ``count`` within ``within_s`` seconds (polled)."""
    deadline = time.monotonic() + within_s
    while counter.value < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def blas_threads(_: Any = None) -> dict[str, Any]:
    """The BLAS thread pools of this worker after importing numpy, as threadpoolctl reports them."""
    import numpy  # noqa: F401 (loads the BLAS library)
    import threadpoolctl

    pools = [info["num_threads"] for info in threadpoolctl.threadpool_info()]
    return {"pools": pools, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def head_waits_for_the_rest(counter: Any, others: int, x: int) -> str:
    """Task 0 waits (30 s at most) until ``others`` tasks after it have run; they count."""
    if x != 0:
        counter.add(1)
        return "ran"
    if not _count_reaches(counter, others):
        return "stalled: the tasks behind the head did not run"
    return "not stalled"


def count_then_sleep(counter: Any, seconds: float, x: int) -> int:
    """Count this task in ``counter``, then sleep: a task of known length that leaves a trace."""
    counter.add(1)
    time.sleep(seconds)
    return x


class Box:
    """A picklable object that can be weakly referenced."""

    def __init__(self, value: Any) -> None:
        self.value = value


def report_pid_then_sleep(queue: Any, seconds: float, x: Any) -> Any:
    """Put this worker's pid in ``queue``, then sleep: a running task that says where it runs."""
    queue.put(os.getpid())
    time.sleep(seconds)
    return x
