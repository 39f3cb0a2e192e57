"""Frozen option records, validated once, documented once.

Every shared parameter of ``Pool`` and of its calls is described here rather
than pasted into each signature's docstring.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BACKENDS",
    "START_METHODS",
    "MapOptions",
    "PoolOptions",
    "StartMethod",
    "check_task_timeout",
    "default_workers",
    "parse_bytes",
]

StartMethod = Literal["fork", "forkserver", "spawn"]
BackendName = Literal["process", "thread", "dask"]
BACKENDS: tuple[BackendName, ...] = ("process", "thread", "dask")
# Preloaded in workers by default when the parent has imported them.
AUTO_PRELOAD = ("numpy", "pandas", "scipy", "sklearn", "pyarrow", "torch")
START_METHODS: tuple[StartMethod, ...] = ("fork", "forkserver", "spawn")


def default_workers() -> int:
    """The number of CPU cores this process may run on."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        count: int | None = os.process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count()
    return max(1, count or 1)


def default_start_method() -> StartMethod:
    """``forkserver`` on Linux, ``spawn`` elsewhere (docs/architecture.md explains why)."""
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_bytes(value: int | str, name: str) -> int:
    """``"2GB"`` -> 2_000_000_000, ``"512MiB"`` -> 536_870_912; ints pass through."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)) and match[2].upper() in _UNITS:
        size = int(float(match[1]) * _UNITS[match[2].upper()])
    else:
        raise ValueError(
            f"{name} must be a number of bytes or a size such as '2GB' or '512MiB', got {value!r}"
        )
    if size < 1:
        raise ValueError(f"{name} must be at least 1 byte, got {value!r}")
    return size


def check_task_timeout(value: float | None) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or a positive number of seconds."""
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"task_timeout must be None or > 0 seconds, got {value!r}")


def _check_optional_count(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class PoolOptions:
    """How a pool's workers are started and kept.

    Attributes:
        backend: Where tasks run. ``"process"`` (the default): worker
            processes of this machine. ``"thread"``: threads of this process,
            for I/O-bound work (and free-threaded Python); the options that
            need a process of their own (``task_timeout``,
            ``max_tasks_per_worker``, ``max_memory_per_worker``,
            ``start_method``, ``preload``, ``inner_threads``) are refused.
            ``"dask"``: a ``dask.distributed`` cluster (``address``), each
            chunk a Dask task (needs ``pip install corepool[dask]``, and
            corepool installed on the cluster's workers); what the
            cluster's workers cannot honour (``task_timeout``,
            ``max_tasks_per_worker``, ``max_memory_per_worker``,
            ``start_method``, ``preload``, ``inner_threads``) is refused.
        address: The Dask scheduler to run on (``"tcp://host:8786"``), with
            ``backend="dask"`` only. ``None`` (the default): the one Dask's
            configuration names (``DASK_SCHEDULER_ADDRESS``), else a
            ``LocalCluster`` of ``workers`` single-threaded worker
            processes, started with the pool and closed with it.
        workers: How many workers run tasks; ``None`` means one process per
            CPU core this process may use (``"process"``), as many threads
            as ``concurrent.futures.ThreadPoolExecutor`` starts
            (``"thread"``: the cores plus 4, at most 32). With
            ``backend="dask"`` it sizes the ``LocalCluster`` started for
            you; a cluster given by ``address`` has the workers it has.
        start_method: ``"forkserver"`` (the default on Linux: workers are forked
            from a small single-threaded template process, so they start in a
            few milliseconds and never inherit the parent's threads or locks),
            ``"spawn"`` (a fresh interpreter per worker; the default elsewhere)
            or ``"fork"`` (a copy of the parent, sharing its memory pages
            copy-on-write; unsafe when the parent has threads that hold locks).
            Whatever the method, workers never import the caller's
            ``__main__`` module: functions defined there travel by value.
        initializer: Called once in each worker before its first task; what
            it stores (in ``corepool.worker_state`` or a module global) stays
            for every task that worker runs.
        initargs: Positional arguments for ``initializer``.
        max_tasks_per_worker: Retire a worker after it ran this many tasks and
            start a fresh one; ``None`` keeps workers for the pool's life.
        task_timeout: Seconds one task may run. A task that runs longer gets
            ``TaskTimeout`` (also a ``TimeoutError``) within about a second of
            its deadline, even when stuck in C code or a system call: its
            worker is killed and replaced, and the other tasks it held run
            elsewhere. ``None`` (the default) lets tasks run as long as they
            take. Each call can set its own.
        retries: How many more times a task is tried, on a fresh worker, when
            its worker died or it timed out (and, with ``retry_on``, when it
            raised one of those exceptions) before the error is shown; the
            error then says how many attempts were made.
        retry_on: Exception types that a task may raise and then be retried
            for, within ``retries`` (``(ConnectionError,)``, say).
        max_memory_per_worker: A worker whose resident memory passes this
            after a chunk of tasks is retired and replaced, so leaky code runs
            on in bounded memory. Bytes, or a string such as ``"2GB"`` or
            ``"512MiB"``. ``None`` (the default) sets no limit. (On Linux the
            current resident size is read; elsewhere the peak.)
        shared: Large read-only objects that every task needs (a model, a
            lookup table, a DataFrame), by name. They are pickled once, their
            large buffers put in shared memory once, and each worker loads
            them once when it starts; tasks read them from
            ``corepool.worker_state()[name]`` instead of receiving them with
            every task. Arrays among them are read-only in workers.
        buffer_threshold: Buffers of this many bytes or more (numpy arrays,
            ``bytearray``, ``memoryview``, anything pickle can take out of
            band) travel between the parent and workers through shared
            memory, copied once, instead of through the connection. Bytes, or
            a string such as ``"1MiB"`` (the default); ``None`` sends
            everything through the connection.
        preload: Modules to import once in the template process that
            workers are forked from (``forkserver``), so that every worker,
            and every replacement, starts with them loaded in a few
            milliseconds instead of importing them itself; with ``spawn``
            and ``fork`` each worker imports them when it starts. ``None``
            (the default) preloads those of numpy, pandas, scipy,
            scikit-learn, pyarrow and torch that this process has imported.
            ``()`` preloads nothing.
        inner_threads: How many threads each worker lets BLAS and OpenMP
            libraries (numpy, scipy, torch) use, so that workers times inner
            threads does not exceed the cores. ``None`` (the default): the
            cores divided by ``workers``, at least 1. Set through the usual
            environment variables (``OMP_NUM_THREADS``,
            ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``, ...) before those
            libraries load, and with threadpoolctl where they already have.
        read_ahead_bytes: How far ``imap`` and ``imap_unordered`` may read
            their input ahead of what you have consumed: the tasks' pickled
            arguments plus the results waiting for you, in bytes or a size
            such as ``"64MiB"`` (the default), and at most 100,000 tasks. A
            slow first task does not stop free workers from running the
            tasks behind it until this much is waiting. Each call can set
            its own.
    """

    backend: BackendName = "process"
    address: str | None = None
    workers: int | None = None
    start_method: StartMethod | None = None
    initializer: Callable[..., Any] | None = None
    initargs: tuple[Any, ...] = ()
    max_tasks_per_worker: int | None = None
    task_timeout: float | None = None
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = ()
    max_memory_per_worker: int | str | None = None
    shared: Mapping[str, Any] | None = None
    buffer_threshold: int | str | None = "1MiB"
    preload: tuple[str, ...] | None = None
    inner_threads: int | None = None
    read_ahead_bytes: int | str = "64MiB"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {self.backend!r}"
            )
        if self.address is not None and (
            self.backend != "dask" or not isinstance(self.address, str)
        ):
            raise ValueError(
                f"address names a Dask scheduler and needs backend='dask', got "
                f"address={self.address!r} with backend={self.backend!r}"
            )
        _check_optional_count("workers", self.workers)
        _check_optional_count("max_tasks_per_worker", self.max_tasks_per_worker)
        if self.start_method is not None and self.start_method not in START_METHODS:
            raise ValueError(
                f"start_method must be one of {', '.join(START_METHODS)} or None, "
                f"got {self.start_method!r}"
            )
        if sys.platform == "win32":
            raise NotImplementedError("corepool runs on Linux and macOS; Windows is not supported")
        if self.initializer is not None and not callable(self.initializer):
            raise TypeError(f"initializer must be callable, got {self.initializer!r}")
        if not isinstance(self.initargs, tuple):
            raise TypeError(f"initargs must be a tuple, got {type(self.initargs).__name__}")
        check_task_timeout(self.task_timeout)
        if self.read_ahead_bytes is not None:
            parse_bytes(self.read_ahead_bytes, "read_ahead_bytes")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on
        ):
            raise TypeError(f"retry_on must be a tuple of exception types, got {self.retry_on!r}")
        if self.max_memory_per_worker is not None:
            parse_bytes(self.max_memory_per_worker, "max_memory_per_worker")
        if self.buffer_threshold is not None:
            parse_bytes(self.buffer_threshold, "buffer_threshold")
        if self.preload is not None and not (
            isinstance(self.preload, tuple) and all(isinstance(m, str) for m in self.preload)
        ):
            raise TypeError(f"preload must be a tuple of module names, got {self.preload!r}")
        for name in self.preload or ():
            if importlib.util.find_spec(name) is None:
                raise ValueError(
                    f"preload names {name!r}, which cannot be imported here: check the "
                    "spelling, or install it"
                )
        _check_optional_count("inner_threads", self.inner_threads)
        parse_bytes(self.read_ahead_bytes, "read_ahead_bytes")
        if self.shared is not None and not (
            isinstance(self.shared, Mapping) and all(isinstance(k, str) for k in self.shared)
        ):
            raise TypeError(
                "shared must be a mapping of names (str) to objects, "
                f"got {type(self.shared).__name__}"
            )

    @property
    def max_memory_bytes(self) -> int | None:
        """``max_memory_per_worker`` in bytes, or ``None``."""
        if self.max_memory_per_worker is None:
            return None
        return parse_bytes(self.max_memory_per_worker, "max_memory_per_worker")

    @property
    def buffer_threshold_bytes(self) -> int | None:
        """``buffer_threshold`` in bytes, or ``None``."""
        if self.buffer_threshold is None:
            return None
        return parse_bytes(self.buffer_threshold, "buffer_threshold")

    @property
    def resolved_preload(self) -> tuple[str, ...]:
        """``preload``, with ``None`` replaced by the heavy modules this process has imported."""
        if self.preload is not None:
            return self.preload
        return tuple(name for name in AUTO_PRELOAD if name in sys.modules)

    @property
    def resolved_inner_threads(self) -> int:
        """``inner_threads``, with ``None`` replaced by the cores per worker (at least 1)."""
        if self.inner_threads is not None:
            return self.inner_threads
        return max(1, default_workers() // self.resolved_workers)

    @property
    def resolved_workers(self) -> int:
        """``workers``, or the usable cores (threads: the cores plus 4, at most 32)."""
        if self.workers is not None:
            return self.workers
        if self.backend == "thread":
            return min(32, default_workers() + 4)
        return default_workers()

    @property
    def resolved_start_method(self) -> StartMethod:
        """``start_method``, with ``None`` replaced by the platform's default."""
        return self.start_method or default_start_method()


@dataclass(frozen=True, kw_only=True)
class MapOptions:
    """How one call (``map``, ``imap``, ``imap_unordered``, ``starmap``) runs.

    Attributes:
        chunksize: How many tasks travel to a worker together. ``None`` (the
            default) lets corepool choose: it starts small, measures the time
            per task and aims each chunk at about ``target_chunk_seconds``,
            shrinking chunks near the end of a sized input so that no worker
            is left with a long tail.
        ordered: Deliver results in input order (``True``) or as they finish.
        progress: Show a progress bar (tqdm, on stderr) with tasks done, rate
            and time left.
        return_exceptions: Put a failed task's exception in its result's place
            instead of raising it; the other results are all delivered.
        timeout: Seconds from the call until every result must have arrived;
            past it the call raises ``TimeoutError``. ``None`` waits forever.
        task_timeout: Seconds each task of this call may run (see
            ``PoolOptions.task_timeout``); ``None`` uses the pool's.
        read_ahead_bytes: How far this lazy call may read ahead of its
            consumer (see ``PoolOptions.read_ahead_bytes``); ``None`` uses
            the pool's.
    """

    chunksize: int | None = None
    ordered: bool = True
    progress: bool = False
    return_exceptions: bool = False
    timeout: float | None = None
    task_timeout: float | None = None
    read_ahead_bytes: int | str | None = None

    def __post_init__(self) -> None:
        if self.chunksize is not None and (
            isinstance(self.chunksize, bool)
            or not isinstance(self.chunksize, int)
            or self.chunksize < 1
        ):
            raise ValueError(f"chunksize must be None or an int >= 1, got {self.chunksize!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be None or > 0 seconds, got {self.timeout!r}")
        check_task_timeout(self.task_timeout)
