"""The contract between the scheduler and a backend, and the events a backend reports.

Runs in the parent. Imports ``_protocol`` and ``_transport``, nothing above them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from corepool._protocol import CallMode, RemoteError
from corepool._transport.buffers import Payload

__all__ = [
    "Backend",
    "Chunk",
    "ChunkFinished",
    "Event",
    "InitializerFailed",
    "WorkerLost",
]


class Chunk:
    """Tasks of one job sent to one worker together."""

    __slots__ = (
        "attempts",
        "exits_are_errors",
        "fn",
        "fresh",
        "id",
        "indices",
        "items",
        "job_id",
        "mode",
        "stride",
        "timeout_s",
    )

    def __init__(
        self,
        chunk_id: int,
        job_id: int,
        fn: Callable[..., Any],
        mode: CallMode,
        indices: Sequence[int],
        items: list[Any],
        stride: int = 1,
        timeout_s: float | None = None,
        exits_are_errors: bool = False,
    ) -> None:
        self.id = chunk_id
        self.job_id = job_id
        self.fn = fn
        self.mode = mode
        self.indices = indices  # each task's index in its job's input
        self.items = items
        self.stride = stride  # tasks per status write: 1 means every task is tracked
        self.timeout_s = timeout_s  # each task's task_timeout, or None
        # A task's SystemExit or KeyboardInterrupt is its error, returned as
        # concurrent.futures does, rather than the end of its worker.
        self.exits_are_errors = exits_are_errors
        self.attempts = 0  # how many times a worker died holding it
        self.fresh = False  # just pulled from the input: its size is not yet counted

    def __len__(self) -> int:
        return len(self.items)

    def derive(self, chunk_id: int, indices: Sequence[int], items: list[Any], stride: int) -> Chunk:
        """A new chunk of the same job and settings, holding ``items`` (at ``indices``)."""
        return Chunk(
            chunk_id,
            self.job_id,
            self.fn,
            self.mode,
            indices,
            items,
            stride,
            self.timeout_s,
            self.exits_are_errors,
        )


class ChunkFinished(NamedTuple):
    """A chunk ran to its end; ``payload`` holds its results."""

    chunk: Chunk
    payload: Payload
    errors: dict[int, RemoteError] | None
    busy_s: float  # the worker's time on it: decode + compute + encode


class WorkerLost(NamedTuple):
    """A worker ended while holding ``chunks`` (the running one first)."""

    worker_id: int
    pid: int
    exitcode: int | None
    chunks: list[Chunk]
    position: int | None  # the running task's (or stride's) position in chunks[0], if any
    timed_out: bool = False  # the parent killed the worker: that task passed its task_timeout


class InitializerFailed(NamedTuple):
    """The pool's initializer raised in a worker."""

    worker_id: int
    error: RemoteError


Event = ChunkFinished | WorkerLost | InitializerFailed


class Backend(Protocol):
    """What the scheduler needs from a place that runs chunks."""

    @property
    def workers(self) -> int:
        """How many chunks can run at once."""
        ...

    def start(self) -> None:
        """Start the workers; called once, from the scheduler thread."""

    def free_workers(self) -> list[int]:
        """Workers that can take another chunk now, the idlest first."""
        ...

    def task_budget(self, worker_id: int) -> int | None:
        """How many more tasks the worker may run before it retires, or ``None``."""
        ...

    def send(self, worker_id: int, chunk: Chunk) -> int:
        """Hand ``chunk`` to ``worker_id``; return the bytes its tasks took (pickled)."""

    def wait(self, wakeup_fd: int, timeout: float | None) -> tuple[list[Event], bool]:
        """Block until something happens; return the events and whether ``wakeup_fd`` fired."""
        ...

    def is_idle(self) -> bool:
        """No chunk is running or queued anywhere."""
        ...

    def release(self, job_id: int) -> None:
        """The job is over: let go of whatever was kept for it (copies of its arguments)."""

    def stop_task(self, job_id: int, index: int) -> None:
        """Stop task ``index`` of ``job_id`` if it runs now; ``wait`` reports the loss."""

    def shutdown(self, *, graceful: bool) -> None:
        """Stop every worker (politely first when ``graceful``) and release all resources."""
