"""The caller's side of a job: unpickle results, put them in order, raise errors.

Runs in the caller's thread (the one iterating ``imap`` or waiting in
``map``), so that unpickling results never slows the scheduler thread.
Imports ``_scheduler`` (for ``Delivery`` and ``Job``) and ``progress``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import queue
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, cast

from corepool._scheduler import Delivery, Job, Scheduler
from corepool._transport.pickling import qualified_type_name
from corepool.errors import SerializationError
from corepool.progress import ProgressBar

__all__ = [
    "TIMEOUT_ADVICE",
    "CallTimeout",
    "FutureSink",
    "ResultIterator",
    "ResultStream",
    "TaskFuture",
]

Run = tuple[int, list[Any], BaseException | None]

# After Ctrl-C, how long to wait for the workers to be stopped (SIGKILL: quick).
_INTERRUPT_JOIN_S = 5.0

# What a call's ``timeout`` raises. On Python 3.10, concurrent.futures.TimeoutError
# is not yet the built-in TimeoutError (3.11 made them one): there it is both,
# so that an ``except`` written for either catches it.
if sys.version_info >= (3, 11):
    CallTimeout = TimeoutError
else:

    class CallTimeout(TimeoutError, concurrent.futures.TimeoutError):
        """A call's ``timeout`` passed: both ``TimeoutError`` types of Python 3.10."""


# The last words of the message of a call's time-out, unless the call says otherwise.
TIMEOUT_ADVICE = "Raise the timeout, or use imap() to take results as they come."


def _runs_of(indices: Sequence[int], values: list[Any]) -> Iterator[tuple[int, list[Any]]]:
    """Split results into runs of consecutive indices (one run, unless tasks were re-run)."""
    if isinstance(indices, range):
        yield indices.start, values
        return
    start = 0
    for position in range(1, len(indices) + 1):
        if position == len(indices) or indices[position] != indices[position - 1] + 1:
            yield indices[start], values[start:position]
            start = position


class ResultStream:
    """Receives one job's deliveries and hands the results out in the wanted order."""

    def __init__(
        self,
        *,
        name: str,
        return_exceptions: bool,
        timeout: float | None,
        progress_total: int | None,
        progress: bool,
        timeout_advice: str = TIMEOUT_ADVICE,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self._name = name
        self._timeout_advice = timeout_advice
        # Told when the job is over (ended, aborted, or cancelled by the
        # consumer leaving); it may hear so twice, from two threads.
        self._on_end = on_end
        self._return_exceptions = return_exceptions
        self._timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._queue: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._bar = ProgressBar(name, progress_total) if progress else None
        self._job: Job | None = None
        self._scheduler: Scheduler | None = None
        self.finished = False

    def attach(self, job: Job, scheduler: Scheduler) -> None:
        self._job = job
        self._scheduler = scheduler

    # -- Sink, called in the scheduler thread --------------------------------

    def start(self) -> bool:
        return True

    def deliver(self, delivery: Delivery) -> None:
        self._queue.put(delivery)
        if (delivery.end or delivery.abort) and self._on_end is not None:
            self._on_end()

    # -- the caller's thread ---------------------------------------------------

    def _take(self) -> Delivery:
        try:
            if self._deadline is None:
                return self._queue.get()
            return self._queue.get(timeout=max(0.0, self._deadline - time.monotonic()))
        except KeyboardInterrupt:
            # Ctrl-C while waiting for results: nobody will wait for the rest,
            # so stop every worker of the pool before letting it through.
            assert self._scheduler is not None
            self._scheduler.terminate()
            self._scheduler.join(_INTERRUPT_JOIN_S)
            raise
        except queue.Empty:
            raise CallTimeout(
                f"{self._name} did not finish within timeout={self._timeout}s; "
                f"its remaining tasks were cancelled. {self._timeout_advice}"
            ) from None

    def _consumed(self, tasks: int) -> None:
        job = self._job
        assert job is not None and self._scheduler is not None
        job.consumed += tasks
        if job.stalled:
            job.stalled = False
            self._scheduler.wake()

    def _runs(self, delivery: Delivery) -> list[Run]:
        """Unpickle a delivery into runs ``(first index, values, error to raise)``."""
        failure = delivery.failure
        if failure is not None:
            if delivery.abort:
                raise failure
            if delivery.fatal or not self._return_exceptions:
                return [(delivery.indices[0], [], failure)]
            return [(index, [failure], None) for index in delivery.indices]
        assert delivery.payload is not None
        indices = delivery.indices
        try:
            values: list[Any] = delivery.payload.load()
        except Exception as exc:
            failure = SerializationError(
                f"the results of tasks {indices[0]}..{indices[-1]} of {self._name} could not "
                f"be unpickled in the parent: {qualified_type_name(exc)}: {exc}. Return "
                "types that the parent can import and rebuild.",
                type_name=qualified_type_name(exc),
            )
            raise failure from exc
        raised: Run | None = None
        if delivery.errors:
            if self._return_exceptions:
                for position, error in delivery.errors.items():
                    values[position] = error
            else:
                first = min(delivery.errors)
                raised = (indices[first], [], delivery.errors[first])
                indices, values = indices[:first], values[:first]
        runs: list[Run] = [(start, part, None) for start, part in _runs_of(indices, values)]
        if raised is not None:
            runs.append(raised)
        return runs

    def _count(self, delivery: Delivery) -> None:
        if self._bar is not None and not delivery.end:
            self._bar.update(len(delivery.indices))

    def collect(self) -> list[Any]:
        """Every result, in input order: ``map``. Raises the first error that arrives."""
        parts: dict[int, list[Any]] = {}
        try:
            while True:
                delivery = self._take()
                self._count(delivery)
                if delivery.end:
                    break
                for start, values, error in self._runs(delivery):
                    if error is not None:
                        raise error
                    parts[start] = values
                    self._consumed(len(values))
        finally:
            self._close()
        results: list[Any] = []
        for start in sorted(parts):
            results.extend(parts[start])
        return results

    def collect_unordered(self) -> list[Any]:
        """Every result, in the order they finished: ``map(ordered=False)``."""
        return list(itertools.chain.from_iterable(self.unordered()))

    def ordered(self) -> Generator[list[Any], None, None]:
        """Runs of results in input order, each as soon as it is next in line: ``imap``.

        Runs, not single results: ``ResultIterator`` flattens them in C, so a
        consumer pays no Python call per result.
        """
        waiting: dict[int, tuple[list[Any], BaseException | None]] = {}
        next_index = 0
        total: int | None = None
        try:
            while True:
                while next_index in waiting:
                    values, error = waiting.pop(next_index)
                    if error is not None:
                        raise error
                    self._consumed(len(values))
                    yield values
                    next_index += len(values)
                if total is not None and next_index >= total:
                    return
                delivery = self._take()
                self._count(delivery)
                if delivery.end:
                    total = len(delivery.indices)
                    continue
                for start, values, error in self._runs(delivery):
                    waiting[start] = (values, error)
        finally:
            self._close()

    def unordered(self) -> Iterator[list[Any]]:
        """Runs of results as they finish: ``imap_unordered``."""
        try:
            while True:
                delivery = self._take()
                self._count(delivery)
                if delivery.end:
                    return
                for _, values, error in self._runs(delivery):
                    if error is not None:
                        raise error
                    self._consumed(len(values))
                    yield values
        finally:
            self._close()

    def _close(self) -> None:
        """Release the bar, and cancel the job if the consumer left early."""
        if self.finished:
            return
        self.finished = True
        if self._bar is not None:
            self._bar.close()
        if self._job is not None and self._scheduler is not None:
            self._scheduler.cancel(self._job)
        if self._on_end is not None:
            self._on_end()


class ResultIterator(itertools.chain):  # type: ignore[type-arg]
    """The iterator that ``imap`` returns; dropping it cancels the rest of the job.

    A ``chain`` over the runs of results that the stream yields, so that each
    ``next()`` is a C call, not a Python one.
    """

    _stream: ResultStream
    _runs: Iterator[list[Any]]

    @classmethod
    def over(cls, stream: ResultStream, runs: Iterator[list[Any]]) -> ResultIterator:
        # from_iterable is a classmethod: at run time it builds a ``cls``.
        iterator = cast(ResultIterator, cls.from_iterable(runs))
        iterator._stream = stream
        iterator._runs = runs
        return iterator

    def close(self) -> None:
        """Stop early: the tasks not yet started are dropped."""
        close = getattr(self._runs, "close", None)
        if close is not None:
            close()
        self._stream._close()

    def __del__(self) -> None:
        if not self._stream.finished:
            self.close()


class TaskFuture(Future[Any]):
    """The ``Future`` that ``submit`` returns: a standard one, plus ``stop()``.

    ``cancel()`` keeps the standard's contract: it succeeds while the task
    waits for a worker and returns ``False`` once it runs. ``stop()`` also
    ends a task that runs, by killing its worker (the pool replaces it).
    """

    def __init__(self) -> None:
        super().__init__()
        self._stop_running: Callable[[], None] | None = None
        # Once done, let go of the job (and through it the function and its
        # arguments): a future kept by the caller must not keep them alive.
        self.add_done_callback(_forget_job)

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
        if running and self._stop_running is not None:
            self._stop_running()
        return super().cancel()


def _forget_job(future: Future[Any]) -> None:
    if isinstance(future, TaskFuture):
        future._stop_running = None


# The states of concurrent.futures.Future (its module keeps them private).
_RUNNING = "RUNNING"
_PENDING = "PENDING"


class FutureSink:
    """Resolves the ``Future`` of a ``submit`` call; runs in the scheduler thread."""

    def __init__(self, future: Future[Any], name: str) -> None:
        self.future = future
        self._name = name

    def start(self) -> bool:
        return self.future.set_running_or_notify_cancel()

    def deliver(self, delivery: Delivery) -> None:
        if delivery.end or self.future.done():
            return
        if delivery.failure is not None:
            self._resolve(self.future.set_exception, delivery.failure)
        elif delivery.errors:
            self._resolve(self.future.set_exception, delivery.errors[0])
        else:
            assert delivery.payload is not None
            try:
                result = delivery.payload.load()[0]
            except BaseException as exc:
                # Whatever unpickling raises, SystemExit included, fails this
                # future only: this is the scheduler thread (issue 10).
                self._resolve(self.future.set_exception, self._unpickling_failed(exc))
            else:
                self._resolve(self.future.set_result, result)

    def _resolve(self, settle: Callable[[Any], None], value: Any) -> None:
        # stop() may cancel the future between done() and here: its state wins.
        with contextlib.suppress(InvalidStateError):
            settle(value)

    def _unpickling_failed(self, exc: BaseException) -> SerializationError:
        failure = SerializationError(
            f"the result of {self._name} could not be unpickled in the parent: "
            f"{qualified_type_name(exc)}: {exc}. Return types that the parent can import "
            "and rebuild.",
            type_name=qualified_type_name(exc),
        )
        failure.__cause__ = exc
        return failure
