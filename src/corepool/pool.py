"""``Pool``, the process pool, and ``map``, its one-call form."""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future
from types import TracebackType
from typing import Any, TypeVar

from corepool import _backends
from corepool._async_calls import AsyncCalls
from corepool._calls import CallQueue, Submits, TaskFuture
from corepool._chunking import Chunker
from corepool._jobs import IteratorInput, Job, Window, input_of
from corepool._pending import PendingWork, is_exiting
from corepool._protocol import CallMode
from corepool._results import TIMEOUT_ADVICE, ResultIterator, ResultStream
from corepool._scheduler import Scheduler
from corepool._stats import PoolCounters
from corepool.errors import PoolClosed
from corepool.options import BackendName, MapOptions, PoolOptions, StartMethod, parse_bytes
from corepool.stats import CallStats, PoolStats

__all__ = ["Pool", "map"]

R = TypeVar("R")

# imap reads ahead of its consumer by at most read_ahead_bytes (see
# MapOptions) and this many tasks: an infinite input stays lazy and memory
# stays bounded, while free workers keep busy behind a slow head task.
READ_AHEAD_TASKS = 100_000


def _describe(call: str, fn: Callable[..., Any]) -> str:
    """``map(resize)``: how error messages name a call. Partials are named by their function."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{call}({name})"


def _length(iterables: tuple[Iterable[Any], ...]) -> int | None:
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None


class Pool(AsyncCalls, Executor):
    """A pool of worker processes that run your functions on all cores.

    Workers are started in the background as soon as the pool is created.
    A worker that dies (killed, out of memory, segfault, ``os._exit``) costs
    exactly the task it was running, which gets ``WorkerDied``; its other
    tasks run again elsewhere, a fresh worker takes its place, and the pool
    goes on. The pool is a ``concurrent.futures.Executor`` too, so
    ``loop.run_in_executor(pool, fn, x)`` works: ``submit``, ``shutdown``
    and the futures keep that contract (``map`` returns a list: see there).

    Args:
        workers: See ``PoolOptions``; ``None`` means one per core.
        backend: See ``PoolOptions``: ``"process"`` (the default),
            ``"thread"`` or ``"dask"``.
        address: See ``PoolOptions``: the Dask scheduler (``backend="dask"``).
        start_method: See ``PoolOptions``.
        initializer: See ``PoolOptions``.
        initargs: See ``PoolOptions``.
        max_tasks_per_worker: See ``PoolOptions``.
        task_timeout: See ``PoolOptions``; each call may set its own.
        retries: See ``PoolOptions``.
        retry_on: See ``PoolOptions``.
        max_memory_per_worker: See ``PoolOptions``.
        shared: See ``PoolOptions``: objects every worker loads once, read
            with ``corepool.worker_state()[name]``.
        buffer_threshold: See ``PoolOptions``.
        preload: See ``PoolOptions``: modules workers start with, imported
            once in the template process.
        inner_threads: See ``PoolOptions``: BLAS/OpenMP threads per worker.
        read_ahead_bytes: See ``PoolOptions``: how far ``imap`` reads ahead.

    Raises:
        ValueError: An option is out of range.

    Example:
        >>> with corepool.Pool(workers=4) as pool:
        ...     squares = pool.map(square, range(1000))
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        backend: BackendName = "process",
        address: str | None = None,
        start_method: StartMethod | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (),
        max_memory_per_worker: int | str | None = None,
        shared: Mapping[str, Any] | None = None,
        buffer_threshold: int | str | None = "1MiB",
        preload: tuple[str, ...] | None = None,
        inner_threads: int | None = None,
        read_ahead_bytes: int | str = "64MiB",
    ) -> None:
        self.options = PoolOptions(
            backend=backend,
            address=address,
            workers=workers,
            start_method=start_method,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_worker=max_tasks_per_worker,
            task_timeout=task_timeout,
            retries=retries,
            retry_on=retry_on,
            max_memory_per_worker=max_memory_per_worker,
            shared=shared,
            buffer_threshold=buffer_threshold,
            preload=preload,
            inner_threads=inner_threads,
            read_ahead_bytes=read_ahead_bytes,
        )
        self._backend = _backends.create(self.options)
        self._stats = PoolCounters.of(self.options, self._backend)
        self._scheduler = Scheduler(self._backend, name=f"pool-{id(self):x}", stats=self._stats)
        # What shutdown(cancel_futures=True) cancels and interpreter exit waits for.
        self._pending = PendingWork()
        # Consecutive submits of one function share a queue and a job (see _calls).
        self._submits = Submits(self._scheduler, self._pending.add_queue)
        # A pool dropped without close() must not leave workers behind.
        self._finalizer = weakref.finalize(self, _finalize, self._scheduler)

    @property
    def workers(self) -> int:
        """How many tasks the pool runs at once: its processes, threads or cluster threads."""
        return self._backend.workers

    def __repr__(self) -> str:
        state = "running" if self._scheduler.is_running else "closed"
        return f"<corepool.Pool workers={self.workers} {self._backend.describe()} {state}>"

    def stats(self) -> PoolStats:
        """Where the pool's time went so far: counts, rates, time, bytes, and advice.

        ``print(pool.stats())`` shows a report; ``.summary()`` one line. See
        ``corepool.PoolStats``. Cheap: the counters are kept as work flows.

        Example:
            >>> print(pool.stats())
        """
        return self._stats.snapshot()

    def last_call_stats(self) -> CallStats | None:
        """The figures of the last ``map``, ``starmap`` or ``imap`` this thread started.

        ``None`` if this thread started none on this pool. Each ``imap``
        iterator has its own too: ``results.stats()``. See ``corepool.CallStats``.

        Example:
            >>> pool.map(square, range(1000))
            >>> print(pool.last_call_stats().summary())
        """
        call = self._stats.last_call()
        return None if call is None else call.snapshot()

    # -- calls -----------------------------------------------------------------

    def _window(self, options: MapOptions, max_tasks: int = READ_AHEAD_TASKS) -> Window:
        """The read-ahead bound of a lazy call: the call's bytes, else the pool's."""
        size = options.read_ahead_bytes or self.options.read_ahead_bytes
        return Window(max_bytes=parse_bytes(size, "read_ahead_bytes"), max_tasks=max_tasks)

    def _chunker(self, total: int | None, chunksize: int | None) -> Chunker:
        return Chunker(
            workers=self.workers,
            total=total,
            chunksize=chunksize,
            target_s=self._backend.chunk_seconds,
        )

    def _robustness(self, task_timeout: float | None) -> dict[str, Any]:
        """A job's timeout and retry settings: the call's, else the pool's."""
        if task_timeout is not None and "task_timeout" in self._backend.REFUSED:
            raise ValueError(
                f"backend={self.options.backend!r} cannot honour task_timeout "
                f"({self._backend.REFUSED['task_timeout']}); leave it unset, "
                "or use backend='process'"
            )
        return {
            "task_timeout": task_timeout if task_timeout is not None else self.options.task_timeout,
            "retries": self.options.retries,
            "retry_on": self.options.retry_on,
        }

    def _stream(
        self,
        call: str,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        options: MapOptions,
        *,
        mode: CallMode | None = None,
        window: Window | None,
        timeout_advice: str = TIMEOUT_ADVICE,
        exits_are_errors: bool = False,
        on_end: Callable[[], None] | None = None,
        on_delivery: Callable[[], None] | None = None,
    ) -> ResultStream:
        """Start a job whose results ``ResultStream`` hands out.

        ``window``: how far the job may read ahead of its consumer (``None``:
        no bound, the input is read as fast as workers take it).
        ``exits_are_errors``: see ``Job``. ``on_end``, ``on_delivery``: see ``ResultStream``.
        """
        if not callable(fn):
            raise TypeError(f"{call}() needs a callable first, got {fn!r}")
        if not iterables:
            raise TypeError(f"{call}() needs at least one iterable of inputs")
        total = _length(iterables)
        name = _describe(call, fn)
        if mode is None:
            mode = CallMode.ITEM if len(iterables) == 1 else CallMode.STAR
        stats = self._stats.open_call(name)
        stream = ResultStream(
            name=name,
            return_exceptions=options.return_exceptions,
            timeout=options.timeout,
            progress_total=total,
            progress=options.progress,
            stats=stats,
            timeout_advice=timeout_advice,
            on_end=on_end,
            on_delivery=on_delivery,
        )
        job = Job(
            name=name,
            fn=fn,
            mode=mode,
            source=input_of(iterables),
            chunker=self._chunker(total, options.chunksize),
            sink=stream,
            stats=stats,
            window=window,
            exits_are_errors=exits_are_errors,
            **self._robustness(options.task_timeout),
        )
        stream.attach(job, self._scheduler)
        self._scheduler.submit(job)
        return stream

    def map(  # type: ignore[override]  # a list, as multiprocessing.Pool.map returns
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        ordered: bool = True,
        progress: bool = False,
        return_exceptions: bool = False,
        timeout: float | None = None,
        task_timeout: float | None = None,
    ) -> list[R]:
        """Call ``fn`` on every input and return the results as a list.

        With several iterables, ``fn`` takes one argument from each, as with
        the built-in ``map``. The options are described on ``MapOptions``.

        This is ``multiprocessing.Pool.map``'s contract, not
        ``Executor.map``'s: the pool is an ``Executor`` for ``submit``,
        ``shutdown`` and its futures, but its ``map`` waits for every result
        and raises the first error at once, with no partial results on
        ``timeout``. Code written for an ``Executor`` still gets the results,
        in order (a list is iterable); for the lazy ``Executor.map`` contract
        (results and errors one by one on retrieval) use ``imap`` or
        ``corepool.futures.ProcessPoolExecutor``.

        Returns:
            The results, in input order unless ``ordered=False``.

        Raises:
            WorkerDied: A worker died running one of the tasks.
            SerializationError: An argument or result would not pickle.
            PoolClosed: The pool was closed or terminated.
            TimeoutError: ``timeout`` passed before every result arrived.
            Exception: The first exception a task raised, as its own type.

        Example:
            >>> pool.map(pow, [2, 3], [5, 2])
            [32, 9]
        """
        options = MapOptions(
            chunksize=chunksize,
            ordered=ordered,
            progress=progress,
            return_exceptions=return_exceptions,
            timeout=timeout,
            task_timeout=task_timeout,
        )
        stream = self._stream("map", fn, iterables, options, window=None)
        return stream.collect() if ordered else stream.collect_unordered()

    def starmap(
        self,
        fn: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        progress: bool = False,
        return_exceptions: bool = False,
        timeout: float | None = None,
        task_timeout: float | None = None,
    ) -> list[R]:
        """Like ``map``, but each input is a tuple of arguments: ``fn(*args)``.

        Example:
            >>> pool.starmap(pow, [(2, 5), (3, 2)])
            [32, 9]
        """
        options = MapOptions(
            chunksize=chunksize,
            ordered=ordered,
            progress=progress,
            return_exceptions=return_exceptions,
            timeout=timeout,
            task_timeout=task_timeout,
        )
        stream = self._stream("starmap", fn, (iterable,), options, mode=CallMode.STAR, window=None)
        return stream.collect() if ordered else stream.collect_unordered()

    def imap(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        progress: bool = False,
        return_exceptions: bool = False,
        timeout: float | None = None,
        task_timeout: float | None = None,
        read_ahead_bytes: int | str | None = None,
    ) -> Iterator[R]:
        """Results one by one, in input order, as soon as each is ready.

        The input is read lazily: only a few chunks per worker ahead of what
        you have consumed, so an endless generator works and memory stays
        bounded. Leaving the loop early (or dropping the iterator) cancels
        the tasks not yet started. An exception raised by the input iterable
        reaches you in its place in the order.

        Example:
            >>> for thumb in pool.imap(resize, paths, progress=True):
            ...     save(thumb)
        """
        options = MapOptions(
            chunksize=chunksize,
            progress=progress,
            return_exceptions=return_exceptions,
            timeout=timeout,
            task_timeout=task_timeout,
            read_ahead_bytes=read_ahead_bytes,
        )
        stream = self._stream("imap", fn, iterables, options, window=self._window(options))
        return ResultIterator.over(stream, stream.ordered())

    def imap_unordered(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        progress: bool = False,
        return_exceptions: bool = False,
        timeout: float | None = None,
        task_timeout: float | None = None,
        read_ahead_bytes: int | str | None = None,
    ) -> Iterator[R]:
        """Like ``imap``, but each result comes as soon as it is ready, in any order."""
        options = MapOptions(
            chunksize=chunksize,
            ordered=False,
            progress=progress,
            return_exceptions=return_exceptions,
            timeout=timeout,
            task_timeout=task_timeout,
            read_ahead_bytes=read_ahead_bytes,
        )
        stream = self._stream(
            "imap_unordered", fn, iterables, options, window=self._window(options)
        )
        return ResultIterator.over(stream, stream.unordered())

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        """Run ``fn(*args, **kwargs)`` in a worker; return a ``concurrent.futures.Future``.

        The future is a standard one: ``cancel()`` succeeds only while the
        task waits for a worker. Its extra ``stop()`` (see ``TaskFuture``)
        also ends a running task, by killing its worker (which is replaced).
        Consecutive submits of one function travel to workers together, in
        chunks sized like any others; each future resolves as soon as its own
        result is back.

        Raises:
            PoolClosed: The pool was closed or terminated, or the interpreter
                is exiting.

        Example:
            >>> pool.submit(pow, 2, 10).result()
            1024
        """
        return self._submit(fn, args, kwargs, exits_are_errors=False)

    def _submit(
        self,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        exits_are_errors: bool,
    ) -> TaskFuture:
        """``submit``; ``exits_are_errors``: see ``Job``."""
        if is_exiting():
            raise PoolClosed(
                f"cannot start {_describe('submit', fn)}: the interpreter is exiting. Submit "
                "work before the program ends; the futures submitted before are waited for."
            )
        future = TaskFuture(args, kwargs)
        self._submits.add(fn, future, exits_are_errors, self._submit_job)
        return future

    def _submit_job(self, calls: CallQueue, sharing: int | None) -> Job:
        """The job of a new queue of submits (see ``Submits``)."""
        assert calls.fn is not None
        return Job(
            name=_describe("submit", calls.fn),
            fn=calls.fn,
            mode=CallMode.CALL,
            source=IteratorInput(calls),
            feed=calls,
            sink=calls,
            stats=self._stats.open_call(_describe("submit", calls.fn), remember=False),
            chunker=self._chunker(None, None),
            exits_are_errors=calls.exits_are_errors,
            sharing=sharing,
            **self._robustness(None),
        )

    # -- life cycle ------------------------------------------------------------

    def close(self) -> None:
        """Accept no new calls; finish those started, then stop the workers.

        Idle workers of a pool without ``initializer`` or
        ``max_tasks_per_worker`` are parked instead of stopped: the next pool
        started the same way within a few seconds adopts them (they forget
        this pool's functions and ``worker_state()``); unadopted ones exit by
        themselves. Returns at once; ``join()`` waits. Idempotent.
        """
        self._submits.seal()
        self._scheduler.close()

    def terminate(self) -> None:
        """Stop every worker now; unfinished calls raise ``PoolClosed``. Idempotent."""
        self._scheduler.terminate()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the pool has stopped (after ``close()`` or ``terminate()``)."""
        self._scheduler.join(timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The ``Executor`` way to stop: ``close()``, then ``join()`` if ``wait``.

        Args:
            wait: Return only once every call has finished and the workers
                have stopped.
            cancel_futures: Also cancel the futures of ``submit`` calls that
                no worker has started or can take at once; running tasks
                finish. ``map`` and ``imap`` calls in progress finish too
                (``terminate()`` stops everything at once).

        Example:
            >>> pool.shutdown(cancel_futures=True)
        """
        self.close()
        if cancel_futures:
            # As the stdlib's executor, whose queue of calls for its workers
            # holds a few already: what the workers can take now still runs.
            self._scheduler.settle()
            self._pending.cancel()
        if wait:
            self.join()

    def __enter__(self) -> Pool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On an error (Ctrl-C included) nobody waits for the results: stop now.
        if exc_type is None:
            self.close()
        else:
            self.terminate()
        self.join()


# How long a dropped pool's finalizer waits for its scheduler thread; the thread
# is a daemon, so even a stuck one cannot keep the interpreter from exiting.
_FINALIZE_JOIN_S = 10.0


def _finalize(scheduler: Scheduler) -> None:
    """A pool object is gone without ``shutdown()``: finish its work, then stop.

    As a dropped ``concurrent.futures`` executor does, the pool finishes its
    queued calls (futures taken from it resolve), then stops its workers. At
    interpreter exit (the main thread has ended, and ``_pending``'s exit hook
    has waited for the pending futures) it stops now.
    """
    if threading.main_thread().is_alive():
        scheduler.close()
        return
    scheduler.terminate()
    scheduler.join(_FINALIZE_JOIN_S)


def map(
    fn: Callable[..., R],
    *iterables: Iterable[Any],
    workers: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    progress: bool = False,
    return_exceptions: bool = False,
) -> list[R]:
    """Call ``fn`` on every input using all cores, and return the list of results.

    A pool is started for the call and stopped after it; to make several
    calls, open a ``Pool`` once instead. Options are described on
    ``PoolOptions`` and ``MapOptions``.

    Raises:
        WorkerDied: A worker died running one of the tasks.
        SerializationError: An argument or result would not pickle.
        Exception: The first exception a task raised, as its own type.

    Example:
        >>> corepool.map(square, range(5))
        [0, 1, 4, 9, 16]
    """
    with Pool(workers) as pool:
        return pool.map(
            fn,
            *iterables,
            chunksize=chunksize,
            ordered=ordered,
            progress=progress,
            return_exceptions=return_exceptions,
        )
