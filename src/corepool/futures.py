"""``concurrent.futures``, done right: the same names and contract, on corepool's engine.

Change one import line and code written for the standard library runs
unchanged:

    from corepool.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=4) as executor:
        for size in executor.map(len, pages, timeout=60):
            ...

The executor runs on a ``corepool.Pool``. What changes is what the standard
library gets wrong: a worker that dies (killed, out of memory, segfault)
fails only the future of the task it was running, with ``WorkerDied`` (a
``BrokenProcessPool``), and the executor goes on with a fresh worker instead
of breaking. docs/architecture.md lists every departure from the standard
library, with its reason. Everything else here (``Future``, ``wait``,
``as_completed``, ``ThreadPoolExecutor``, the exceptions) is the standard
library's own object.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    InvalidStateError,
    ThreadPoolExecutor,
    TimeoutError,
    as_completed,
    wait,
)
from functools import partial
from typing import Any, Protocol, TypeVar

from corepool import pool as _pool
from corepool._pending import is_exiting
from corepool._protocol import CallMode
from corepool._results import ResultStream
from corepool.options import START_METHODS, MapOptions, StartMethod
from corepool.pool import Pool

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "CancelledError",
    "Executor",
    "Future",
    "InvalidStateError",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "TimeoutError",
    "as_completed",
    "wait",
]

R = TypeVar("R")

# The logger the standard library's workers report a failed initializer to.
_LOGGER_NAME = "concurrent.futures"


class _Context(Protocol):
    """What ``mp_context`` must offer: a ``multiprocessing`` context, or corepool's."""

    def get_start_method(self) -> str: ...


def _start_method(mp_context: _Context | None) -> StartMethod | None:
    """The start method ``mp_context`` names; ``None`` (corepool's default) without one."""
    if mp_context is None:
        return None
    method = mp_context.get_start_method()
    for known in START_METHODS:
        if method == known:
            return known
    raise ValueError(
        f"mp_context uses the start method {method!r}, which corepool does not support. "
        f"Pass a context of one of {', '.join(START_METHODS)} "
        "(multiprocessing.get_context('forkserver'), say), or none for the default."
    )


def _initialize(initializer: Callable[..., object], *initargs: object) -> None:
    """Run the user's initializer in a worker, logging its failure as the stdlib's workers do.

    A handler the initializer adds to the ``concurrent.futures`` logger (to
    see why it failed) gets the record; the error then breaks the executor.
    """
    try:
        initializer(*initargs)
    except BaseException:
        logging.getLogger(_LOGGER_NAME).critical("Exception in initializer:", exc_info=True)
        raise


class _Tasks:
    """The argument tuples of one ``map`` call, handed to the scheduler as it asks.

    ``cancel()`` (from ``shutdown(cancel_futures=True)``) ends it: the next
    pull raises ``CancelledError``, which the scheduler delivers in place of
    the first task not yet started, so the consumer meets it there, as the
    standard library's cancelled futures are met.
    """

    def __init__(self, name: str, arguments: Iterator[tuple[Any, ...]]) -> None:
        self._name = name
        self._arguments = arguments
        self._pulled = 0
        self._cancelled = False

    def __iter__(self) -> _Tasks:
        return self

    def __next__(self) -> tuple[Any, ...]:
        if self._cancelled:
            raise CancelledError(
                f"task {self._pulled} of {self._name} and those after it were cancelled "
                "by shutdown(cancel_futures=True) before they started"
            )
        arguments = next(self._arguments)
        self._pulled += 1
        return arguments

    def cancel(self) -> None:
        self._cancelled = True


class _KnownTasks(_Tasks):
    """``_Tasks`` read at call time: their number tells the chunker when the end is near."""

    def __init__(self, name: str, arguments: collections.deque[tuple[Any, ...]]) -> None:
        super().__init__(name, _drain(arguments))
        self._total = len(arguments)

    def __len__(self) -> int:
        return self._total


def _drain(arguments: collections.deque[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """Hand out the arguments first to last, letting go of each as it is taken."""
    while arguments:
        yield arguments.popleft()


def _settle(ended: Future[None]) -> None:
    """Mark a map's job over (it may be told twice, from two threads)."""
    with contextlib.suppress(InvalidStateError):
        ended.set_result(None)


def _one_by_one(stream: ResultStream) -> Iterator[Any]:
    """The results of a ``map`` stream in order, each let go of as it is handed out.

    The stream hands out runs of results; each result is taken out of its
    run as it is handed over, so the iterator keeps no reference to a result
    the consumer has taken (the standard library's map frees them the same
    way). Closing the iterator
    cancels the tasks not yet started.
    """
    runs = stream.ordered()
    try:
        for run in runs:
            for position in range(len(run)):
                yield _hand_over(run, position)
    finally:
        runs.close()


def _hand_over(run: list[Any], position: int) -> Any:
    """Take a result out of its run, leaving ``None``: the run keeps its length, not the result."""
    result = run[position]
    run[position] = None
    return result


class ProcessPoolExecutor(Executor):
    """``concurrent.futures.ProcessPoolExecutor`` on corepool's engine.

    Same signature and contract as the standard library's; a worker that
    dies fails only its own task's future (``WorkerDied``, a
    ``BrokenProcessPool``) and is replaced, instead of breaking the executor.

    Args:
        max_workers: How many worker processes; ``None`` means one per core.
        mp_context: A ``multiprocessing`` context (or corepool's): only its
            start method is used. ``None`` means corepool's default
            (``forkserver`` on Linux, ``spawn`` elsewhere).
        initializer: Called in each worker with ``initargs`` before any task.
            If it raises, the executor is broken: pending and later calls
            raise ``InitializerError``, a ``BrokenProcessPool``.
        initargs: Arguments for ``initializer``.
        max_tasks_per_child: Replace a worker after it ran this many tasks.

    Raises:
        ValueError: ``max_workers`` is not positive, ``mp_context`` has a start
            method corepool does not support, or ``max_tasks_per_child`` is
            set with the ``fork`` start method (as the standard library says).
        TypeError: ``initializer`` is not callable.

    Example:
        >>> with ProcessPoolExecutor() as executor:
        ...     print(executor.submit(pow, 2, 10).result())
        1024
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: _Context | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError(f"max_workers must be greater than 0, got {max_workers}")
        start_method = _start_method(mp_context)
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError(
                    f"max_tasks_per_child must be an integer, got {max_tasks_per_child!r}"
                )
            if max_tasks_per_child <= 0:
                raise ValueError(f"max_tasks_per_child must be >= 1, got {max_tasks_per_child}")
            if start_method == "fork":
                raise ValueError(
                    "max_tasks_per_child is incompatible with the 'fork' multiprocessing "
                    "start method; supply a different mp_context."
                )
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable, got {initializer!r}")
        self._pool = Pool(
            max_workers,
            start_method=start_method,
            initializer=None if initializer is None else partial(_initialize, initializer),
            initargs=tuple(initargs),
            max_tasks_per_worker=max_tasks_per_child,
        )
        # The argument sources of map() calls in progress: shutdown(cancel_futures=True)
        # cancels the tasks they have not handed out yet.
        self._maps: weakref.WeakSet[_Tasks] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<corepool.futures.ProcessPoolExecutor on {self._pool!r}>"

    @property
    def _broken(self) -> str | bool:
        """Why the executor broke, else ``False``: the standard library's attribute.

        Code written for ``concurrent.futures`` polls it to learn that a
        failing initializer broke the pool.
        """
        reason = self._pool._scheduler._broken
        return False if reason is None else str(reason)

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        """Schedule ``fn(*args, **kwargs)``; return a ``Future`` for its result.

        The future is a ``corepool.TaskFuture``: a standard ``Future`` whose
        ``stop()`` also ends the task if it is running.

        Raises:
            RuntimeError: The executor was shut down (``PoolClosed``), or the
                interpreter is exiting (as the standard library says).
            BrokenExecutor: The initializer failed (``InitializerError``).

        Example:
            >>> executor.submit(pow, 2, 10).result()
            1024
        """
        if is_exiting():
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        return self._pool._submit(fn, args, kwargs, exits_are_errors=True)

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[R]:
        """Call ``fn`` on every input, as ``map(fn, *iterables)``; results come lazily, in order.

        As in the standard library, the inputs are read and the tasks
        scheduled now; each result (or its task's error) is handed out when
        the iterator reaches it. Closing the iterator cancels the tasks not
        yet started.

        Args:
            fn: The function; with several iterables it takes one argument
                from each.
            *iterables: The inputs.
            timeout: Seconds, counted from this call, after which reaching a
                result not ready raises ``TimeoutError`` (and cancels the rest).
            chunksize: Tasks sent to a worker together. The default, 1, lets
                corepool size chunks itself (it starts at one task per chunk
                and measures); a larger value is used as given.
            buffersize: Python 3.14's bound, on every version: read the inputs
                lazily and keep at most this many chunks scheduled ahead of
                the consumer.

        Returns:
            An iterator over the results.

        Raises:
            ValueError: ``chunksize`` or ``buffersize`` is less than 1.
            TypeError: ``buffersize`` is not an integer.
            RuntimeError: The executor was shut down.

        Example:
            >>> list(executor.map(pow, [2, 3], [5, 2]))
            [32, 9]
        """
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError(f"buffersize must be an integer or None, got {buffersize!r}")
        if buffersize is not None and buffersize < 1:
            raise ValueError(f"buffersize must be None or > 0, got {buffersize}")
        if chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {chunksize}")
        if is_exiting():
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        name = _pool._describe("map", fn)
        tasks: _Tasks
        # Done when the map's job is over: until then, it is pending work that
        # interpreter exit waits for, as for the stdlib's map futures. A map
        # with buffersize waits for its consumer, so exit does not wait for it.
        ended: Future[None] | None = None
        if buffersize is None:
            # Read now, in the caller's thread, as the standard library does.
            tasks = _KnownTasks(name, collections.deque(zip(*iterables, strict=False)))
            ended = Future()
            ended.set_running_or_notify_cancel()
        else:
            tasks = _Tasks(name, zip(*iterables, strict=False))
        options = MapOptions(chunksize=None if chunksize == 1 else chunksize, timeout=timeout)
        stream = self._pool._stream(
            "map",
            fn,
            (tasks,),
            options,
            mode=CallMode.STAR,
            window=None
            if buffersize is None
            else self._pool._window(options, max_tasks=buffersize * chunksize),
            timeout_advice="Raise the timeout, or take the results of submit() as they come "
            "with as_completed().",
            exits_are_errors=True,
            on_end=None if ended is None else partial(_settle, ended),
        )
        if ended is not None:
            self._pool._pending.track(ended)
        self._maps.add(tasks)
        return _one_by_one(stream)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work and free the workers once the work scheduled is done.

        Args:
            wait: Return only once the pending futures are done and the
                workers have stopped.
            cancel_futures: Cancel the futures (and ``map`` tasks) that no
                worker has started; running tasks finish.

        Example:
            >>> executor.shutdown(cancel_futures=True)
        """
        if cancel_futures:
            for tasks in list(self._maps):
                tasks.cancel()
        self._pool.shutdown(wait, cancel_futures=cancel_futures)
