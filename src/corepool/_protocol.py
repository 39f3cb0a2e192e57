"""Messages between the parent and a worker process.

Both sides import this module. Messages are immutable typed records
(NamedTuple: they pickle as a class reference plus a tuple, the cheapest
record pickle has). It imports nothing of corepool but ``errors``.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = [
    "STATUS_CHUNK",
    "STATUS_FIELDS",
    "STATUS_IDLE",
    "STATUS_POSITION",
    "STATUS_STARTED",
    "THREAD_VARIABLES",
    "CallMode",
    "ChunkDone",
    "ErrorSite",
    "InitFailed",
    "Packed",
    "Park",
    "Preload",
    "Ready",
    "RemoteError",
    "RunChunk",
    "Stop",
    "WorkerConfig",
]

# The status slot: a few int64 fields of shared memory per worker, written by
# the worker, read by the parent when the worker dies (see _transport/status.py).
STATUS_CHUNK = 0  # id of the chunk being run, or STATUS_IDLE
STATUS_POSITION = 1  # position, inside that chunk, of the task being run
STATUS_STARTED = 2  # time.monotonic_ns() when it started; written only for timed chunks
STATUS_FIELDS = 4
STATUS_IDLE = -1

# The environment variables that BLAS and OpenMP libraries read when they load.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


class CallMode(enum.IntEnum):
    """How a task's payload becomes a call of the job's function."""

    ITEM = 0  # fn(item)                 map, imap, imap_unordered
    STAR = 1  # fn(*item)                starmap, map over several iterables
    CALL = 2  # fn(*args, **kwargs)      submit: item is (args, kwargs)


class Packed(NamedTuple):
    """A pickle whose large buffers travel as shared-memory segments (see _transport/buffers.py).

    The segments' descriptors ride with the message that holds this.
    """

    data: bytes
    kinds: bytes  # one byte per segment, in order: b"c" a copy, b"s" a shared segment


class WorkerConfig(NamedTuple):
    """The first message a new worker receives, and the one that adopts a parked worker."""

    worker_id: int
    slot: int  # the worker's slot on the status board, for life
    parent_pid: int  # the worker exits when this process ends
    max_memory_bytes: int | None  # ask to retire once resident memory passes this
    sys_path: list[str]
    # The message's descriptors are the shared objects' first, then the initializer's.
    initializer: Packed | None  # a pickled (callable, args) pair
    buffer_threshold: int | None  # results' buffers this large go through shared memory
    shared: Packed | None  # the pool's load-once objects: a dict for worker_state()
    inner_threads: int | None  # BLAS/OpenMP threads for libraries already loaded
    authkey: bytes  # the parent's, so that Manager proxies and Listeners accept the worker


class RunChunk(NamedTuple):
    """Run ``fn`` on each of ``items`` and answer with one ``ChunkDone``."""

    chunk_id: int
    tasks: int  # how many tasks ``items`` holds
    stride: int  # the status slot is written every `stride` tasks (see _worker)
    timed: bool  # write each task's start time too: the parent enforces a task_timeout
    fn_id: int
    fn: Packed | None  # the pickled function, sent once per worker and function
    mode: CallMode
    items: Packed  # the list of task payloads; its descriptors come before the function's
    forget: tuple[int, ...]  # function ids the worker may drop
    exits_are_errors: bool  # a task's SystemExit or KeyboardInterrupt is its error


class Stop(NamedTuple):
    """Finish: the worker exits its loop and the process ends with code 0."""


class Park(NamedTuple):
    """The pool is closing: forget its functions and state, and wait to be adopted.

    A parked worker that receives no ``WorkerConfig`` within ``timeout_s``
    exits by itself.
    """

    timeout_s: float


class Preload(NamedTuple):
    """Import ``modules`` now, while idle: the next messages will need them. No answer.

    The parent sends it to idle workers when a function must travel by
    value, so that they load cloudpickle before that function reaches them
    rather than on receiving it, one after another.
    """

    modules: tuple[str, ...]


class ErrorSite(enum.IntEnum):
    """Where, in a worker, an error arose."""

    TASK = 0  # the task raised
    ARGUMENTS = 1  # the function or the arguments would not unpickle
    RESULT = 2  # the result would not pickle


class RemoteError(NamedTuple):
    """An exception raised in a worker, ready to cross back."""

    type_name: str
    message: str
    traceback_text: str
    exception: bytes | None  # the pickled exception; None when it could not cross
    site: ErrorSite
    problem: str  # why the exception could not cross, or ""
    # The exception itself, where it never crosses (the thread backend);
    # always None on the wire.
    live: BaseException | None = None


class Ready(NamedTuple):
    """The worker started and ran its initializer."""

    pid: int


class InitFailed(NamedTuple):
    """The worker's initializer raised; the worker exits after sending this."""

    pid: int
    error: RemoteError


class ChunkDone(NamedTuple):
    """The results of a ``RunChunk``, with the worker's timings in seconds."""

    chunk_id: int
    results: Packed  # the list of results; None where errors has an entry
    errors: dict[int, RemoteError] | None  # position in the chunk -> error
    decode_s: float
    compute_s: float
    encode_s: float
    over_memory: bool  # past max_memory_bytes: retire this worker once its chunks are done
