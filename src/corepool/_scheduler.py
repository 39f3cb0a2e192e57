"""The scheduler: one thread per pool that feeds workers and routes results.

Runs in the parent. Imports ``_jobs``, ``_stats``, ``_recovery``, ``_failures``,
``_backends``, ``_chunking``, ``_protocol``, ``_transport`` and ``errors``;
never ``pool``.

::

    caller thread                 scheduler thread                       backend (worker k)
    -------------                 ----------------                       ------------------
    map/imap/submit --Job-->  incoming deque + wakeup pipe
                              ready queue of jobs, round-robin:
                              take a chunk from the next job's input ->  run the chunk's tasks,
                              (a lazy job only while its Window has      writing each task's
                               room: backpressure, in bytes and tasks)   position to its status
                              backend.wait(connections, pidfds,  <-----  slot; ChunkDone (results
                                           wakeup pipe, deadline)        + timings), or death
    sink <-- Results -------  ChunkFinished
    sink <-- TaskFailed ----  WorkerLost -> plan_recovery: the running task
                                 is blamed, its neighbours run again

The thread never sleeps and never polls: it blocks in ``backend.wait`` until
a worker answers, a worker ends, a task's deadline comes, or a caller writes
to the wakeup pipe. It never unpickles a call's results either: the caller
does, in its own thread, so the scheduler stays free to keep workers busy.
Making the next chunk costs the same with one job pending or a million:
jobs that may make one wait in a ready queue, never found by a scan.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import threading
import time
from collections.abc import Sequence

from corepool._backends.base import (
    Backend,
    Chunk,
    ChunkFinished,
    Event,
    WorkerLost,
    WorkerReady,
)
from corepool._failures import (
    add_note,
    death_error,
    initializer_error,
    task_error,
    unpicklable_arguments,
    unpicklable_function,
)
from corepool._jobs import (
    Aborted,
    Finished,
    InputFailed,
    Job,
    JobState,
    Results,
    TaskFailed,
)
from corepool._protocol import CallMode
from corepool._recovery import plan_recovery, results_without, undecodable
from corepool._sharing import SharingLedger
from corepool._stats import PoolCounters
from corepool._transport.pickling import dumps, qualified_type_name
from corepool._wakeup import WakeupPipe
from corepool.errors import PoolClosed, PoolError

__all__ = ["Scheduler"]

logger = logging.getLogger(__name__)


class _State(enum.Enum):
    RUNNING = "running"
    CLOSING = "closing"
    TERMINATING = "terminating"
    STOPPED = "stopped"


class Scheduler:
    """Owns the scheduler thread and, through it, the backend."""

    def __init__(self, backend: Backend, *, name: str, stats: PoolCounters) -> None:
        self._backend = backend
        self._stats = stats  # counted here, in the scheduler thread only
        self._wakeup = WakeupPipe()
        # What callers hand the scheduler thread, which alone touches jobs.
        self._incoming: collections.deque[Job] = collections.deque()
        self._resumed: collections.deque[Job] = collections.deque()
        self._cancelled: collections.deque[tuple[Job, bool]] = collections.deque()
        self._stops: collections.deque[tuple[Job, int]] = collections.deque()
        # Callers waiting for one turn of dispatch (see settle()).
        self._settling: collections.deque[threading.Event] = collections.deque()
        self._jobs: dict[int, Job] = {}
        self.sharing = SharingLedger()  # callers hold keys through it (Submits.sharing_copies)
        # Jobs that may make a chunk now, served round-robin.
        self._ready: collections.deque[Job] = collections.deque()
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

        ``stop_running``: also kill (and replace) the workers running its tasks
        (asyncio cancellation); otherwise they finish, unheard.
        """
        self._cancelled.append((job, stop_running))
        self.wake()

    def stop_task(self, job: Job, index: int) -> None:
        """Kill (and replace) the worker running task ``index`` of ``job``, if it runs now.

        The task reports nothing more: its future was cancelled by the caller.
        """
        self._stops.append((job, index))
        self.wake()

    def resume(self, job: Job) -> None:
        """``job`` waited for its consumer or its feed, which has moved on: go on with it."""
        self._resumed.append(job)
        self.wake()

    def settle(self) -> None:
        """Return once the workers have taken what they can take now.

        After this, the calls still queued are those no worker would start
        yet (``shutdown(cancel_futures=True)`` cancels them), even when the
        pool is still starting its workers. Returns at once if the scheduler
        has stopped.
        """
        settled = threading.Event()
        with self._state_lock:
            if self._state is _State.STOPPED:
                return
            self._settling.append(settled)
        self.wake()
        settled.wait()

    def wake(self) -> None:
        """Wake the scheduler thread; one system call per wake-up, however many callers ask."""
        self._wakeup.ring()

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

    # -- the scheduler thread: its loop -------------------------------------

    def _run(self) -> None:
        graceful = False
        try:
            self._backend.start()
            while True:
                self._accept()
                self._stats.note_active(bool(self._jobs))
                if self._state is _State.TERMINATING:
                    break
                self._dispatch()
                while self._settling:
                    self._settling.popleft().set()
                if self._state is _State.CLOSING and not self._jobs and self._backend.is_idle():
                    graceful = True
                    break
                self._wait_and_handle()
        except BaseException as exc:
            self._break(exc)
        finally:
            self._stop(graceful)

    def _wait_and_handle(self) -> None:
        """Block until something happens, and handle it.

        A method of its own so that the events (and the inputs and results
        they hold) are let go of when it returns, not kept by the loop until
        the next wake-up.
        """
        events, woken = self._backend.wait(self._wakeup.fileno(), None)
        if woken:
            self._wakeup.drain()
        for event in events:
            self._handle(event)

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
            while self._settling:
                self._settling.popleft().set()
        reason = self._broken or PoolClosed(
            "the pool was terminated before this call finished"
            if self._terminated
            else "the pool stopped before this call finished"
        )
        for job in [*self._jobs.values(), *self._incoming]:
            job.sink.deliver(Aborted(reason))
            job.stats.end()
        self._stats.stop()
        self._jobs.clear()
        self._incoming.clear()
        try:
            self._backend.shutdown(graceful=graceful)
        finally:
            self._wakeup.close()

    def _accept(self) -> None:
        """Take in what callers handed over since the last turn of the loop."""
        for key in self.sharing.apply_requests():
            self._backend.release(key)
        while self._incoming:
            job = self._incoming.popleft()
            self._jobs[job.id] = job
            self.sharing.start(job.sharing)
            self._make_ready(job)
        while self._resumed:
            job = self._resumed.popleft()
            if job.state is JobState.WAITING:
                job.state = JobState.PULLING
            self._make_ready(job)
        while self._cancelled:
            job, stop_running = self._cancelled.popleft()
            if stop_running and job.id in self._jobs:
                self._backend.stop_job(job.id)
            self._cancel(job)
        while self._stops:
            job, index = self._stops.popleft()
            if job.id in self._jobs:
                job.stopped.add(index)
                self._backend.stop_task(job.id, index)

    # -- making and sending chunks -------------------------------------------

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
            if job.has_work:
                self._make_ready(job)
            if chunk is not None:
                return chunk
        return None

    def _chunk_of(self, job: Job, budget: int | None) -> Chunk | None:
        """A chunk to run again, else one taken from the input; ``None`` if there is none now."""
        if job.state is JobState.NEW:
            job.state = JobState.PULLING if job.sink.start() else JobState.CANCELLED
            self._settle(job)
        if job.state is JobState.CANCELLED:
            return None
        if job.requeued:
            chunk = job.requeued.popleft()
            if budget is not None and len(chunk) > budget:
                job.requeued.appendleft(chunk.split_off(next(self._chunk_ids), budget))
            return chunk
        if job.state is JobState.PULLING:
            return self._pull(job, budget)
        return None

    def _make_ready(self, job: Job) -> None:
        if job.has_work and not job.queued:
            job.queued = True
            self._ready.append(job)

    def _requeue(self, job: Job, chunk: Chunk) -> None:
        """Run ``chunk`` again, ahead of the job's new chunks, less the tasks stopped meanwhile."""
        if job.stopped:
            kept = [p for p, index in enumerate(chunk.indices) if index not in job.stopped]
            if not kept:
                return
            if len(kept) < len(chunk):
                chunk = chunk.subset(next(self._chunk_ids), kept)
        job.requeued.appendleft(chunk)
        self._make_ready(job)

    def _pull(self, job: Job, budget: int | None) -> Chunk | None:
        window = job.window
        if window is not None and not window.admits():
            job.state = JobState.WAITING  # until the consumer resumes it
            return None
        size = job.chunker.next_size(job.pulled)
        if budget is not None:
            size = min(size, budget)
        if window is not None:
            # Two chunks per worker fit in the window: with one chunk filling
            # it, workers would take turns, idle while the consumer catches up.
            size = min(size, window.room(parts=2 * self._backend.workers))
        items, failure = job.source.take(size)
        start = job.pulled
        job.pulled += len(items)
        if window is not None:
            window.pulled(len(items))
        if failure is not None:
            job.state = JobState.DRAINED
            note = f"raised by the input iterable of {job.name} after {job.pulled} items"
            add_note(failure, note)
            job.sink.deliver(InputFailed(job.pulled, failure))
        elif len(items) < size:
            feed = job.feed
            if feed is None or not feed.is_open or feed.close_if_empty():
                job.state = JobState.DRAINED
        if not items:
            self._settle(job)
            return None
        chunk = Chunk(
            next(self._chunk_ids),
            job.id,
            job.fn,
            job.mode,
            range(start, job.pulled),
            items,
            self._stride(job),
            job.task_timeout,
            job.exits_are_errors,
            job.sharing,
        )
        chunk.fresh = True
        return chunk

    @staticmethod
    def _stride(job: Job) -> int:
        """Tasks per status write: 1 for timed tasks, and for calls (``submit``), which
        workers always track one by one, so that a crash or ``stop()`` names the very call."""
        if job.task_timeout is not None or job.mode is CallMode.CALL:
            return 1
        return job.chunker.stride()

    def _send(self, worker_id: int, chunk: Chunk) -> None:
        job = self._jobs[chunk.job_id]
        started = time.perf_counter()
        try:
            nbytes = self._backend.send(worker_id, chunk)
        except Exception as exc:
            self._fail_unpicklable(job, chunk, exc)
            return
        job.stats.sent(chunk, time.perf_counter() - started)
        job.in_flight += 1
        if chunk.fresh:
            chunk.fresh = False
            if job.window is not None:
                job.window.measure(len(chunk), nbytes)

    def _fail_unpicklable(self, job: Job, chunk: Chunk, exc: Exception) -> None:
        """Some argument of ``chunk`` would not pickle: fail those tasks, requeue the rest."""
        keep: list[int] = []
        for position, item in enumerate(chunk.items):
            try:
                dumps(item)
            except Exception as error:
                index = chunk.indices[position]
                job.sink.deliver(
                    TaskFailed(
                        index,
                        unpicklable_arguments(
                            job.name, job.shown_index(index), item, job.mode, error
                        ),
                    )
                )
                job.stats.delivered(0, 1)
            else:
                keep.append(position)
        if len(keep) == len(chunk.items):  # no single item is at fault: the function is
            job.sink.deliver(Aborted(unpicklable_function(job.name, job.fn, exc)))
            self._cancel(job)
            return
        if keep:
            self._requeue(job, chunk.subset(next(self._chunk_ids), keep))
        self._settle(job)

    # -- a job's end -----------------------------------------------------------

    def _cancel(self, job: Job) -> None:
        job.state = JobState.CANCELLED
        job.requeued.clear()
        self._settle(job)

    def _settle(self, job: Job) -> None:
        """Forget a job that is over (and tell its sink, if it ran to its end)."""
        if not job.is_over:
            return
        job.stats.end()
        if job.state is JobState.DRAINED:
            job.sink.deliver(Finished(job.pulled))
        if self._jobs.pop(job.id, None) is not None and self.sharing.end(job.sharing):
            self._backend.release(job.sharing)

    # -- what workers report -------------------------------------------------

    def _handle(self, event: Event) -> None:
        if isinstance(event, ChunkFinished):
            self._finished(event)
        elif isinstance(event, WorkerLost):
            self._lost(event)
        elif isinstance(event, WorkerReady):
            self._stats.worker_ready(event.startup_s)
        else:
            raise initializer_error(event.worker_id, event.error)

    def _finished(self, event: ChunkFinished) -> None:
        chunk = event.chunk
        job = self._jobs.get(chunk.job_id)
        self._stats.chunk_finished(event, job.stats if job is not None else None)
        if job is None:
            return
        job.in_flight -= 1
        job.chunker.observe(len(chunk), event.busy_s)
        if job.window is not None:
            job.window.measure(0, event.payload.nbytes)
        if job.state is JobState.CANCELLED:
            pass
        elif undecodable(event) and len(chunk) > 1:
            # One bad argument spoils the whole chunk's decoding: run each task
            # alone to learn which one it was.
            for position in reversed(range(len(chunk))):
                self._requeue(job, chunk.subset(next(self._chunk_ids), [position]))
        else:
            self._deliver_results(job, chunk, event)
        self._settle(job)

    def _deliver_results(self, job: Job, chunk: Chunk, event: ChunkFinished) -> None:
        indices: Sequence[int] = chunk.indices
        payload, errors = event.payload, None
        if event.errors:
            errors = {
                position: task_error(
                    job.name,
                    job.shown_index(chunk.indices[position]),
                    chunk.items[position],
                    remote,
                )
                for position, remote in event.errors.items()
            }
            retried = [
                position
                for position, error in errors.items()
                if isinstance(error, job.retry_on) and self._retry(job, chunk, position)
            ]
            if retried:
                indices, payload, errors = results_without(indices, payload, errors, retried)
            for position, error in errors.items():
                attempts = job.attempts.get(indices[position], 1)
                if attempts > 1:
                    add_note(error, f"the task was tried {attempts} times")
        if indices:
            job.sink.deliver(Results(indices, payload, errors))
            failed = len(errors) if errors else 0
            job.stats.delivered(len(indices) - failed, failed)

    def _lost(self, event: WorkerLost) -> None:
        self._stats.worker_died(
            self._jobs[chunk.job_id].stats for chunk in event.chunks if chunk.job_id in self._jobs
        )
        # Last first: each requeue goes to the front, so the chunks keep their order.
        for number, chunk in reversed(list(enumerate(event.chunks))):
            job = self._jobs.get(chunk.job_id)
            if job is None:
                continue
            job.in_flight -= 1
            if job.state is JobState.CANCELLED:
                pass
            elif number == 0:
                self._recover(job, chunk, event)
            else:
                # Queued behind the one that was running: it never started, so
                # the loss is not its fault and does not count against it.
                self._requeue(job, chunk)
            self._settle(job)

    def _recover(self, job: Job, chunk: Chunk, event: WorkerLost) -> None:
        """Blame the task that was running when the worker died; run its neighbours again."""
        if event.position is None:
            chunk.attempts += 1
        plan = plan_recovery(
            tasks=len(chunk),
            stride=chunk.stride,
            position=event.position,
            silent_losses=chunk.attempts,
        )
        for positions in reversed(plan.rerun):
            whole = len(positions) == len(chunk)  # the same chunk keeps its count of losses
            self._requeue(job, chunk if whole else chunk.subset(next(self._chunk_ids), positions))
        for position in plan.blamed:
            self._blame(job, chunk, position, event)

    def _blame(self, job: Job, chunk: Chunk, position: int, event: WorkerLost) -> None:
        index = chunk.indices[position]
        if index in job.stopped:
            return  # stopped by its caller, whose future says so already
        if self._retry(job, chunk, position):
            return
        error = death_error(
            job.name,
            job.shown_index(index),
            event,
            chunk.timeout_s,
            attempts=job.attempts.get(index, 1),
            replaced=self._state is _State.RUNNING,
        )
        job.sink.deliver(TaskFailed(index, error))
        job.stats.delivered(0, 1)

    def _retry(self, job: Job, chunk: Chunk, position: int) -> bool:
        """Queue the task at ``position`` again if ``retries`` allow; say whether it was."""
        index = chunk.indices[position]
        attempts = job.attempts.get(index, 1)
        if attempts > job.retries:
            return False
        job.attempts[index] = attempts + 1
        job.stats.retried()
        self._requeue(job, chunk.subset(next(self._chunk_ids), [position]))
        logger.debug("task %d of %s: attempt %d", index, job.name, attempts + 1)
        return True
