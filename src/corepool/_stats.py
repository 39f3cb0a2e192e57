"""The counters behind ``Pool.stats()``: kept as work flows, turned into records on demand.

Runs in the parent. The scheduler thread counts (a few additions per chunk,
never per task); the threads that unpickle results add their time under a
lock; ``snapshot()`` is read from any thread. Imports ``_backends.base``,
``_transport``, ``options`` and ``stats``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from corepool._backends.base import Backend, Chunk, ChunkFinished
from corepool._transport.buffers import Payload
from corepool.options import PoolOptions, default_workers
from corepool.stats import BytesMoved, CallStats, PoolStats, TimeSpent

__all__ = ["CallCounters", "PoolCounters"]

# Advice thresholds. A task under TINY_TASK_S of compute is small enough for
# the cost of shipping it to matter; TRANSFER_SHARE of the busy time spent
# pickling and moving is where that cost shows in the wall time.
TINY_TASK_S = 1e-3
TINY_OVERHEAD_RATIO = 0.5
# Fewer tasks than this per worker say little about their size.
TINY_MIN_TASKS_PER_WORKER = 10
HEAVY_TASK_BYTES = 64 * 1024
TRANSFER_SHARE = 0.25
# One chunk this many times the mean one, and at least this share of the
# call's span, while workers waited this share of their time: a straggler.
# (Chunk times are wall times: on a machine loaded far past its cores, a
# worker's chunks all stretch; the high bars keep that from reading as this.)
UNEQUAL_RATIO = 10.0
UNEQUAL_SPAN_SHARE = 0.5
UNEQUAL_WAITING_SHARE = 0.25
# Start-up worth half the time spent on tasks (and more than a blink).
STARTUP_RATIO = 0.5
STARTUP_MIN_S = 0.05


class _Totals:
    """Sums kept for a call and, alike, for its pool (scheduler thread only, but receive_s)."""

    __slots__ = (
        "busy_s",
        "chunks",
        "compute_s",
        "deaths",
        "decode_s",
        "done",
        "encode_s",
        "failed",
        "longest_chunk_s",
        "receive_s",
        "received_inline",
        "received_shared",
        "retried",
        "send_s",
        "sent_inline",
        "sent_shared",
        "unmeasured",
    )

    def __init__(self) -> None:
        self.done = self.failed = self.retried = self.deaths = self.chunks = 0
        self.busy_s = self.compute_s = self.decode_s = self.encode_s = 0.0
        self.send_s = self.receive_s = self.longest_chunk_s = 0.0
        self.sent_inline = self.sent_shared = self.received_inline = self.received_shared = 0
        # Figures some chunk came back without: reported as unknown, not as zero.
        self.unmeasured: set[str] = set()

    def add_sent(self, chunk: Chunk, seconds: float) -> None:
        self.send_s += seconds
        if chunk.moved is None:
            self.unmeasured.add("sent")
        else:
            self.sent_inline += chunk.moved[0]
            self.sent_shared += chunk.moved[1]

    def add_finished(self, event: ChunkFinished, inline: int, shared: int) -> None:
        self.chunks += 1
        self.busy_s += event.busy_s
        self.longest_chunk_s = max(self.longest_chunk_s, event.busy_s)
        if event.compute_s is None:
            self.unmeasured.add("compute_s")
        else:
            self.compute_s += event.compute_s
        if event.decode_s is None:
            self.unmeasured.add("decode_s")
        else:
            self.decode_s += event.decode_s
        if event.encode_s is None:
            self.unmeasured.add("encode_s")
        else:
            self.encode_s += event.encode_s
        self.received_inline += inline
        self.received_shared += shared

    def known(self, name: str, value: float) -> float | None:
        return None if name in self.unmeasured else value

    def moved(self) -> BytesMoved:
        sent = "sent" not in self.unmeasured
        return BytesMoved(
            self.sent_inline if sent else None,
            self.sent_shared if sent else None,
            self.received_inline,
            self.received_shared,
        )


def _received(event: ChunkFinished) -> tuple[int, int]:
    """The result bytes of a chunk that crossed: (inline, shared memory)."""
    payload = event.payload
    if isinstance(payload, Payload):
        inline = len(payload.packed.data)
        return inline, payload.nbytes - inline
    return 0, 0  # results handed over as objects (threads): no byte crossed


class PoolCounters:
    """A pool's counters; ``snapshot()`` makes its ``PoolStats``.

    Args:
        backend: The backend's name, for the report.
        workers: Tasks the pool runs at once.
        inner_threads: BLAS/OpenMP threads per worker, where the pool limits them.
        cores: Usable cores of this machine.
    """

    def __init__(self, *, backend: str, workers: int, inner_threads: int | None, cores: int):
        self.backend = backend
        self.workers = workers
        self.inner_threads = inner_threads
        self.cores = cores
        self.totals = _Totals()
        self.busy_by_worker: dict[int, float] = {}
        self._created = time.perf_counter()
        self._stopped: float | None = None
        # Wall time with at least one call in progress, to tell waiting from idle.
        self._active_s = 0.0
        self._active_since: float | None = None
        # Worker start-ups (None until a backend reports one: threads, Dask).
        self._readies = 0
        self._startup_active_s = 0.0
        self._startup_idle_s = 0.0
        self._lock = threading.Lock()  # receive_s comes from callers' threads
        self._last_calls = threading.local()
        # Unequal tasks show in a call's figures, not in the pool's, where
        # other calls blur them: the last call that showed them, as advice.
        self.unequal_call = ""

    @classmethod
    def of(cls, options: PoolOptions, backend: Backend) -> PoolCounters:
        """The counters of a pool with ``options``, running on ``backend``."""
        limits_threads = "inner_threads" not in backend.REFUSED
        return cls(
            backend=options.backend,
            workers=backend.workers,
            inner_threads=options.resolved_inner_threads if limits_threads else None,
            cores=default_workers(),
        )

    # -- counting (the scheduler thread) ------------------------------------------

    def open_call(self, name: str, *, remember: bool = True) -> CallCounters:
        """Counters for a new call.

        ``remember``: a call of its own (``map``, ``imap``), which ``last_call()``
        gives in this thread and whose end is looked at for unequal tasks;
        not so for the submits of one function, whose job may end often.
        """
        call = CallCounters(name, self, remember)
        if remember:
            self._last_calls.call = call
        return call

    def last_call(self) -> CallCounters | None:
        """The last call this thread started, or ``None``."""
        call: CallCounters | None = getattr(self._last_calls, "call", None)
        return call

    def note_active(self, active: bool) -> None:
        """Whether a call is in progress now; called once per turn of the scheduler's loop."""
        if active == (self._active_since is not None):
            return
        now = time.perf_counter()
        if active:
            self._active_since = now
        else:
            assert self._active_since is not None
            self._active_s += now - self._active_since
            self._active_since = None

    def worker_ready(self, startup_s: float) -> None:
        """A worker became ready ``startup_s`` after its launch."""
        self._readies += 1
        # The part of the start-up that overlapped the current call period
        # counts against waiting, the rest against idle; an earlier period
        # it may have overlapped too is not remembered (a close enough split).
        overlap = 0.0
        if self._active_since is not None:
            overlap = min(startup_s, time.perf_counter() - self._active_since)
        self._startup_active_s += overlap
        self._startup_idle_s += startup_s - overlap

    def worker_died(self, calls: Iterable[CallCounters]) -> None:
        self.totals.deaths += 1
        for call in set(calls):
            call.totals.deaths += 1

    def chunk_finished(self, event: ChunkFinished, call: CallCounters | None) -> None:
        inline, shared = _received(event)
        self.totals.add_finished(event, inline, shared)
        if event.worker_id is not None:
            busy = self.busy_by_worker
            busy[event.worker_id] = busy.get(event.worker_id, 0.0) + event.busy_s
        if call is not None:
            call.totals.add_finished(event, inline, shared)

    def add_receive(self, seconds: float) -> None:
        with self._lock:
            self.totals.receive_s += seconds

    def stop(self) -> None:
        """The pool stopped: its clock stops too."""
        self.note_active(False)
        self._stopped = time.perf_counter()

    # -- the record ---------------------------------------------------------------

    def snapshot(self) -> PoolStats:
        """The pool's ``PoolStats`` now."""
        now = time.perf_counter() if self._stopped is None else self._stopped
        wall = max(now - self._created, 1e-9)
        active = self._active_s
        since = self._active_since
        if since is not None:
            active += now - since
        totals = self.totals
        workers = self.workers
        started = self._readies > 0
        startup = self._startup_active_s + self._startup_idle_s if started else None
        waiting = max(0.0, workers * active - totals.busy_s - self._startup_active_s)
        idle = max(0.0, workers * (wall - active) - self._startup_idle_s)
        time_spent = _time_spent(totals, waiting, idle, startup)
        busy = dict(self.busy_by_worker)
        figures = _Figures.of(totals, time_spent, workers, span_s=max(active, 1e-9))
        advice = figures.advice(unequal=False)
        if self.unequal_call:
            advice.append(self.unequal_call)
        advice.extend(self._pool_advice(figures, startup))
        return PoolStats(
            backend=self.backend,
            workers=workers,
            wall_s=wall,
            tasks_done=totals.done,
            tasks_failed=totals.failed,
            tasks_retried=totals.retried,
            tasks_per_s=(totals.done + totals.failed) / wall,
            busy_share=tuple(busy.get(worker, 0.0) / wall for worker in range(workers)),
            time=time_spent,
            moved=totals.moved(),
            worker_deaths=totals.deaths,
            workers_replaced=max(0, self._readies - workers) if started else None,
            efficiency=_efficiency(time_spent.compute_s, workers, wall),
            advice=tuple(advice),
        )

    def _pool_advice(self, figures: _Figures, startup: float | None) -> list[str]:
        """Advice only the pool's figures can give: threads per core, start-up."""
        advice = []
        inner = self.inner_threads
        if (
            inner is not None
            and inner > 1
            and self.workers * inner > self.cores
            and figures.tasks > 0
        ):
            advice.append(
                f"oversubscribed: {self.workers} workers x {inner} BLAS/OpenMP threads "
                f"on {self.cores} cores, so numerical code fights for cores. Leave "
                "inner_threads unset (cores / workers per worker), or use fewer workers."
            )
        busy = self.totals.busy_s
        if startup is not None and startup >= STARTUP_MIN_S and startup >= STARTUP_RATIO * busy:
            advice.append(
                f"start-up dominates: workers spent {startup:.2f}s starting against "
                f"{busy:.2f}s running tasks. Keep one Pool open for many calls rather "
                "than corepool.map() or a Pool per call; preload= imports heavy modules "
                "once in the fork server."
            )
        return advice


class CallCounters:
    """One call's counters (a ``map``, an ``imap``, the submits of one function)."""

    def __init__(self, name: str, pool: PoolCounters, is_call: bool) -> None:
        self.name = name
        self.pool = pool
        self._is_call = is_call
        self.totals = _Totals()
        self._started = time.perf_counter()
        self._ended: float | None = None

    def sent(self, chunk: Chunk, seconds: float) -> None:
        """``chunk`` was handed to a worker; pickling and sending it took ``seconds``."""
        self.totals.add_sent(chunk, seconds)
        self.pool.totals.add_sent(chunk, seconds)

    def delivered(self, done: int, failed: int) -> None:
        self.totals.done += done
        self.totals.failed += failed
        pool = self.pool.totals
        pool.done += done
        pool.failed += failed

    def retried(self) -> None:
        self.totals.retried += 1
        self.pool.totals.retried += 1

    def received(self, seconds: float) -> None:
        """Results were unpickled in ``seconds`` (the caller's thread)."""
        self.totals.receive_s += seconds
        self.pool.add_receive(seconds)

    def end(self) -> None:
        """The call is over (the scheduler thread)."""
        if self._ended is not None:
            return
        self._ended = time.perf_counter()
        if self._is_call:
            wall = max(self._ended - self._started, 1e-9)
            waiting = max(0.0, self.pool.workers * wall - self.totals.busy_s)
            spent = _time_spent(self.totals, waiting, None, None)
            line = _Figures.of(self.totals, spent, self.pool.workers, span_s=wall)._unequal()
            if line:
                self.pool.unequal_call = f"{self.name}: {line}"

    def snapshot(self) -> CallStats:
        """The call's ``CallStats`` now."""
        ended = self._ended
        wall = max((time.perf_counter() if ended is None else ended) - self._started, 1e-9)
        totals = self.totals
        workers = self.pool.workers
        waiting = max(0.0, workers * wall - totals.busy_s)
        time_spent = _time_spent(totals, waiting, None, None)
        figures = _Figures.of(totals, time_spent, workers, span_s=wall)
        return CallStats(
            name=self.name,
            workers=workers,
            wall_s=wall,
            is_finished=ended is not None,
            tasks_done=totals.done,
            tasks_failed=totals.failed,
            tasks_retried=totals.retried,
            tasks_per_s=(totals.done + totals.failed) / wall,
            time=time_spent,
            moved=totals.moved(),
            worker_deaths=totals.deaths,
            efficiency=_efficiency(time_spent.compute_s, workers, wall),
            advice=tuple(figures.advice()),
        )


def _time_spent(
    totals: _Totals, waiting: float, idle: float | None, startup: float | None
) -> TimeSpent:
    return TimeSpent(
        compute_s=totals.known("compute_s", totals.compute_s),
        decode_s=totals.known("decode_s", totals.decode_s),
        encode_s=totals.known("encode_s", totals.encode_s),
        send_s=totals.send_s,
        receive_s=totals.receive_s,
        waiting_s=waiting,
        idle_s=idle,
        startup_s=startup,
    )


def _efficiency(compute_s: float | None, workers: int, wall_s: float) -> float | None:
    return None if compute_s is None else compute_s / (workers * wall_s)


@dataclass(frozen=True)
class _Figures:
    """What the advice rules read, for a call or a pool."""

    tasks: int
    chunks: int
    workers: int
    span_s: float  # wall seconds with work in progress
    busy_s: float
    compute_s: float | None
    transfer_s: float | None
    waiting_s: float
    bytes_moved: int | None
    longest_chunk_s: float

    @classmethod
    def of(cls, totals: _Totals, spent: TimeSpent, workers: int, span_s: float) -> _Figures:
        transfer = spent.transfer_s
        if transfer is None and spent.compute_s is not None:
            # Dask does not say how long decoding took: count what is known.
            transfer = (spent.encode_s or 0.0) + spent.send_s + spent.receive_s
        return cls(
            tasks=totals.done + totals.failed,
            chunks=totals.chunks,
            workers=workers,
            span_s=span_s,
            busy_s=totals.busy_s,
            compute_s=spent.compute_s,
            transfer_s=transfer,
            waiting_s=spent.waiting_s or 0.0,
            bytes_moved=totals.moved().total_bytes,
            longest_chunk_s=totals.longest_chunk_s,
        )

    def advice(self, *, unequal: bool = True) -> list[str]:
        """The lines for tasks too small, too heavy to ship, or (``unequal``) too unequal."""
        lines = []
        if self.tasks and self.compute_s is not None and self.transfer_s is not None:
            per_task_bytes = (self.bytes_moved or 0) / self.tasks
            if per_task_bytes >= HEAVY_TASK_BYTES:
                line = self._heavy(per_task_bytes)
            else:
                line = self._tiny()
            if line:
                lines.append(line)
        line = self._unequal() if unequal else None
        if line:
            lines.append(line)
        return lines

    def _tiny(self) -> str | None:
        assert self.compute_s is not None and self.transfer_s is not None
        per_task = self.compute_s / self.tasks
        overhead = self.transfer_s
        if per_task >= TINY_TASK_S or self.tasks < TINY_MIN_TASKS_PER_WORKER * self.workers:
            return None
        if overhead < TINY_OVERHEAD_RATIO * self.compute_s and self.waiting_s < self.busy_s:
            return None
        return (
            f"tasks too small for a pool: {per_task * 1e6:.2g} us of compute each, so "
            f"shipping them ({overhead:.3f}s) and waiting for the next ones "
            f"({self.waiting_s:.3f}s) outweigh the compute ({self.compute_s:.3f}s). Give "
            "each task more work (a batch of items per call), or run a plain loop: "
            f"about {self.compute_s:.2g}s serially."
        )

    def _heavy(self, per_task_bytes: float) -> str | None:
        assert self.compute_s is not None and self.transfer_s is not None
        if self.transfer_s < TRANSFER_SHARE * (self.compute_s + self.transfer_s):
            return None
        return (
            f"tasks too heavy to ship: {per_task_bytes / 1024:,.0f} KiB moved per task, "
            f"and pickling and moving took {self.transfer_s:.3f}s against "
            f"{self.compute_s:.3f}s of compute. Send and return less (a path or an index "
            "rather than the data); use numpy arrays or bytearray rather than bytes "
            "(buffers of 1 MiB and more go through shared memory); pass read-only data "
            "once with Pool(shared=...)."
        )

    def _unequal(self) -> str | None:
        if self.chunks < 2:
            return None
        mean_chunk = self.busy_s / self.chunks
        longest = self.longest_chunk_s
        if (
            longest >= UNEQUAL_RATIO * mean_chunk
            and longest >= UNEQUAL_SPAN_SHARE * self.span_s
            and self.waiting_s >= UNEQUAL_WAITING_SHARE * self.workers * self.span_s
        ):
            share = self.waiting_s / (self.workers * self.span_s)
            return (
                f"tasks too unequal: one chunk ran {longest:.2f}s while the mean chunk "
                f"took {mean_chunk * 1e3:.1f} ms, and workers waited {share:.0%} of the "
                "time. Split the long tasks, start the slowest first (sort the input by "
                "expected cost), or pass chunksize=1 so that no quick task waits behind "
                "a slow one."
            )
        return None
