"""A job as the scheduler sees it: its state, its read-ahead window, and what it delivers.

Runs in the parent. The scheduler thread owns every ``Job``; the caller's
thread reaches one only through two small handshake objects: a ``Window``
(how far a lazy call may read ahead of its consumer) and a ``Feed`` (the
input of ``submit`` calls, which closes when it runs dry). Imports ``_stats``,
``_backends.base``, ``_chunking``, ``_protocol`` and ``_transport``.
"""

from __future__ import annotations

import collections
import enum
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol, Union

from corepool._backends.base import Chunk, ChunkResults
from corepool._chunking import Chunker
from corepool._protocol import CallMode
from corepool._stats import CallCounters

__all__ = [
    "Aborted",
    "Delivery",
    "Feed",
    "Finished",
    "Input",
    "InputFailed",
    "IteratorInput",
    "Job",
    "JobState",
    "Results",
    "Sink",
    "SliceInput",
    "TaskFailed",
    "Window",
    "input_of",
]


# -- what a job delivers to its sink, in the scheduler thread --------------------


class Results(NamedTuple):
    """The results of the tasks at ``indices``; ``errors`` maps a position to its error."""

    indices: Sequence[int]
    payload: ChunkResults
    errors: dict[int, BaseException] | None


class TaskFailed(NamedTuple):
    """Task ``task_index`` failed (its worker died, it timed out, it would not pickle)."""

    task_index: int
    error: BaseException


class InputFailed(NamedTuple):
    """The input iterable raised after ``task_index`` tasks: raised there in the order."""

    task_index: int
    error: BaseException


class Aborted(NamedTuple):
    """The job cannot go on (the pool stopped, its function will not pickle): raise at once."""

    error: BaseException


class Finished(NamedTuple):
    """Every task was delivered; the job had ``total`` of them."""

    total: int


Delivery = Union[Results, TaskFailed, InputFailed, Aborted, Finished]  # noqa: UP007 (3.10 isinstance)


class Sink(Protocol):
    """Where a job's deliveries go: a result stream, or the futures of submitted calls."""

    def start(self) -> bool:
        """Called before the job's first chunk is made; ``False`` skips the job."""
        ...

    def deliver(self, delivery: Delivery) -> None:
        """Take one delivery; called in the scheduler thread, so it must be quick."""


# -- where a job's tasks come from -------------------------------------------------


class Input(Protocol):
    """A job's input, read by the scheduler thread a chunk at a time."""

    def take(self, size: int) -> tuple[Sequence[Any], Exception | None]:
        """Up to ``size`` next items (fewer: the input is dry for now, or over), and
        what the input raised after them, if it did."""
        ...


class IteratorInput:
    """Any iterable, read item by item."""

    __slots__ = ("_iterator",)

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator

    def take(self, size: int) -> tuple[Sequence[Any], Exception | None]:
        items: list[Any] = []
        try:
            # extend() keeps what it took before the input raised.
            items.extend(itertools.islice(self._iterator, size))
        except Exception as exc:
            return items, exc
        return items, None


class SliceInput:
    """A list, tuple or ``range``, read a slice at a time.

    Cheaper than item by item, and a slice of a ``range`` is a ``range``: a
    chunk of ``map(fn, range(n))`` travels as three numbers, not its items.
    """

    __slots__ = ("_sequence", "_taken")

    def __init__(self, sequence: list[Any] | tuple[Any, ...] | range) -> None:
        self._sequence = sequence
        self._taken = 0

    def take(self, size: int) -> tuple[Sequence[Any], Exception | None]:
        part = self._sequence[self._taken : self._taken + size]
        self._taken += len(part)
        return part, None


def input_of(iterables: tuple[Iterable[Any], ...]) -> Input:
    """The input of a call over ``iterables`` (several are zipped, as ``map`` does)."""
    if len(iterables) > 1:
        return IteratorInput(zip(*iterables, strict=False))
    only = iterables[0]
    if type(only) in (list, tuple, range):  # exact types: a subclass may slice otherwise
        return SliceInput(only)  # type: ignore[arg-type]
    return IteratorInput(iter(only))


# -- the handshakes with the caller's thread -------------------------------------


class Window:
    """How far a lazy call (``imap``) may read its input ahead of the consumer.

    Bounded in bytes (the input pickled, plus the results waiting to be
    consumed, estimated from the mean per task so far) and capped in tasks.
    Only while the consumer is far behind does the scheduler wait: a slow
    head task in an ordered ``imap`` does not stop free workers from taking
    the tasks behind it until the budget is spent.

    The scheduler thread calls ``admits``, ``room`` and ``measure``; the
    consumer's thread calls ``consumed``. When ``admits`` says no it raises
    ``waiting`` first, so that the consumer, seeing it, resumes the job.
    """

    def __init__(self, *, max_bytes: int, max_tasks: int) -> None:
        self.max_bytes = max_bytes
        self.max_tasks = max_tasks
        self.waiting = False
        self._pulled = 0
        self._consumed = 0  # written by the consumer's thread only
        self._bytes = 0
        self._measured = 0

    def measure(self, tasks: int, nbytes: int) -> None:
        """Count ``nbytes`` more of input (for ``tasks`` new tasks) or of results (``tasks=0``)."""
        self._measured += tasks
        self._bytes += nbytes

    def pulled(self, tasks: int) -> None:
        self._pulled += tasks

    @property
    def bytes_per_task(self) -> float:
        return self._bytes / self._measured if self._measured else 0.0

    def room(self, parts: int = 1) -> int:
        """How many tasks may be read now (at least 1 while ``admits``), and at most
        ``1 / parts`` of the whole window: a chunk that leaves room for others, so
        that every worker has one while the consumer takes the results of another."""
        ahead = self._pulled - self._consumed
        tasks = min(self.max_tasks - ahead, self.max_tasks // parts)
        per_task = self.bytes_per_task
        if per_task > 0:
            left = (self.max_bytes - ahead * per_task) / per_task
            tasks = min(tasks, int(left), int(self.max_bytes / parts / per_task))
        return max(1, tasks)

    def admits(self) -> bool:
        """Whether the job may read more now; if not, ``waiting`` is up."""
        if self._has_room():
            return True
        self.waiting = True
        # Check again: the consumer may have moved on before it could see the flag.
        if self._has_room():
            self.waiting = False
            return True
        return False

    def _has_room(self) -> bool:
        ahead = self._pulled - self._consumed
        return ahead < self.max_tasks and ahead * self.bytes_per_task < self.max_bytes

    def consumed(self, tasks: int) -> bool:
        """The consumer took ``tasks``; ``True`` if the scheduler waits for it (resume the job)."""
        self._consumed += tasks
        if self.waiting:
            self.waiting = False
            return True
        return False


class Feed(Protocol):
    """The input of a job that callers keep adding to (``submit``): open until sealed."""

    @property
    def is_open(self) -> bool:
        """Whether more input may still come."""
        ...

    def close_if_empty(self) -> bool:
        """No input now: close the feed, unless some came meanwhile; whether it is closed."""
        ...


# -- the job -------------------------------------------------------------------


class JobState(enum.Enum):
    """Where a job is in its life; only the scheduler thread changes it."""

    NEW = "new"  # accepted; its sink has not started
    PULLING = "pulling"  # it may take tasks from its input
    WAITING = "waiting"  # nothing to take now: the consumer is behind (its Window is full)
    DRAINED = "drained"  # its input is exhausted; chunks may still be out
    CANCELLED = "cancelled"  # dropped; chunks still out are ignored when they return


_job_ids = itertools.count()


def new_sharing_key() -> int:
    """A key for jobs to share their argument copies under; no job has it as its id."""
    return next(_job_ids)


class Job:
    """One call (map, imap, the submits of one function, ...) as the scheduler sees it."""

    def __init__(
        self,
        *,
        name: str,
        fn: Callable[..., Any],
        mode: CallMode,
        source: Input,
        chunker: Chunker,
        sink: Sink,
        stats: CallCounters,
        window: Window | None = None,
        feed: Feed | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (),
        exits_are_errors: bool = False,
        sharing: int | None = None,
    ) -> None:
        self.id = next(_job_ids)
        # The key its large arguments are copied under (see _sharing.py): its
        # own id, unless it shares one with other jobs.
        self.sharing = self.id if sharing is None else sharing
        self.name = name
        self.fn = fn
        self.mode = mode
        self.source = source
        self.chunker = chunker
        self.sink = sink
        self.stats = stats  # what Pool.stats() and the call's own stats count
        self.window = window  # None: read the input as fast as workers take it
        self.feed = feed  # None: the input ends when ``source`` does
        self.task_timeout = task_timeout
        self.retries = retries
        self.retry_on = retry_on
        # SystemExit / KeyboardInterrupt raised by a task: its error (True, the
        # concurrent.futures contract) or the end of its worker (WorkerDied).
        self.exits_are_errors = exits_are_errors
        self.state = JobState.NEW
        self.pulled = 0  # tasks taken from source so far
        self.in_flight = 0  # chunks out with workers
        self.requeued: collections.deque[Chunk] = collections.deque()  # to run again, first
        self.attempts: dict[int, int] = {}  # task index -> attempts so far, once retried
        self.stopped: set[int] = set()  # tasks cancelled while running: no error for them
        self.queued = False  # in the scheduler's ready queue
        # Each task is a call of its own, as a submit is: errors name it task 0.
        self.tasks_are_calls = feed is not None

    def shown_index(self, index: int) -> int:
        """The index of task ``index`` as errors name it (0 for a submitted call)."""
        return 0 if self.tasks_are_calls else index

    @property
    def is_over(self) -> bool:
        """Nothing is left to send or to wait for."""
        if self.state is JobState.CANCELLED:
            return self.in_flight == 0
        return self.state is JobState.DRAINED and self.in_flight == 0 and not self.requeued

    @property
    def has_work(self) -> bool:
        """The job could make a chunk now (it belongs in the ready queue)."""
        if self.state is JobState.CANCELLED:
            return False
        return bool(self.requeued) or self.state in (JobState.NEW, JobState.PULLING)
