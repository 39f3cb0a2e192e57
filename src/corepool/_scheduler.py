"""The scheduler: one thread per pool that feeds workers and routes results.

Runs in the parent. Imports ``_backends``, ``_chunking``, ``_protocol``,
``_transport``, ``errors`` and ``options``; never ``pool``.

::

    caller thread                 scheduler thread                       backend (worker k)
    -------------                 ----------------                       ------------------
    map/imap/submit --Job-->  incoming deque + wakeup pipe
                              pull a chunk from the job's input  ----->  run the chunk's tasks,
                              (only while the job is fewer than          writing each task's
                               `lookahead` chunks ahead of the           position to its status
                               consumer: backpressure)                   slot
                              backend.wait(connections, pidfds,  <-----  ChunkDone (pickled results
                                           wakeup pipe)                  + timings), or death
    sink <-- Delivery ------  ChunkFinished -> Delivery
                              WorkerLost -> WorkerDied for the running
                                 task, the rest of its chunks requeued

The thread never sleeps and never polls: it blocks in ``backend.wait`` until
a worker answers, a worker ends, or a caller writes to the wakeup pipe. It
never unpickles results either: the caller does, in its own thread, so the
scheduler stays free to keep workers busy.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import itertools
import logging
import os
import reprlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from corepool._backends.base import (
    Backend,
    Chunk,
    ChunkFinished,
    Event,
    InitializerFailed,
    WorkerLost,
)
from corepool._chunking import Chunker
from corepool._protocol import CallMode, ErrorSite, RemoteError
from corepool._transport.buffers import Payload
from corepool._transport.pickling import (
    describe_unpicklable,
    dumps,
    find_unpicklable,
    loads,
    qualified_type_name,
)
from corepool.errors import (
    InitializerError,
    PoolClosed,
    PoolError,
    RemoteTraceback,
    SerializationError,
    TaskTimeout,
    WorkerDied,
)

__all__ = ["Delivery", "Job", "Scheduler", "Sink", "task_error"]

logger = logging.getLogger(__name__)

# A chunk lost this many times with no task running (the worker died while
# decoding it, say) is failed rather than sent out again.
MAX_SILENT_LOSSES = 3

_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60


class Delivery(NamedTuple):
    """What the scheduler hands to a job's sink, in the scheduler thread.

    Exactly one of three shapes: results (``payload`` set), a failure of the
    tasks at ``indices`` (``failure`` set), or the end of the job (``end``).
    A failure is a task's (returned in its place with ``return_exceptions``),
    ``fatal`` (raised when the consumer reaches it, whatever
    ``return_exceptions`` says: the input iterable raised) or ``abort`` (raised
    at once: the pool stopped, or the job cannot run at all).
    """

    indices: Sequence[int]
    payload: Payload | None = None  # the results, one per index
    errors: dict[int, BaseException] | None = None  # position in indices -> error
    failure: BaseException | None = None
    fatal: bool = False
    abort: bool = False
    end: bool = False  # the job is over; indices is range(total)


class Sink(Protocol):
    """Where a job's deliveries go: a result stream or a future."""

    def start(self) -> bool:
        """Called before the job's first chunk is made; ``False`` skips the job."""
        ...

    def deliver(self, delivery: Delivery) -> None:
        """Take one delivery; called in the scheduler thread, so it must be quick."""


_job_ids = itertools.count()


class Job:
    """One call (map, imap, submit, ...) as the scheduler sees it."""

    def __init__(
        self,
        *,
        name: str,
        fn: Callable[..., Any],
        mode: CallMode,
        source: Iterator[Any],
        chunker: Chunker,
        sink: Sink,
        lookahead: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (),
        exits_are_errors: bool = False,
    ) -> None:
        self.id = next(_job_ids)
        self.name = name
        self.fn = fn
        self.mode = mode
        self.source = source
        self.chunker = chunker
        self.sink = sink
        self.lookahead = lookahead  # max chunks of tasks ahead of the consumer; None: no bound
        self.task_timeout = task_timeout
        self.retries = retries
        self.retry_on = retry_on
        # SystemExit / KeyboardInterrupt raised by a task: its error (True, the
        # concurrent.futures contract) or the end of its worker (WorkerDied).
        self.exits_are_errors = exits_are_errors
        self.attempts: dict[int, int] = {}  # task index -> attempts so far, once retried
        self.stop_running = False  # cancelled, and its running tasks are to be killed
        self.pulled = 0  # tasks taken from source so far
        self.consumed = 0  # tasks the consumer has taken (written by the caller's thread)
        self.stalled = False  # the scheduler waits for the consumer (backpressure)
        self.queued = False  # in the scheduler's ready queue
        self.started = False
        self.exhausted = False
        self.cancelled = False
        self.in_flight = 0
        self.requeued: collections.deque[Chunk] = collections.deque()


class _State(enum.Enum):
    RUNNING = "running"
    CLOSING = "closing"
    TERMINATING = "terminating"
    STOPPED = "stopped"


class Scheduler:
    """Owns the scheduler thread and, through it, the backend."""

    def __init__(self, backend: Backend, *, name: str) -> None:
        self._backend = backend
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        # Guards the wakeup pipe's closing: once closed, its numbers may be
        # reused by anyone (a ProcessPoolExecutor's pipe, say), and a stray
        # wake() must not write into that.
        self._wake_lock = threading.Lock()
        self._wake_closed = False
        self._incoming: collections.deque[Job] = collections.deque()
        self._cancelled: collections.deque[Job] = collections.deque()
        self._resumed: collections.deque[Job] = collections.deque()
        # Jobs that may make a chunk now, served round-robin: the next chunk
        # costs the same with one job pending or a million.
        self._ready: collections.deque[Job] = collections.deque()
        # A byte is in the wakeup pipe: further wake() calls need not write.
        self._wake_pending = False
        self._jobs: dict[int, Job] = {}
        self._state = _State.RUNNING
        self._terminated = False
        self._state_lock = threading.Lock()
        self._broken: PoolError | None = None
        self._chunk_ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name=f"corepool-{name}", daemon=True)
        self._thread.start()

    # -- called from any thread ---------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises ``PoolClosed`` (or why the pool broke) when it cannot run."""
        with self._state_lock:
            if self._broken is not None:
                raise type(self._broken)(str(self._broken)) from self._broken.__cause__
            if self._state is not _State.RUNNING:
                how = "terminated" if self._terminated else "closed"
                raise PoolClosed(
                    f"cannot start {job.name}: the pool was {how}. "
                    "Create a new Pool, or use corepool.map() for a one-off call."
                )
            self._incoming.append(job)
        self.wake()

    def cancel(self, job: Job, *, stop_running: bool = False) -> None:
        """Stop making chunks for ``job`` and drop what it has yet to deliver.

        With ``stop_running``, also kill (and replace) the workers that are
        running its tasks right now.
        """
        job.cancelled = True
        job.stop_running = job.stop_running or stop_running
        self._cancelled.append(job)
        self.wake()

    def resume(self, job: Job) -> None:
        """The consumer of a stalled ``job`` has caught up: make chunks for it again."""
        self._resumed.append(job)
        self.wake()

    def wake(self) -> None:
        """Wake the scheduler thread; one system call per wake-up, however many callers ask."""
        if self._wake_pending:  # the scheduler clears it before it reads its queues
            return
        with self._wake_lock:
            if self._wake_closed:
                return
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError):  # full: the scheduler is awake already
                os.write(self._wake_w, b"\0")

    def close(self) -> None:
        """Finish every queued job, then stop the workers; idempotent."""
        with self._state_lock:
            if self._state is _State.RUNNING:
                self._state = _State.CLOSING
        self.wake()

    def terminate(self) -> None:
        """Stop every worker now; unfinished jobs fail with ``PoolClosed``."""
        with self._state_lock:
            if self._state in (_State.RUNNING, _State.CLOSING):
                self._state = _State.TERMINATING
                self._terminated = True
        self.wake()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def is_running(self) -> bool:
        return self._state is _State.RUNNING and self._broken is None

    @property
    def is_closing(self) -> bool:
        """``close()`` was called and the queued work is still being finished."""
        return self._state is _State.CLOSING

    # -- the scheduler thread -----------------------------------------------

    def _run(self) -> None:
        graceful = False
        try:
            self._backend.start()
            while True:
                self._accept()
                if self._state is _State.TERMINATING:
                    break
                self._dispatch()
                if self._state is _State.CLOSING and not self._jobs and self._backend.is_idle():
                    graceful = True
                    break
                events, woken = self._backend.wait(self._wake_r, None)
                if woken:
                    self._wake_pending = False
                    os.read(self._wake_r, 4096)
                for event in events:
                    self._handle(event)
        except BaseException as exc:
            self._break(exc)
        finally:
            self._stop(graceful)

    def _break(self, exc: BaseException) -> None:
        """Record why the pool cannot go on; every job then fails with it."""
        if isinstance(exc, PoolError):
            self._broken = exc
        else:
            logger.exception("corepool's scheduler thread failed")
            broken = PoolError(
                f"the pool's scheduler failed with {qualified_type_name(exc)}: {exc}. "
                "This is a bug in corepool: please report it with the traceback."
            )
            broken.__cause__ = exc
            self._broken = broken

    def _stop(self, graceful: bool) -> None:
        with self._state_lock:
            self._state = _State.STOPPED
        reason = self._broken or PoolClosed(
            "the pool was terminated before this call finished"
            if self._terminated
            else "the pool stopped before this call finished"
        )
        for job in [*self._jobs.values(), *self._incoming]:
            job.sink.deliver(Delivery((job.pulled,), failure=reason, abort=True))
        self._jobs.clear()
        self._incoming.clear()
        try:
            self._backend.shutdown(graceful=graceful)
        finally:
            with self._wake_lock:
                self._wake_closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _accept(self) -> None:
        while self._incoming:
            job = self._incoming.popleft()
            self._jobs[job.id] = job
            self._make_ready(job)
        while self._resumed:
            self._make_ready(self._resumed.popleft())
        while self._cancelled:
            job = self._cancelled.popleft()
            job.requeued.clear()
            if job.stop_running and job.in_flight:
                self._backend.abort(job.id)
            if job.in_flight == 0:
                self._drop(job)

    def _dispatch(self) -> None:
        while True:
            free = self._backend.free_workers()
            if not free:
                return
            for worker_id in free:
                chunk = self._next_chunk(self._backend.task_budget(worker_id))
                if chunk is None:
                    return
                self._send(worker_id, chunk)

    def _next_chunk(self, budget: int | None) -> Chunk | None:
        """The next chunk of the first ready job; the job goes to the back of the line."""
        while self._ready:
            job = self._ready.popleft()
            job.queued = False
            chunk = self._chunk_of(job, budget)
            if job.requeued or not (job.exhausted or job.stalled):
                self._make_ready(job)
            if chunk is not None:
                return chunk
        return None

    def _chunk_of(self, job: Job, budget: int | None) -> Chunk | None:
        """A chunk to re-run, else one pulled from the input; ``None`` if there is none now."""
        if job.cancelled:
            return None
        if job.requeued:
            chunk = job.requeued.popleft()
            if budget is not None and len(chunk) > budget:
                job.requeued.appendleft(self._split(chunk, budget))
            return chunk
        if not job.exhausted and self._may_pull(job):
            return self._pull(job, budget)
        return None

    def _make_ready(self, job: Job) -> None:
        if not (job.queued or job.cancelled):
            job.queued = True
            self._ready.append(job)

    def _requeue(self, job: Job, chunk: Chunk) -> None:
        """Run ``chunk`` again, ahead of the job's new chunks."""
        job.requeued.appendleft(chunk)
        self._make_ready(job)

    def _may_pull(self, job: Job) -> bool:
        if not job.started:
            job.started = True
            if not job.sink.start():
                job.exhausted = job.cancelled = True
                self._drop(job)
                return False
        if job.lookahead is None:
            return True
        limit = job.lookahead * job.chunker.next_size(job.pulled)
        if job.pulled - job.consumed < limit:
            return True
        # Re-check after raising the flag: the consumer may have moved on in
        # between, and it only wakes us when it sees the flag up.
        job.stalled = True
        if job.pulled - job.consumed < limit:
            job.stalled = False
            return True
        return False

    def _pull(self, job: Job, budget: int | None) -> Chunk | None:
        size = job.chunker.next_size(job.pulled)
        if budget is not None:
            size = min(size, budget)
        items: list[Any] = []
        failure: Exception | None = None
        try:
            # extend() keeps what it took before the input raised.
            items.extend(itertools.islice(job.source, size))
        except Exception as exc:
            failure = exc
        if failure is not None or len(items) < size:
            job.exhausted = True
        start = job.pulled
        job.pulled += len(items)
        if failure is not None:
            note = f"raised by the input iterable of {job.name} after {job.pulled} items"
            _add_note(failure, note)
            job.sink.deliver(Delivery((job.pulled,), failure=failure, fatal=True))
        if not items:
            self._finish_if_done(job)
            return None
        return Chunk(
            next(self._chunk_ids),
            job.id,
            job.fn,
            job.mode,
            range(start, job.pulled),
            items,
            1 if job.task_timeout is not None else job.chunker.stride(),
            job.task_timeout,
            job.exits_are_errors,
        )

    def _split(self, chunk: Chunk, size: int) -> Chunk:
        """Cut ``chunk`` down to its first ``size`` tasks; return the rest as a new chunk."""
        rest = chunk.derive(
            next(self._chunk_ids), chunk.indices[size:], chunk.items[size:], chunk.stride
        )
        chunk.indices = chunk.indices[:size]
        chunk.items = chunk.items[:size]
        return rest

    def _send(self, worker_id: int, chunk: Chunk) -> None:
        job = self._jobs[chunk.job_id]
        try:
            self._backend.send(worker_id, chunk)
        except Exception as exc:
            self._fail_unpicklable(job, chunk, exc)
            return
        job.in_flight += 1

    def _fail_unpicklable(self, job: Job, chunk: Chunk, exc: Exception) -> None:
        """Some argument of ``chunk`` would not pickle: fail those tasks, requeue the rest."""
        keep: list[int] = []
        for position, item in enumerate(chunk.items):
            try:
                dumps(item)
            except Exception as error:
                index = chunk.indices[position]
                failure = SerializationError(
                    f"the arguments of task {index} of {job.name} could not be pickled to "
                    f"send them to a worker: {qualified_type_name(error)}: {error}"
                    f"{_where_unpicklable(item, job.mode)}. Pass plain data (or create the "
                    "object inside the task or the pool's initializer) instead.",
                    type_name=_culprit_type(item, job.mode),
                )
                failure.__cause__ = error
                job.sink.deliver(Delivery((index,), failure=failure))
            else:
                keep.append(position)
        if len(keep) == len(chunk.items):  # no single item is at fault: the function is
            culprit = find_unpicklable(job.fn, "the function")
            failure = SerializationError(
                f"the function of {job.name} could not be pickled: "
                f"{qualified_type_name(exc)}: {exc}"
                f"{describe_unpicklable(job.fn, 'the function')}. Define it at module "
                "level, and create what it needs (locks, connections, open files) inside "
                "it or in the pool's initializer.",
                type_name=qualified_type_name(culprit[1] if culprit else job.fn),
            )
            failure.__cause__ = exc
            job.sink.deliver(Delivery(chunk.indices, failure=failure, abort=True))
            job.cancelled = True
            self._cancelled.append(job)
            return
        if keep:
            chunk.indices = [chunk.indices[p] for p in keep]
            chunk.items = [chunk.items[p] for p in keep]
            self._requeue(job, chunk)
        self._finish_if_done(job)

    def _drop(self, job: Job) -> None:
        """Forget a job that is over; the backend lets go of what it kept for it."""
        if self._jobs.pop(job.id, None) is not None:
            self._backend.release(job.id)

    def _finish_if_done(self, job: Job) -> None:
        if job.cancelled:
            if job.in_flight == 0:
                self._drop(job)
        elif job.exhausted and job.in_flight == 0 and not job.requeued:
            job.sink.deliver(Delivery(range(job.pulled), end=True))
            self._drop(job)

    def _handle(self, event: Event) -> None:
        if isinstance(event, ChunkFinished):
            self._finished(event)
        elif isinstance(event, WorkerLost):
            self._lost(event)
        else:
            self._initializer_failed(event)

    def _finished(self, event: ChunkFinished) -> None:
        chunk = event.chunk
        job = self._jobs.get(chunk.job_id)
        if job is None:
            return
        job.in_flight -= 1
        job.chunker.observe(len(chunk), event.busy_s)
        if not job.cancelled and _undecodable(event) and len(chunk) > 1:
            # One bad argument spoils the whole chunk's decoding: run each task
            # alone to learn which one it was.
            for position in reversed(range(len(chunk))):
                self._requeue(job, self._subset(chunk, [position]))
        elif not job.cancelled:
            indices: Sequence[int] = chunk.indices
            payload, errors = event.payload, None
            if event.errors:
                errors = {
                    position: task_error(job.name, chunk, position, remote)
                    for position, remote in event.errors.items()
                }
                retried = [
                    position
                    for position, error in errors.items()
                    if isinstance(error, job.retry_on) and self._retry(job, chunk, position)
                ]
                if retried:
                    indices, payload, errors = _without(indices, payload, errors, retried)
                for position, error in errors.items():
                    attempts = job.attempts.get(indices[position], 1)
                    if attempts > 1:
                        _add_note(error, f"the task was tried {attempts} times")
            if indices:
                job.sink.deliver(Delivery(indices, payload=payload, errors=errors))
        self._finish_if_done(job)

    def _subset(self, chunk: Chunk, positions: Sequence[int]) -> Chunk:
        """A new chunk of the tasks of ``chunk`` at ``positions``.

        A lone task gets stride 1: were it to kill its worker again, it must be
        blamed, not split once more (which looped forever).
        """
        return chunk.derive(
            next(self._chunk_ids),
            [chunk.indices[p] for p in positions],
            [chunk.items[p] for p in positions],
            chunk.stride if len(positions) > 1 else 1,
        )

    def _lost(self, event: WorkerLost) -> None:
        # Last first: each requeue goes to the front, so the chunks keep their order.
        for number, chunk in reversed(list(enumerate(event.chunks))):
            job = self._jobs.get(chunk.job_id)
            if job is None:
                continue
            job.in_flight -= 1
            if job.cancelled:
                pass
            elif number == 0:
                self._recover(job, chunk, event.position, event)
            else:
                # Queued behind the one that was running: it never started, so
                # the loss is not its fault and does not count against it.
                self._requeue(job, chunk)
            self._finish_if_done(job)

    def _recover(self, job: Job, chunk: Chunk, position: int | None, event: WorkerLost) -> None:
        """Fail the task that was running when the worker died; run its neighbours again."""
        chunk.attempts += 1
        if position is None and chunk.attempts < MAX_SILENT_LOSSES:
            self._requeue(job, chunk)
            return
        if position is not None and chunk.stride > 1:
            # The worker died somewhere in a stride of tiny tasks: run them
            # again one by one; the one at fault will name itself.
            suspects = range(position, min(position + chunk.stride, len(chunk)))
            rest = [p for p in range(len(chunk)) if p not in suspects]
            if rest:
                self._requeue(job, self._subset(chunk, rest))
            for suspect in reversed(suspects):
                self._requeue(job, self._subset(chunk, [suspect]))
            return
        dead = range(len(chunk)) if position is None else (position,)
        if position is not None and len(chunk) > 1:
            rest = [p for p in range(len(chunk)) if p != position]
            self._requeue(job, self._subset(chunk, rest))
        for failed in dead:
            if self._retry(job, chunk, failed):
                continue
            index = chunk.indices[failed]
            attempts = job.attempts.get(index, 1)
            error: PoolError
            if event.timed_out:
                error = TaskTimeout(
                    f"task {index} of {job.name} passed task_timeout={chunk.timeout_s}s; "
                    f"worker {event.worker_id} was stopped and replaced."
                    + (f" The task was tried {attempts} times." if attempts > 1 else ""),
                    task_index=index,
                    timeout=chunk.timeout_s or 0.0,
                    attempts=attempts,
                )
            else:
                error = WorkerDied(
                    worker_id=event.worker_id,
                    pid=event.pid,
                    exitcode=event.exitcode,
                    task_index=index,
                    job=job.name,
                    replaced=self._state is _State.RUNNING,
                    attempts=attempts,
                )
            job.sink.deliver(Delivery((index,), failure=error))

    def _retry(self, job: Job, chunk: Chunk, position: int) -> bool:
        """Queue the task at ``position`` again if ``retries`` allow; say whether it was."""
        index = chunk.indices[position]
        attempts = job.attempts.get(index, 1)
        if attempts > job.retries:
            return False
        job.attempts[index] = attempts + 1
        self._requeue(job, self._subset(chunk, [position]))
        logger.debug("task %d of %s: attempt %d", index, job.name, attempts + 1)
        return True

    def _initializer_failed(self, event: InitializerFailed) -> None:
        remote = event.error
        error = InitializerError(
            f"the pool's initializer raised {remote.type_name}: {remote.message} "
            f"(in worker {event.worker_id}). No task can run: fix the initializer "
            "and create a new pool."
        )
        error.__cause__ = RemoteTraceback(remote.traceback_text)
        raise error


def _where_unpicklable(item: Any, mode: CallMode) -> str:
    """Where in a task's arguments pickling fails, as ``describe_unpicklable`` says it."""
    if mode is CallMode.ITEM:
        return describe_unpicklable(item, "the item")
    if mode is CallMode.STAR:
        return describe_unpicklable(tuple(item), "args")
    args, kwargs = item
    return describe_unpicklable(tuple(args), "args") or describe_unpicklable(kwargs, "kwargs")


def _culprit_type(item: Any, mode: CallMode) -> str:
    """The type name of what would not pickle, looking inside argument tuples."""
    if mode is CallMode.ITEM:
        return qualified_type_name(item)
    args = item if mode is CallMode.STAR else (*item[0], *item[1].values())
    for arg in args:
        try:
            dumps(arg)
        except Exception:
            return qualified_type_name(arg)
    return qualified_type_name(item)


def _without(
    indices: Sequence[int],
    payload: Payload,
    errors: dict[int, BaseException],
    dropped: Sequence[int],
) -> tuple[list[int], Payload, dict[int, BaseException]]:
    """The results of a chunk less the tasks at ``dropped`` (they will be tried again).

    Unpickles and pickles the results again: only done when a task is retried.
    """
    keep = [p for p in range(len(indices)) if p not in set(dropped)]
    values = payload.load()
    renumber = {old: new for new, old in enumerate(keep)}
    return (
        [indices[p] for p in keep],
        Payload.of([values[p] for p in keep]),
        {renumber[p]: error for p, error in errors.items() if p in renumber},
    )


def _undecodable(event: ChunkFinished) -> bool:
    errors = event.errors
    return (
        errors is not None
        and len(errors) == len(event.chunk)
        and all(error.site is ErrorSite.ARGUMENTS for error in errors.values())
    )


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(note)


def task_error(job_name: str, chunk: Chunk, position: int, remote: RemoteError) -> BaseException:
    """Turn a worker's ``RemoteError`` into the exception the caller sees."""
    index = chunk.indices[position]
    where = f"task {index} of {job_name}"
    if remote.site is ErrorSite.TASK and remote.exception is not None:
        try:
            exc: BaseException = loads(remote.exception)
        except Exception as failure:
            exc = SerializationError(
                f"{where} raised {remote.type_name}: {remote.message}, which could not be "
                f"unpickled in the parent ({qualified_type_name(failure)}: {failure}). Give "
                "the exception class an __init__ that accepts its args, or a __reduce__.",
                type_name=remote.type_name,
                traceback_text=remote.traceback_text,
            )
        else:
            _add_note(exc, f"raised by {where}, item {_short_repr.repr(chunk.items[position])}")
    elif remote.site is ErrorSite.TASK:
        exc = SerializationError(
            f"{where} raised {remote.type_name}: {remote.message}, which could not be sent "
            f"back to the parent: {remote.problem}. Keep only plain data in the exception, "
            "and give its class an __init__ that accepts its args (or a __reduce__).",
            type_name=remote.type_name,
            traceback_text=remote.traceback_text,
        )
    elif remote.site is ErrorSite.RESULT:
        exc = SerializationError(
            f"{where}: {remote.message}",
            type_name=remote.type_name,
            traceback_text=remote.traceback_text,
        )
    else:
        exc = SerializationError(
            f"{where} could not start: its function or arguments failed to unpickle in the "
            f"worker with {remote.type_name}: {remote.message}",
            type_name=remote.type_name,
            traceback_text=remote.traceback_text,
        )
    exc.__cause__ = RemoteTraceback(remote.traceback_text)
    return exc
