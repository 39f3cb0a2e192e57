"""``submit``: the futures it returns, and the queue that sends consecutive calls together.

Runs in the parent: ``Submits`` and a queue's ``add`` and ``seal`` in
callers' threads (under the ``Submits`` lock), the rest in the scheduler
thread. Imports ``_jobs``, ``_scheduler`` and ``errors``.

Each ``submit`` of the same function joins one open ``CallQueue``, which is
the input, the feed and the sink of one job: the scheduler takes the queued
calls in chunks sized like any others (one call alone when workers are idle,
many together when calls pile up), and each future resolves as soon as the
results of its chunk are back. A submit costs the caller a future and an
append. A queue that runs dry closes (the next submit opens another), so
that nothing keeps the function, or what it refers to, alive once its calls
are done; each job copies large arguments anew, unless the queues share
their copies (``Submits.sharing_copies``, for joblib's ``Parallel`` calls).
"""

from __future__ import annotations

import _thread
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

from corepool._jobs import Aborted, Delivery, Finished, Job, Results, TaskFailed, new_sharing_key
from corepool._scheduler import Scheduler
from corepool._transport.pickling import qualified_type_name
from corepool.errors import SerializationError

__all__ = ["CallQueue", "Submits", "TaskFuture"]

# The states of concurrent.futures.Future (its module keeps them private).
_RUNNING = "RUNNING"
_PENDING = "PENDING"


class _FutureCondition(_thread.RLock):  # type: ignore[misc]  # final in typeshed only
    """The condition of one future: a re-entrant lock that is also a ``Condition``.

    ``Future`` asks of its condition ``with``, ``acquire``/``release``,
    ``wait`` and ``notify_all``. The lock itself is the C ``RLock`` (so
    ``with`` runs no Python code), and the list of waiters is made by the
    first ``wait``: most futures of a million pending are never waited on
    before they are done. Building one costs a third of a standard
    ``Condition`` and it is one object for the garbage collector, not three.
    """

    __slots__ = ("_waiters",)

    def wait(self, timeout: float | None = None) -> bool:
        if not hasattr(self, "_waiters"):
            self._waiters: list[Any] = []
        return threading.Condition.wait(self, timeout)  # type: ignore[arg-type]

    def notify(self, n: int = 1) -> None:
        if getattr(self, "_waiters", None):
            threading.Condition.notify(self, n)  # type: ignore[arg-type]
        elif not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot notify on un-acquired lock")

    def notify_all(self) -> None:
        self.notify(len(getattr(self, "_waiters", ())))


class TaskFuture(Future[Any]):
    """The ``Future`` that ``submit`` returns: a standard one, plus ``stop()``.

    ``cancel()`` keeps the standard's contract: it succeeds while the task
    waits for a worker and returns ``False`` once it runs. ``stop()`` also
    ends a task that runs, by killing its worker (the pool replaces it).
    """

    # No callback yet: the list is made by the first add_done_callback. A
    # million pending futures are a million fewer objects for the garbage
    # collector to walk, again and again, while they wait.
    _done_callbacks: Sequence[Callable[[Future[Any]], object]] = ()

    def __init__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
        # Future.__init__'s fields (the same in 3.10 to 3.13; a test pins
        # them), with the lighter condition: half the time of building the
        # standard one, and a third of the memory.
        self._condition = _FutureCondition()  # type: ignore[assignment]  # a Condition in all Future uses
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        # The call, until a worker takes it; then its queue and index there, for stop().
        self._args = args
        self._kwargs = {} if kwargs is None else kwargs
        self._queue: CallQueue | None = None
        self._index = 0

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        with self._condition:
            if not isinstance(self._done_callbacks, list):
                self._done_callbacks = []
        super().add_done_callback(fn)

    def stop(self) -> bool:
        """Cancel the task even if it is running: its worker is killed and replaced.

        A task waiting for a worker is simply cancelled, as ``cancel()`` does.
        A running one is ended at once; the other tasks its worker held run
        again elsewhere. Callbacks and waiters see a cancelled future.

        Returns:
            ``True`` if the future is cancelled now (or was already);
            ``False`` if the task had finished first: its result stands.

        Example:
            >>> future = pool.submit(time.sleep, 3600)
            >>> future.stop()
            True
        """
        with self._condition:
            running = self._state == _RUNNING
            if running:
                # Let Future.cancel() take it from here; a result that lands
                # in between wins, and cancel() then answers False.
                self._state = _PENDING
        queue = self._queue
        if running and queue is not None:
            queue.stop_call(self._index)
        cancelled = super().cancel()
        if running and cancelled:
            # The pool took this call already and will not look at it again:
            # tell the waiters of wait() and as_completed() here, as the pool
            # does for a call it finds cancelled when it takes it.
            self.set_running_or_notify_cancel()
        return cancelled


class CallQueue:
    """The consecutive submits of one function: one job's input, feed and sink.

    Args:
        fn: The function every call runs.
        exits_are_errors: A task's ``SystemExit`` is its error (see ``Job``).
        scheduler: The pool's scheduler, told when the job should go on.
    """

    def __init__(
        self, fn: Callable[..., Any], exits_are_errors: bool, scheduler: Scheduler
    ) -> None:
        self.fn: Callable[..., Any] | None = fn  # None once the queue is over
        self.exits_are_errors = exits_are_errors
        self.job: Job | None = None  # set once, before the job is submitted
        self._scheduler = scheduler
        self._calls: collections.deque[TaskFuture] = collections.deque()  # each with its call
        self._running: dict[int, TaskFuture] = {}  # task index -> its future
        self._started = 0
        self._sealed = False
        # Adding a call and finding the queue dry (then closing it) exclude
        # each other: a call added as the scheduler looks is never lost.
        # Taking calls needs no lock (see __next__): the caller that adds and
        # the scheduler that takes never wait for each other.
        self._lock = threading.Lock()

    # -- callers' threads ------------------------------------------------------

    def add(self, future: TaskFuture) -> bool:
        """Queue the call that ``future`` carries; ``False`` if this queue is sealed
        (open a new one)."""
        with self._lock:
            if self._sealed:
                return False
            self._calls.append(future)
            return True

    def seal(self) -> None:
        """Take no more calls; the job ends once those queued are done."""
        with self._lock:
            self._sealed = True

    # -- Feed and input, in the scheduler thread --------------------------------

    @property
    def is_open(self) -> bool:
        return not self._sealed

    def close_if_empty(self) -> bool:
        with self._lock:
            if not self._calls:
                self._sealed = True
            return self._sealed

    def __iter__(self) -> CallQueue:
        return self

    def __next__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The next call not cancelled, as ``(args, kwargs)``; its future is now running."""
        assert self.job is not None
        calls, running = self._calls, self._running
        # No lock: callers only append on the right, and only this thread
        # takes from the left. A call is put in _running before it leaves
        # _calls, so that pending_futures() in another thread always sees it.
        while calls:
            future = calls[0]
            index = self._started
            running[index] = future
            calls.popleft()
            args, kwargs = future._args, future._kwargs
            future._args = future._kwargs = None  # type: ignore[assignment]
            future._queue, future._index = self, index
            if future.set_running_or_notify_cancel():
                self._started += 1
                return args, kwargs
            del running[index]
        raise StopIteration

    def stop_call(self, index: int) -> None:
        """Stop call ``index`` if it runs now (``TaskFuture.stop``; any thread)."""
        job = self.job
        if job is not None:
            self._scheduler.stop_task(job, index)

    # -- shutdown and interpreter exit, any thread ------------------------------

    def pending_futures(self) -> list[TaskFuture]:
        """The futures of this queue not yet done: queued and running."""
        # Running first: a call moves from _calls to _running, never back.
        futures = list(self._running.values())
        futures.extend(list(self._calls))
        return list({id(future): future for future in futures}.values())

    def cancel_queued(self) -> None:
        """Cancel the calls that no worker has taken (``shutdown(cancel_futures=True)``)."""
        with self._lock:
            queued = list(self._calls)
        for future in queued:
            future.cancel()

    # -- Sink, in the scheduler thread -----------------------------------------

    def start(self) -> bool:
        return True

    def deliver(self, delivery: Delivery) -> None:
        if isinstance(delivery, Results):
            self._resolve(delivery)
        elif isinstance(delivery, TaskFailed):
            future = self._running.pop(delivery.task_index, None)
            if future is not None:
                future._queue = None
                _settle(future.set_exception, delivery.error)
        elif isinstance(delivery, Aborted):
            self.seal()
            for future in [*self._running.values(), *self._calls]:
                future._queue = None
                _settle(future.set_exception, delivery.error)
            self._running.clear()
            self._calls.clear()
            self._forget()
        elif isinstance(delivery, Finished):
            self._forget()

    def _forget(self) -> None:
        """The job is over: let go of it and of the function."""
        self.fn = None
        self.job = None

    def _resolve(self, results: Results) -> None:
        errors = results.errors or {}
        started = time.perf_counter()
        try:
            values: list[Any] = results.payload.load()
        except BaseException as exc:
            # Whatever unpickling raises (SystemExit included) fails these
            # futures only: this is the scheduler thread.
            name = self.job.name if self.job is not None else "submit"
            failure = SerializationError(
                f"the results of {len(results.indices)} calls of {name} could not be "
                f"unpickled in the parent: {qualified_type_name(exc)}: {exc}. "
                "Return types that the parent can import and rebuild.",
                type_name=qualified_type_name(exc),
            )
            failure.__cause__ = exc
            values, errors = [], dict.fromkeys(range(len(results.indices)), failure)
        if self.job is not None:
            self.job.stats.received(time.perf_counter() - started)
        running = self._running
        for position, index in enumerate(results.indices):
            future = running.pop(index, None)
            if future is None:
                continue
            # A future the caller keeps must not keep the job (its function) alive.
            future._queue = None
            # Inline, not _settle: this loop runs once per submitted call.
            try:
                if position in errors:
                    future.set_exception(errors[position])
                else:
                    future.set_result(values[position])
            except InvalidStateError:  # stopped by its caller meanwhile
                pass


class Submits:
    """A pool's submits: its open ``CallQueue``, and the key of copies new queues share.

    Callers' threads, under its lock. ``opened`` hears of each new queue.
    It keeps no reference to its pool, so that a pool dropped without
    ``close()`` is freed at once (its finalizer stops the workers).
    """

    def __init__(self, scheduler: Scheduler, opened: Callable[[CallQueue], None]) -> None:
        self._scheduler = scheduler
        self._opened = opened
        self._open: CallQueue | None = None
        self._sharing: int | None = None
        self._lock = threading.Lock()

    def add(
        self,
        fn: Callable[..., Any],
        future: TaskFuture,
        exits_are_errors: bool,
        make_job: Callable[[CallQueue, int | None], Job],
    ) -> None:
        """Queue the call ``future`` carries: in the open queue if it is ``fn``'s, else a new one.

        ``make_job`` makes the job of a new queue, given the key of argument
        copies it shares (``None``: its own).

        Raises:
            PoolClosed: The pool was closed (from the scheduler).
        """
        with self._lock:
            calls = self._open
            if (
                calls is None
                or calls.fn is not fn
                or calls.exits_are_errors != exits_are_errors
                or not calls.add(future)
            ):
                self._open_queue(fn, exits_are_errors, future, make_job)

    def seal(self) -> None:
        """Seal the open queue: the next submit opens another."""
        with self._lock:
            if self._open is not None:
                self._open.seal()

    @contextlib.contextmanager
    def sharing_copies(self) -> Iterator[None]:
        """Within it, the submitted calls copy each large argument once, whatever their jobs.

        Submits of one function make a new job each time the workers run
        dry, and each job copies its large arguments anew: joblib's backend
        sends a ``Parallel`` call's batches inside this, so that an array
        given to every batch is copied once per call, as loky maps it once.
        As within one ``map``, an argument changed in place after its first
        copy is not copied again.
        """
        key = new_sharing_key()
        self._scheduler.sharing.hold(key)
        with self._lock:
            outer, self._sharing = self._sharing, key
        self.seal()  # the next submit opens a queue that shares
        try:
            yield
        finally:
            with self._lock:
                self._sharing = outer
            self.seal()
            self._scheduler.sharing.let_go(key)
            self._scheduler.wake()

    def _open_queue(
        self,
        fn: Callable[..., Any],
        exits_are_errors: bool,
        first: TaskFuture,
        make_job: Callable[[CallQueue, int | None], Job],
    ) -> None:
        """Seal the open queue; open one for ``fn`` with its ``first`` call (under the lock).

        The call is queued before the scheduler sees the job, which would
        otherwise find it dry and close it.
        """
        if not callable(fn):
            raise TypeError(f"submit() needs a callable first, got {fn!r}")
        if self._open is not None:
            self._open.seal()
        calls = CallQueue(fn, exits_are_errors, self._scheduler)
        calls.add(first)
        calls.job = make_job(calls, self._sharing)
        self._scheduler.submit(calls.job)  # PoolClosed once closed: nothing changes then
        self._open = calls
        self._opened(calls)


def _settle(resolve: Callable[[Any], None], value: Any) -> None:
    """Resolve a future that its caller may have cancelled (``stop()``) meanwhile."""
    with contextlib.suppress(InvalidStateError):
        resolve(value)
