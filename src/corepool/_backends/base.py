"""The contract between the scheduler and a backend, and the events a backend reports.

Runs in the parent. Imports ``_protocol`` and ``_transport``, nothing above them.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

from corepool._protocol import CallMode, RemoteError
from corepool._transport.buffers import Payload

__all__ = [
    "Backend",
    "Chunk",
    "ChunkFinished",
    "ChunkResults",
    "Event",
    "InitializerFailed",
    "Outbox",
    "Values",
    "WorkerLost",
    "WorkerReady",
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
        "moved",
        "sharing",
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
        items: Sequence[Any],
        stride: int = 1,
        timeout_s: float | None = None,
        exits_are_errors: bool = False,
        sharing: int | None = None,
    ) -> None:
        self.id = chunk_id
        self.job_id = job_id
        # The key of the copies of large arguments it uses (its job's, see _sharing.py).
        self.sharing = job_id if sharing is None else sharing
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
        # Set by ``send`` where the backend measures it: the bytes that crossed
        # to the worker (in the message, through shared memory), for stats.
        self.moved: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def split_off(self, chunk_id: int, size: int) -> Chunk:
        """Cut this chunk down to its first ``size`` tasks; the rest, as chunk ``chunk_id``."""
        rest = self._derive(chunk_id, self.indices[size:], self.items[size:], self.stride)
        self.indices = self.indices[:size]
        self.items = self.items[:size]
        return rest

    def subset(self, chunk_id: int, positions: Sequence[int]) -> Chunk:
        """Chunk ``chunk_id``, of this chunk's tasks at ``positions``.

        A lone task gets stride 1: were it to kill its worker again, it must be
        blamed, not split once more (which looped forever).
        """
        return self._derive(
            chunk_id,
            [self.indices[p] for p in positions],
            [self.items[p] for p in positions],
            self.stride if len(positions) > 1 else 1,
        )

    def _derive(
        self, chunk_id: int, indices: Sequence[int], items: Sequence[Any], stride: int
    ) -> Chunk:
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
            self.sharing,
        )


class Values:
    """Results already in this process, as objects (threads, or a cluster's client).

    It answers ``load()`` and ``nbytes`` as ``Payload`` does, so whatever
    reads a chunk's results takes either.
    """

    __slots__ = ("_values", "nbytes")

    def __init__(self, values: list[Any], nbytes: int = 0) -> None:
        self._values = values
        self.nbytes = nbytes  # an estimate: what the read-ahead budget counts

    def load(self) -> list[Any]:
        """The values themselves."""
        return self._values


ChunkResults = Payload | Values


class ChunkFinished(NamedTuple):
    """A chunk ran to its end; ``payload`` holds its results.

    The optional fields feed ``Pool.stats()``; ``None`` where the backend
    does not measure them.
    """

    chunk: Chunk
    payload: ChunkResults
    errors: dict[int, RemoteError] | None
    busy_s: float  # the worker's time on it: decode + compute + encode
    worker_id: int | None = None
    decode_s: float | None = None  # unpickling the arguments
    compute_s: float | None = None  # running the tasks
    encode_s: float | None = None  # pickling the results


class WorkerLost(NamedTuple):
    """A worker ended while holding ``chunks`` (the running one first)."""

    worker_id: int
    pid: int
    exitcode: int | None
    chunks: list[Chunk]
    position: int | None  # the running task's (or stride's) position in chunks[0], if any
    timed_out: bool = False  # the parent killed the worker: that task passed its task_timeout


class WorkerReady(NamedTuple):
    """A worker started and is ready for tasks, ``startup_s`` after its launch."""

    worker_id: int
    startup_s: float


class InitializerFailed(NamedTuple):
    """The pool's initializer raised in a worker."""

    worker_id: int
    error: RemoteError


T = TypeVar("T")

Event = ChunkFinished | WorkerLost | WorkerReady | InitializerFailed


class Backend(Protocol):
    """What the scheduler needs from a place that runs chunks."""

    # The pool options this backend cannot honour, each with the reason a
    # user is told when a pool sets it (see _backends.create).
    REFUSED: ClassVar[Mapping[str, str]]

    @property
    def workers(self) -> int:
        """How many chunks can run at once."""
        ...

    @property
    def chunk_seconds(self) -> float:
        """The work each automatic chunk aims at: more where a round trip costs more."""
        ...

    def describe(self) -> str:
        """What the pool's ``repr`` shows of its backend (``start_method='forkserver'``)."""
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
        """Hand ``chunk`` to ``worker_id``; return the bytes its tasks took (pickled).

        A backend that knows what crossed to the worker sets ``chunk.moved``.
        """

    def wait(self, wakeup_fd: int, timeout: float | None) -> tuple[list[Event], bool]:
        """Block until something happens; return the events and whether ``wakeup_fd`` fired."""
        ...

    def is_idle(self) -> bool:
        """No chunk is running or queued anywhere."""
        ...

    def release(self, sharing: int) -> None:
        """No live job uses the copies of arguments kept under key ``sharing``: let go of them."""

    def stop_task(self, job_id: int, index: int) -> None:
        """Stop task ``index`` of ``job_id`` if it runs now; ``wait`` reports the loss."""

    def stop_job(self, job_id: int) -> None:
        """Stop every task of ``job_id`` that runs now; ``wait`` reports the losses."""

    def shutdown(self, *, graceful: bool) -> None:
        """Stop every worker (politely first when ``graceful``) and release all resources."""


class Outbox(Generic[T]):
    """Reports from other threads to the scheduler's, and a pipe that wakes it for them.

    For backends whose work ends in threads of this process (the thread
    backend's workers, a cluster client's callbacks): they ``put`` what
    happened; the scheduler's ``wait`` blocks on its own wake-up pipe and
    this one together, in one ``select``, then ``take``s everything.
    """

    def __init__(self) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def put(self, item: T) -> None:
        """Any thread: queue ``item`` and wake the scheduler (quietly, once closed)."""
        self._items.append(item)
        with contextlib.suppress(OSError):  # full of wake-ups already, or closed: fine
            os.write(self._write_fd, b"\0")

    def wait(self, wakeup_fd: int, timeout: float | None) -> tuple[list[T], bool]:
        """The scheduler: block until an item or ``wakeup_fd``; the items, and whether it fired."""
        if self._items:
            ready, _, _ = select.select([wakeup_fd], [], [], 0)
        else:
            ready, _, _ = select.select([wakeup_fd, self._read_fd], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            os.read(self._read_fd, 65536)
        items = []
        while self._items:
            items.append(self._items.popleft())
        return items, wakeup_fd in ready

    def close(self) -> None:
        """Close the pipe; later ``put`` calls still queue, without waking anyone."""
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
