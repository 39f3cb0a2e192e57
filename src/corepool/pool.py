"""``Pool``, the process pool, and ``map``, its one-call form."""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future
from concurrent.futures import wait as wait_for_futures
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from corepool._backends.local import LocalBackend
from corepool._calls import CallQueue, TaskFuture
from corepool._chunking import Chunker
from corepool._jobs import Job, Window
from corepool._protocol import CallMode
from corepool._results import TIMEOUT_ADVICE, ResultIterator, ResultStream
from corepool._scheduler import Scheduler
from corepool.errors import PoolClosed
from corepool.options import MapOptions, PoolOptions, StartMethod, parse_bytes

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


class Pool(Executor):
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
        self._backend = LocalBackend(self.options)
        self._scheduler = Scheduler(self._backend, name=f"pool-{id(self):x}")
        # The open queue of consecutive submits of one function (see _calls).
        self._calls: CallQueue | None = None
        self._submit_lock = threading.Lock()
        # What is not done yet: shutdown(cancel_futures=True) cancels it, and at
        # interpreter exit the program waits for it. The futures of other
        # calls (the futures face's map), and the queues of submits, each of
        # which holds its futures: tracked per job, not per future, which
        # would cost every submit a lock and a callback.
        self._pending: set[Future[Any]] = set()
        self._queues: weakref.WeakSet[CallQueue] = weakref.WeakSet()
        _register_exit_hook()
        # A pool dropped without close() must not leave workers behind.
        self._finalizer = weakref.finalize(self, _finalize, self._scheduler)

    @property
    def workers(self) -> int:
        """How many worker processes the pool runs."""
        return self._backend.workers

    def __repr__(self) -> str:
        state = "running" if self._scheduler.is_running else "closed"
        method = self.options.resolved_start_method
        return f"<corepool.Pool workers={self.workers} start_method={method!r} {state}>"

    # -- calls -----------------------------------------------------------------

    def _window(self, options: MapOptions, max_tasks: int = READ_AHEAD_TASKS) -> Window:
        """The read-ahead bound of a lazy call: the call's bytes, else the pool's."""
        size = options.read_ahead_bytes or self.options.read_ahead_bytes
        return Window(max_bytes=parse_bytes(size, "read_ahead_bytes"), max_tasks=max_tasks)

    def _robustness(self, task_timeout: float | None) -> dict[str, Any]:
        """A job's timeout and retry settings: the call's, else the pool's."""
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
    ) -> ResultStream:
        """Start a job whose results ``ResultStream`` hands out.

        ``window``: how far the job may read ahead of its consumer (``None``:
        no bound, the input is read as fast as workers take it).
        ``exits_are_errors``: see ``Job``. ``on_end``: see ``ResultStream``.
        """
        if not callable(fn):
            raise TypeError(f"{call}() needs a callable first, got {fn!r}")
        if not iterables:
            raise TypeError(f"{call}() needs at least one iterable of inputs")
        total = _length(iterables)
        name = _describe(call, fn)
        if mode is None:
            mode = CallMode.ITEM if len(iterables) == 1 else CallMode.STAR
        source = iter(iterables[0]) if len(iterables) == 1 else zip(*iterables, strict=False)
        stream = ResultStream(
            name=name,
            return_exceptions=options.return_exceptions,
            timeout=options.timeout,
            progress_total=total,
            progress=options.progress,
            timeout_advice=timeout_advice,
            on_end=on_end,
        )
        job = Job(
            name=name,
            fn=fn,
            mode=mode,
            source=source,
            chunker=Chunker(workers=self.workers, total=total, chunksize=options.chunksize),
            sink=stream,
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
        if _exiting:
            raise PoolClosed(
                f"cannot start {_describe('submit', fn)}: the interpreter is exiting. Submit "
                "work before the program ends; the futures submitted before are waited for."
            )
        future = TaskFuture()
        with self._submit_lock:
            calls = self._calls
            if (
                calls is None
                or calls.fn is not fn
                or calls.exits_are_errors != exits_are_errors
                or not calls.add(args, kwargs, future)
            ):
                self._open_calls(fn, exits_are_errors, (args, kwargs, future))
        return future

    def _open_calls(
        self,
        fn: Callable[..., Any],
        exits_are_errors: bool,
        first: tuple[tuple[Any, ...], dict[str, Any], TaskFuture],
    ) -> None:
        """Seal the open queue of submits; open one for ``fn`` with its ``first`` call.

        Called under the submit lock. The call is queued before the scheduler
        sees the job, which would otherwise find it dry and close it.
        """
        if not callable(fn):
            raise TypeError(f"submit() needs a callable first, got {fn!r}")
        if self._calls is not None:
            self._calls.seal()
        calls = CallQueue(fn, exits_are_errors, self._scheduler)
        calls.add(*first)
        calls.job = Job(
            name=_describe("submit", fn),
            fn=fn,
            mode=CallMode.CALL,
            source=calls,
            feed=calls,
            sink=calls,
            chunker=Chunker(workers=self.workers, total=None, chunksize=None),
            exits_are_errors=exits_are_errors,
            **self._robustness(None),
        )
        self._scheduler.submit(calls.job)  # PoolClosed once closed: nothing changes then
        self._calls = calls
        self._queues.add(calls)
        with _pending_lock:
            _queues_everywhere.add(calls)

    # -- life cycle ------------------------------------------------------------

    def close(self) -> None:
        """Accept no new calls; finish those started, then stop the workers.

        Idle workers of a pool without ``initializer`` or
        ``max_tasks_per_worker`` are parked instead of stopped: the next pool
        started the same way within a few seconds adopts them (they forget
        this pool's functions and ``worker_state()``); unadopted ones exit by
        themselves. Returns at once; ``join()`` waits. Idempotent.
        """
        with self._submit_lock:
            if self._calls is not None:
                self._calls.seal()
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
                no worker has started; running tasks finish. ``map`` and
                ``imap`` calls in progress finish too (``terminate()`` stops
                everything at once).

        Example:
            >>> pool.shutdown(cancel_futures=True)
        """
        self.close()
        if cancel_futures:
            for queue in list(self._queues):
                queue.cancel_queued()
            with _pending_lock:
                pending = list(self._pending)
            for future in pending:
                future.cancel()
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
    interpreter exit (the main thread has ended, and ``_wait_for_futures``
    has waited for the pending futures) it stops now.
    """
    if threading.main_thread().is_alive():
        scheduler.close()
        return
    scheduler.terminate()
    scheduler.join(_FINALIZE_JOIN_S)


# The futures of every pool's submit() calls not yet done, and whether the
# interpreter is exiting (then pools take no more work).
_pending_lock = threading.Lock()
_pending_everywhere: set[Future[Any]] = set()
_queues_everywhere: weakref.WeakSet[CallQueue] = weakref.WeakSet()
_exiting = False
_exit_hook_registered = False


def _track(future: Future[Any], pending: set[Future[Any]]) -> None:
    """Count ``future`` among its pool's pending futures, and everyone's, until it is done."""
    with _pending_lock:
        pending.add(future)
        _pending_everywhere.add(future)
    future.add_done_callback(partial(_untrack, pending))


def _untrack(pending: set[Future[Any]], future: Future[Any]) -> None:
    with _pending_lock:
        pending.discard(future)
        _pending_everywhere.discard(future)


def _register_exit_hook() -> None:
    """Register, once, the interpreter-exit hook that waits for pending futures.

    A threading exit hook (as ``concurrent.futures`` uses) runs before
    ``atexit`` ones, where ``_finalize`` then stops the pools left open.
    """
    global _exit_hook_registered
    with _pending_lock:
        if _exit_hook_registered:
            return
        _exit_hook_registered = True
    register = getattr(threading, "_register_atexit", atexit.register)
    with contextlib.suppress(RuntimeError):  # the interpreter is exiting already
        register(_wait_for_futures)


def _wait_for_futures() -> None:
    """At interpreter exit, wait until every pending ``submit`` future is done.

    ``concurrent.futures`` promises that "the program will not exit until all
    pending futures are done", shut down or not. From now on ``submit``
    raises ``PoolClosed``.
    """
    global _exiting
    with _pending_lock:
        _exiting = True
        pending = list(_pending_everywhere)
        queues = list(_queues_everywhere)
    wait_for_futures(pending + [future for queue in queues for future in queue.pending_futures()])


def is_exiting() -> bool:
    """Whether the interpreter is exiting: pools then accept no more ``submit`` calls."""
    return _exiting


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
