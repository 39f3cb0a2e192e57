"""What ``Pool.stats()`` and ``Pool.last_call_stats()`` return: where a pool's time went.

Frozen records, built by ``corepool._stats`` from counters the scheduler
keeps. Times are in seconds of *worker time* (two workers for one second
make two worker-seconds) unless a name says otherwise; ``None`` means the
backend cannot measure that figure (never a zero that is not one). Imports
nothing of corepool.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BytesMoved", "CallStats", "PoolStats", "TimeSpent"]


@dataclass(frozen=True)
class TimeSpent:
    """Where the worker time went, in worker-seconds; ``None`` where not measured.

    The first three are measured by the workers, chunk by chunk; the
    parent's two are wall seconds of the parent's threads; the rest is
    what remains of ``workers x wall time``.

    Attributes:
        compute_s: Running the tasks' own code.
        decode_s: Workers unpickling arguments (and mapping shared memory).
        encode_s: Workers pickling results.
        send_s: The parent pickling arguments and handing them to workers
            (its scheduler thread: wall seconds, not worker time).
        receive_s: The parent unpickling results (the threads that take
            them: wall seconds, not worker time).
        waiting_s: Workers holding no task while a call was in progress:
            the input, the parent or the consumer was slower than they were,
            or the last tasks of a call ran on fewer workers than it has
            (time a worker spent on a task before it died counts here too).
        idle_s: Workers with no call to serve (pool-wide figures only).
        startup_s: Workers starting, from launch until ready to run tasks,
            replacements included (pool-wide figures only).
    """

    compute_s: float | None
    decode_s: float | None
    encode_s: float | None
    send_s: float
    receive_s: float
    waiting_s: float | None
    idle_s: float | None = None
    startup_s: float | None = None

    @property
    def transfer_s(self) -> float | None:
        """Pickling and moving data both ways: ``decode_s + encode_s + send_s + receive_s``."""
        if self.decode_s is None or self.encode_s is None:
            return None
        return self.decode_s + self.encode_s + self.send_s + self.receive_s


@dataclass(frozen=True)
class BytesMoved:
    """Bytes that crossed between the parent and workers; ``None`` where not measured.

    *Inline* bytes travel in the message (pickles); *shared* bytes are large
    buffers (1 MiB and more by default) that travel as shared-memory segments.
    On the thread backend nothing moves: every figure is 0.

    Attributes:
        sent_inline_bytes: Arguments (and functions) sent in messages.
        sent_shared_bytes: Argument buffers sent through shared memory.
        received_inline_bytes: Results received in messages.
        received_shared_bytes: Result buffers received through shared memory.
    """

    sent_inline_bytes: int | None
    sent_shared_bytes: int | None
    received_inline_bytes: int | None
    received_shared_bytes: int | None

    @property
    def total_bytes(self) -> int | None:
        """Every byte moved, both ways, or ``None`` if a part is unknown."""
        parts = (
            self.sent_inline_bytes,
            self.sent_shared_bytes,
            self.received_inline_bytes,
            self.received_shared_bytes,
        )
        return None if None in parts else sum(p for p in parts if p is not None)


@dataclass(frozen=True)
class CallStats:
    """One call's figures (a ``map``, ``imap``, ``starmap``): compare two calls with them.

    Per-call times assume the call had the pool to itself: calls running at
    the same time share workers, and each counts the others' work as its
    own ``waiting_s``.

    Attributes:
        name: The call, as errors name it: ``"map(resize)"``.
        workers: Tasks the pool runs at once.
        wall_s: Wall seconds from the call's start to its end (or to now).
        is_finished: Every task of the call was delivered or dropped.
        tasks_done: Tasks that returned a result.
        tasks_failed: Tasks whose error was delivered (raised, died, timed out).
        tasks_retried: Attempts made again under ``retries``.
        tasks_per_s: ``(tasks_done + tasks_failed) / wall_s``.
        time: Where the worker time went (``idle_s``, ``startup_s``: ``None``).
        moved: Bytes moved both ways.
        worker_deaths: Workers that died holding the call's tasks
            (killed, crashed, timed out).
        efficiency: ``time.compute_s / (workers x wall_s)``: 1.0 means every
            worker computed all the time; ``None`` if compute is unknown.
        advice: One line per problem the numbers show, each with a next step.
    """

    name: str
    workers: int
    wall_s: float
    is_finished: bool
    tasks_done: int
    tasks_failed: int
    tasks_retried: int
    tasks_per_s: float
    time: TimeSpent
    moved: BytesMoved
    worker_deaths: int
    efficiency: float | None
    advice: tuple[str, ...]

    def summary(self) -> str:
        """One line: tasks, rate, efficiency and the first piece of advice.

        Example:
            >>> pool.last_call_stats().summary()
            'map(square): 1000 done in 0.21s (4,760 tasks/s), efficiency 12% [...]'
        """
        return summary_line(self.name, self)

    def __str__(self) -> str:
        return report(f"{self.name}: call stats", self, per_worker=None)


@dataclass(frozen=True)
class PoolStats:
    """A pool's figures from its creation to now (or to its end).

    Attributes:
        backend: ``"process"``, ``"thread"`` or ``"dask"``.
        workers: Tasks the pool runs at once.
        wall_s: Wall seconds since the pool was created (until it stopped).
        tasks_done: Tasks that returned a result.
        tasks_failed: Tasks whose error was delivered (raised, died, timed out).
        tasks_retried: Attempts made again under ``retries``.
        tasks_per_s: ``(tasks_done + tasks_failed) / wall_s``.
        busy_share: Per worker (by worker id), the share of ``wall_s`` it
            spent running chunks (decoding, computing, encoding).
        time: Where the worker time went.
        moved: Bytes moved both ways.
        worker_deaths: Workers that died (killed, crashed, timed out).
        workers_replaced: Workers started after the first ``workers``
            (after deaths, ``max_tasks_per_worker``, memory limits);
            ``None`` where the backend does not start workers.
        efficiency: ``time.compute_s / (workers x wall_s)``; ``None`` if
            compute is unknown.
        advice: One line per problem the numbers show, each with a next step.
    """

    backend: str
    workers: int
    wall_s: float
    tasks_done: int
    tasks_failed: int
    tasks_retried: int
    tasks_per_s: float
    busy_share: tuple[float, ...]
    time: TimeSpent
    moved: BytesMoved
    worker_deaths: int
    workers_replaced: int | None
    efficiency: float | None
    advice: tuple[str, ...]

    def summary(self) -> str:
        """One line: tasks, rate, efficiency and the first piece of advice.

        Example:
            >>> pool.stats().summary()
            'pool (2 process workers): 1000 done in 0.43s (2,330 tasks/s), efficiency 9% [...]'
        """
        return summary_line(f"pool ({self.workers} {self.backend} workers)", self)

    def __str__(self) -> str:
        return report(
            f"pool stats: {self.workers} {self.backend} workers", self, per_worker=self.busy_share
        )


# -- formatting ----------------------------------------------------------------


def summary_line(title: str, stats: CallStats | PoolStats) -> str:
    """``title: N done[, M failed] in Xs (R tasks/s), efficiency E%[; advice]``."""
    failed = f", {stats.tasks_failed} failed" if stats.tasks_failed else ""
    line = (
        f"{title}: {stats.tasks_done} done{failed} in {stats.wall_s:.2f}s "
        f"({stats.tasks_per_s:,.0f} tasks/s), efficiency {_percent(stats.efficiency)}"
    )
    if stats.advice:
        line += f"; {stats.advice[0]}"
    return line


def report(title: str, stats: CallStats | PoolStats, per_worker: tuple[float, ...] | None) -> str:
    """The multi-line report ``str()`` gives: counts, time, bytes, then the advice."""
    lines = [
        title,
        f"  tasks       {stats.tasks_done} done, {stats.tasks_failed} failed, "
        f"{stats.tasks_retried} retried; {stats.tasks_per_s:,.1f} tasks/s "
        f"over {stats.wall_s:.3f}s",
        f"  efficiency  {_percent(stats.efficiency)} of {stats.workers} workers' time computing",
    ]
    if per_worker is not None:
        shares = " ".join(f"{share:.0%}" for share in per_worker) or "-"
        lines.append(f"  busy share  per worker: {shares}")
    capacity = stats.workers * stats.wall_s
    time = stats.time
    lines.append("  time        worker-seconds (share of workers x wall)")
    for label, seconds in (
        ("compute", time.compute_s),
        ("unpickle arguments (workers)", time.decode_s),
        ("pickle results (workers)", time.encode_s),
        ("waiting for input", time.waiting_s),
        ("idle", time.idle_s),
        ("start-up", time.startup_s),
    ):
        if seconds is None and label in ("idle", "start-up") and isinstance(stats, CallStats):
            continue
        lines.append(f"    {label:<34}{_seconds(seconds, capacity)}")
    lines.append(f"    {'pickle + send arguments (parent)':<34}{time.send_s:.3f}s wall")
    lines.append(f"    {'unpickle results (parent)':<34}{time.receive_s:.3f}s wall")
    moved = stats.moved
    lines.append(
        f"  bytes       sent {_bytes(moved.sent_inline_bytes)} inline + "
        f"{_bytes(moved.sent_shared_bytes)} shared memory; received "
        f"{_bytes(moved.received_inline_bytes)} inline + "
        f"{_bytes(moved.received_shared_bytes)} shared memory"
    )
    deaths = f"  workers     {stats.worker_deaths} died"
    if isinstance(stats, PoolStats) and stats.workers_replaced is not None:
        deaths += f", {stats.workers_replaced} replaced"
    lines.append(deaths)
    lines.extend(f"  advice: {line}" for line in stats.advice or ("none: nothing stands out",))
    return "\n".join(lines)


def _percent(share: float | None) -> str:
    return "unknown" if share is None else f"{share:.0%}"


def _seconds(seconds: float | None, capacity: float) -> str:
    if seconds is None:
        return "unknown"
    share = f" ({seconds / capacity:.0%})" if capacity > 0 else ""
    return f"{seconds:.3f}s{share}"


def _bytes(count: int | None) -> str:
    if count is None:
        return "unknown"
    if count < 1024:
        return f"{count} B"
    size, unit = count / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{size:.1f} {unit}"
