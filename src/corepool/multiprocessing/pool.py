"""``Pool``: ``multiprocessing.Pool``'s methods and semantics, on the native ``corepool.Pool``.

Runs in the caller; the worker side is ``_run_chunk``. ``map`` and ``starmap``
go straight to the native pool (its adaptive chunks when no ``chunksize`` is
given). ``imap``, ``imap_unordered`` and the ``*_async`` calls keep the
stdlib's contract where it is observable: the input is cut into chunks of
``chunksize`` here, each chunk succeeds or fails as a whole (an input that
raises loses the chunk it was building), iteration goes on after a failed
task, and callbacks run in one result thread per pool, before ``get()``
returns. A dead worker fails its own chunk, not the pool.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.pool as _stdlib_pool
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, NoReturn, Protocol

import corepool.pool
from corepool.errors import RemoteTraceback, SerializationError
from corepool.multiprocessing import _start

__all__ = ["ApplyResult", "AsyncResult", "IMapIterator", "MapResult", "Pool"]

_logger = logging.getLogger(__name__)

_RUN, _CLOSE, _TERMINATE = "RUN", "CLOSE", "TERMINATE"

Callback = Callable[[Any], object] | None


class _HasStartMethod(Protocol):
    def get_start_method(self, allow_none: bool = ...) -> Any: ...


def _as_stdlib(error: BaseException) -> BaseException:
    """``error`` as the stdlib's pool raises it.

    The worker's traceback becomes the stdlib's ``RemoteTraceback``; an
    argument that would not pickle raises what pickling raised (the stdlib
    passes it on), with corepool's explanation as a note (3.11+).
    """
    cause = error.__cause__
    if isinstance(cause, RemoteTraceback):
        text = f'\n"""\n{cause.traceback_text.rstrip()}\n"""'
        error.__cause__ = _stdlib_pool.RemoteTraceback(text)  # type: ignore[attr-defined]
    elif isinstance(error, SerializationError) and isinstance(cause, Exception):
        if hasattr(cause, "add_note"):
            cause.add_note(str(error))
        return cause
    return error


def _reraise(error: BaseException) -> NoReturn:
    """Raise ``error`` as the stdlib would (see ``_as_stdlib``)."""
    converted = _as_stdlib(error)
    if converted is error:
        raise error
    raise converted from None


def _run_chunk(fn: Callable[..., Any], star: bool, chunk: tuple[Any, ...]) -> tuple[bool, Any]:
    """In a worker: ``(True, results)`` of one chunk, or ``(False, error)`` for the first error.

    The error travels as the stdlib's ``ExceptionWithTraceback``, which
    arrives as the task's own exception with its traceback as ``__cause__``.
    """
    try:
        if star:
            return True, [fn(*args) for args in chunk]
        return True, [fn(item) for item in chunk]
    except Exception as error:
        wrapped = _stdlib_pool.ExceptionWithTraceback  # type: ignore[attr-defined]
        return False, wrapped(error, error.__traceback__)


def _chunks(iterable: Iterable[Any], size: int) -> Iterator[tuple[Any, ...]]:
    """Tuples of ``size`` items (the last may be shorter)."""
    items = iter(iterable)
    while chunk := tuple(itertools.islice(items, size)):
        yield chunk


def _check_chunksize(chunksize: int | None) -> None:
    if chunksize is not None and chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")


class ApplyResult:
    """The result of an ``*_async`` call: ``get``, ``wait``, ``ready``, ``successful``."""

    def __init__(self, callback: Callback = None, error_callback: Callback = None) -> None:
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None

    def ready(self) -> bool:
        """Whether the call has finished."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call finished without raising.

        Raises:
            ValueError: It has not finished.
        """
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the call has finished, or ``timeout`` seconds pass."""
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The call's result, or raise its exception.

        Raises:
            multiprocessing.TimeoutError: It did not finish within ``timeout`` seconds.
            WorkerDied: The worker running it died (the pool goes on).
        """
        self.wait(timeout)
        if not self.ready():
            raise multiprocessing.TimeoutError
        if self._success:
            return self._value
        _reraise(self._value)

    def _set(self, success: bool, value: Any) -> None:
        """Record the outcome, run the callback, then wake the waiters (the stdlib's order)."""
        self._success = success
        self._value = value
        callback = self._callback if success else self._error_callback
        try:
            if callback is not None:
                callback(self._value)
        except Exception:
            _logger.exception("a callback of a corepool.multiprocessing pool raised")
        finally:
            self._event.set()


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """The result of ``map_async`` or ``starmap_async``: a list once ready."""


class IMapIterator:
    """The iterator ``imap`` and ``imap_unordered`` return; ``next(timeout)`` as in the stdlib."""

    _END = object()

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """The next result; raise the task's exception in its place.

        Raises:
            multiprocessing.TimeoutError: Nothing came within ``timeout`` seconds.
            StopIteration: Every result was taken.
        """
        try:
            success, value = self._items.get(timeout=timeout)
        except queue.Empty:
            raise multiprocessing.TimeoutError from None
        if value is self._END:
            self._items.put((success, value))  # every later call ends too
            raise StopIteration
        if success:
            return value
        _reraise(value)

    __next__ = next

    def _feed(self, outcomes: Iterator[Any]) -> None:
        """In a helper thread: hand out each chunk's results, or its error, as they come."""
        try:
            for outcome in outcomes:
                if isinstance(outcome, BaseException):  # the chunk's worker died
                    self._items.put((False, outcome))
                elif outcome[0]:
                    for value in outcome[1]:
                        self._items.put((True, value))
                else:
                    self._items.put((False, outcome[1]))
        except Exception as error:  # the input iterable raised, or the pool stopped
            self._items.put((False, error))
        self._items.put((True, self._END))


class _ResultThread:
    """The thread that settles async results and runs their callbacks, as the stdlib's does."""

    def __init__(self, name: str) -> None:
        self._outcomes: queue.SimpleQueue[tuple[ApplyResult, bool, Any] | None]
        self._outcomes = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (outcome := self._outcomes.get()) is not None:
            result, success, value = outcome
            result._set(success, value)

    def post(self, result: ApplyResult, success: bool, value: Any) -> None:
        self._outcomes.put((result, success, value))

    def stop(self) -> None:
        self._outcomes.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join()


def _settle_from_future(thread: _ResultThread, result: ApplyResult, future: Any) -> None:
    if future.cancelled():
        thread.post(result, False, concurrent.futures.CancelledError())
        return
    error = future.exception()
    if error is None:
        thread.post(result, True, future.result())
    else:
        thread.post(result, False, error)


class Pool:
    """``multiprocessing.Pool``, on corepool's engine.

    The stdlib's constructor, methods, positional orders and errors. A worker
    that dies (killed, out of memory, a segfault) fails the task it was
    running with ``WorkerDied`` and is replaced; the pool does not hang.

    Args:
        processes: How many workers; one per core if ``None``.
        initializer: Called as ``initializer(*initargs)`` in each worker as it starts.
        initargs: Arguments for ``initializer``; corepool's primitives may be among them.
        maxtasksperchild: Replace a worker after this many tasks; ``None``: never.
        context: A context of ``corepool.multiprocessing`` (or of ``multiprocessing``)
            whose start method the workers use.

    Raises:
        ValueError: ``processes`` or ``maxtasksperchild`` is below 1.

    Example:
        >>> with Pool(4) as pool:
        ...     print(pool.map(abs, [-1, -2], 10))
        [1, 2]
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: _HasStartMethod | None = None,
    ) -> None:
        if processes is not None and processes < 1:
            raise ValueError(f"Number of processes must be at least 1, got {processes}")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError(
                f"maxtasksperchild must be a positive int or None, got {maxtasksperchild!r}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        method = _start.check_method(None if context is None else context.get_start_method())
        self._native = corepool.pool.Pool(
            processes,
            start_method=method,
            initializer=initializer,
            initargs=tuple(initargs),
            max_tasks_per_worker=maxtasksperchild,
        )
        self._state = _RUN
        self._lock = threading.Lock()
        self._results: _ResultThread | None = None
        self._helpers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()

    def __repr__(self) -> str:
        return (
            f"<corepool.multiprocessing.Pool state={self._state} pool_size={self._native.workers}>"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled; "
            "make the pool in the process that uses it"
        )

    def _check_running(self) -> None:
        if self._state != _RUN:
            raise ValueError("Pool not running")

    def _result_thread(self) -> _ResultThread:
        with self._lock:
            if self._results is None:
                self._results = _ResultThread(f"corepool-mp-results-{id(self):x}")
                # A pool dropped without join() must not leave its thread waiting.
                weakref.finalize(self, self._results.stop)
            return self._results

    def _helper(self, target: Callable[..., None], *args: Any) -> None:
        """Run ``target(*args)`` in a thread that ``join()`` waits for."""
        thread = threading.Thread(target=target, args=args, name="corepool-mp-call", daemon=True)
        self._helpers.add(thread)
        thread.start()

    # -- one call --------------------------------------------------------------

    def apply(
        self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: Mapping[str, Any] = {}
    ) -> Any:
        """Call ``func(*args, **kwds)`` in a worker and return its result (or raise its error)."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> ApplyResult:
        """Start ``func(*args, **kwds)`` in a worker; return an ``AsyncResult``.

        ``callback`` (or ``error_callback``) gets the result (or exception) in
        the pool's result thread, before ``get()`` returns.
        """
        self._check_running()
        result = ApplyResult(callback, error_callback)
        future = self._native.submit(func, *args, **kwds)
        future.add_done_callback(
            functools.partial(_settle_from_future, self._result_thread(), result)
        )
        return result

    # -- many calls, all at once -----------------------------------------------

    def map(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> list[Any]:
        """``[func(x) for x in iterable]``, computed by the workers.

        Without ``chunksize``, chunks are sized from measured task times.

        Raises:
            Exception: The first exception a task raised, as its own type.
            WorkerDied: A worker died running one of the tasks.
        """
        self._check_running()
        _check_chunksize(chunksize)
        try:
            return self._native.map(func, iterable, chunksize=chunksize)
        except Exception as error:
            _reraise(error)

    def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
    ) -> list[Any]:
        """Like ``map``, calling ``func(*args)`` for each tuple ``args``."""
        self._check_running()
        _check_chunksize(chunksize)
        try:
            return self._native.starmap(func, iterable, chunksize=chunksize)
        except Exception as error:
            _reraise(error)

    def _map_async(
        self,
        call: Callable[..., list[Any]],
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        callback: Callback,
        error_callback: Callback,
    ) -> MapResult:
        self._check_running()
        _check_chunksize(chunksize)
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)  # as the stdlib: read here, in the caller
        result = MapResult(callback, error_callback)
        self._helper(self._settle_map, result, call, func, iterable, chunksize)
        return result

    def _settle_map(
        self,
        result: MapResult,
        call: Callable[..., list[Any]],
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None,
    ) -> None:
        try:
            values = call(func, iterable, chunksize=chunksize)
        except Exception as error:
            self._result_thread().post(result, False, error)
        else:
            self._result_thread().post(result, True, values)

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> MapResult:
        """Start ``map``; return an ``AsyncResult`` whose ``get()`` gives the list."""
        return self._map_async(
            self._native.map, func, iterable, chunksize, callback, error_callback
        )

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callback = None,
        error_callback: Callback = None,
    ) -> MapResult:
        """Start ``starmap``; return an ``AsyncResult`` whose ``get()`` gives the list."""
        return self._map_async(
            self._native.starmap, func, iterable, chunksize, callback, error_callback
        )

    # -- many calls, one by one -------------------------------------------------

    def _imap(
        self, ordered: bool, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int
    ) -> IMapIterator:
        self._check_running()
        _check_chunksize(chunksize)
        task = functools.partial(_run_chunk, func, False)
        call = self._native.imap if ordered else self._native.imap_unordered
        outcomes = call(task, _chunks(iterable, chunksize), return_exceptions=True)
        iterator = IMapIterator()
        self._helper(iterator._feed, outcomes)
        return iterator

    def imap(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> IMapIterator:
        """Results one by one, in input order; ``next(timeout)`` waits at most ``timeout``."""
        return self._imap(True, func, iterable, chunksize)

    def imap_unordered(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> IMapIterator:
        """Like ``imap``, each result as soon as it is ready."""
        return self._imap(False, func, iterable, chunksize)

    # -- life cycle ------------------------------------------------------------

    def close(self) -> None:
        """Accept no more calls; the workers stop once those started are done."""
        if self._state == _RUN:
            self._state = _CLOSE
            self._native.close()

    def terminate(self) -> None:
        """Stop the workers now; unfinished calls fail with ``PoolClosed``."""
        self._state = _TERMINATE
        self._native.terminate()

    def join(self) -> None:
        """Wait for the workers to stop, after ``close()`` or ``terminate()``.

        Raises:
            ValueError: The pool is still running.
        """
        if self._state == _RUN:
            raise ValueError("Pool is still running: call close() or terminate() first")
        self._native.join()
        for thread in list(self._helpers):
            thread.join()
        with self._lock:
            results, self._results = self._results, None
        if results is not None:
            results.stop()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()  # the stdlib's choice: leaving the block stops the workers
