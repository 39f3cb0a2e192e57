"""The caller's side of a job: unpickle results, put them in order, raise errors.

Runs in the caller's thread (the one iterating ``imap`` or waiting in
``map``), so that unpickling results never slows the scheduler thread.
Imports ``_scheduler``, ``_jobs``, ``_stats`` and ``progress``.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any, cast

from corepool._jobs import (
    Aborted,
    Delivery,
    Finished,
    InputFailed,
    Job,
    Results,
    TaskFailed,
)
from corepool._scheduler import Scheduler
from corepool._stats import CallCounters
from corepool._transport.pickling import qualified_type_name
from corepool.errors import SerializationError
from corepool.progress import ProgressBar
from corepool.stats import CallStats

__all__ = ["TIMEOUT_ADVICE", "CallTimeout", "ResultIterator", "ResultStream", "in_order"]

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


def in_order(runs: Iterable[tuple[int, list[Any]]]) -> list[Any]:
    """The results of runs ``(first index, values)``, put back in input order."""
    results: list[Any] = []
    for _, values in sorted(runs, key=itemgetter(0)):
        results += values  # a copy in C: a third of a comprehension's time, measured
    return results


class ResultStream:
    """Receives one job's deliveries and hands the results out in the wanted order.

    With ``on_delivery`` (asyncio, see ``_aio``) it never blocks: ``on_delivery``
    is told of each delivery in the scheduler thread, and the runs it yields
    are empty where none had come yet; the consumer then waits to be told.
    """

    def __init__(
        self,
        *,
        name: str,
        return_exceptions: bool,
        timeout: float | None,
        progress_total: int | None,
        progress: bool,
        stats: CallCounters,
        timeout_advice: str = TIMEOUT_ADVICE,
        on_end: Callable[[], None] | None = None,
        on_delivery: Callable[[], None] | None = None,
    ) -> None:
        self._name = name
        self._timeout_advice = timeout_advice
        # Told when the job is over (ended, aborted, or cancelled by the
        # consumer leaving); it may hear so twice, from two threads.
        self._on_end = on_end
        self._on_delivery = on_delivery
        self._return_exceptions = return_exceptions
        self._timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._queue: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._bar = ProgressBar(name, progress_total) if progress else None
        self.stats = stats
        self._job: Job | None = None
        self._scheduler: Scheduler | None = None
        self.finished = False

    @property
    def deadline(self) -> float | None:
        """When the call's ``timeout`` passes (``time.monotonic()``), or ``None``."""
        return self._deadline

    def attach(self, job: Job, scheduler: Scheduler) -> None:
        self._job = job
        self._scheduler = scheduler

    # -- Sink, called in the scheduler thread --------------------------------

    def start(self) -> bool:
        return True

    def deliver(self, delivery: Delivery) -> None:
        self._queue.put(delivery)
        if self._on_delivery is not None:
            self._on_delivery()
        if isinstance(delivery, (Finished, Aborted)) and self._on_end is not None:
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
            raise self._timed_out() from None

    def _next(self) -> Delivery | None:
        """The next delivery; with ``on_delivery``, ``None`` at once if none has come."""
        if self._on_delivery is None:
            return self._take()
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise self._timed_out() from None
            return None

    def _timed_out(self) -> CallTimeout:
        return CallTimeout(
            f"{self._name} did not finish within timeout={self._timeout}s; "
            f"its remaining tasks were cancelled. {self._timeout_advice}"
        )

    def _consumed(self, tasks: int) -> None:
        job = self._job
        assert job is not None and self._scheduler is not None
        if job.window is not None and job.window.consumed(tasks):
            self._scheduler.resume(job)

    def _runs(self, delivery: Delivery) -> list[Run]:
        """Unpickle a delivery into runs ``(first index, values, error to raise)``."""
        if isinstance(delivery, Aborted):
            raise delivery.error
        if isinstance(delivery, InputFailed):
            return [(delivery.task_index, [], delivery.error)]
        if isinstance(delivery, TaskFailed):
            if self._return_exceptions:
                return [(delivery.task_index, [delivery.error], None)]
            return [(delivery.task_index, [], delivery.error)]
        assert isinstance(delivery, Results)
        indices = delivery.indices
        started = time.perf_counter()
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
        self.stats.received(time.perf_counter() - started)
        raised: Run | None = None
        if delivery.errors:
            if self._return_exceptions:
                for position, error in delivery.errors.items():
                    values[position] = error
            else:
                first = min(delivery.errors)
                raised = (indices[first], [], delivery.errors[first])
                indices, values = indices[:first], values[:first]
        # No empty runs: to an asyncio consumer, an empty run means "nothing yet".
        runs: list[Run] = [(start, part, None) for start, part in _runs_of(indices, values) if part]
        if raised is not None:
            runs.append(raised)
        return runs

    def _count(self, delivery: Delivery) -> None:
        if self._bar is None:
            return
        if isinstance(delivery, Results):
            self._bar.update(len(delivery.indices))
        elif isinstance(delivery, TaskFailed):
            self._bar.update(1)

    def collect(self) -> list[Any]:
        """Every result, in input order: ``map``. Raises the first error that arrives."""
        return in_order(self.arrivals())

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
                    yield values
                    # Resumed only once the consumer took the whole run.
                    self._consumed(len(values))
                    next_index += len(values)
                if total is not None and next_index >= total:
                    return
                delivery = self._next()
                if delivery is None:
                    yield []  # nothing has come yet (asyncio): wait for on_delivery
                    continue
                self._count(delivery)
                if isinstance(delivery, Finished):
                    total = delivery.total
                    continue
                for start, values, error in self._runs(delivery):
                    waiting[start] = (values, error)
        finally:
            self._close()

    def unordered(self) -> Iterator[list[Any]]:
        """Runs of results as they finish: ``imap_unordered``."""
        for _, values in self.arrivals():
            yield values

    def arrivals(self) -> Generator[tuple[int, list[Any]], None, None]:
        """Runs ``(first index, values)`` as they finish; raises the first error that arrives."""
        try:
            while True:
                delivery = self._next()
                if delivery is None:
                    yield 0, []  # nothing has come yet (asyncio): wait for on_delivery
                    continue
                self._count(delivery)
                if isinstance(delivery, Finished):
                    return
                for start, values, error in self._runs(delivery):
                    if error is not None:
                        raise error
                    yield start, values
                    self._consumed(len(values))  # the consumer took the whole run
        finally:
            self._close()

    def stop(self) -> None:
        """The consumer is gone (asyncio cancellation): drop the tasks not started, and
        stop those running (their workers are killed and replaced)."""
        self._close(stop_running=True)

    def _close(self, *, stop_running: bool = False) -> None:
        """Release the bar, and cancel the job if the consumer left early."""
        if self.finished:
            return
        self.finished = True
        if self._bar is not None:
            self._bar.close(self.stats.snapshot().summary())
        if self._job is not None and self._scheduler is not None:
            self._scheduler.cancel(self._job, stop_running=stop_running)
        # The job refers to this stream (its sink): let go of it, and of the
        # scheduler, so that neither waits for the garbage collector.
        self._job = self._scheduler = None
        if self._on_end is not None:
            self._on_end()


class ResultIterator(itertools.chain):  # type: ignore[type-arg]
    """The iterator that ``imap`` returns; dropping it cancels the rest of the job.

    A ``chain`` over the runs of results that the stream yields, so that each
    ``next()`` is a C call, not a Python one.

    Example:
        >>> results = pool.imap(resize, paths)
        >>> for thumb in results:
        ...     save(thumb)
        >>> print(results.stats())
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

    def stats(self) -> CallStats:
        """This call's figures so far (see ``corepool.CallStats``); final once it is over."""
        return self._stream.stats.snapshot()

    def close(self) -> None:
        """Stop early: the tasks not yet started are dropped."""
        close = getattr(self._runs, "close", None)
        if close is not None:
            close()
        self._stream._close()

    def __del__(self) -> None:
        if not self._stream.finished:
            self.close()
