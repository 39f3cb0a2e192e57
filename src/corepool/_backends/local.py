"""The process backend: worker processes on this machine, one connection each.

Runs in the parent, in the scheduler thread only (no locks needed). It keeps
each worker's in-flight chunks (one running, one queued), sends each function
once per worker, and turns a worker's death into a ``WorkerLost`` event that
names the task it was running, read from the status board.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import selectors
import signal
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

from corepool._backends.base import (
    Chunk,
    ChunkFinished,
    Event,
    InitializerFailed,
    WorkerLost,
    WorkerReady,
)
from corepool._chunking import TARGET_CHUNK_SECONDS
from corepool._protocol import (
    ChunkDone,
    InitFailed,
    Packed,
    Park,
    Preload,
    Ready,
    RunChunk,
    Stop,
)
from corepool._spawn import (
    PARK_SECONDS,
    WorkerProcess,
    WorkerSetup,
    adopt,
    configure_worker,
    park,
    start_worker,
)
from corepool._transport.buffers import SegmentCache, open_segments, pack
from corepool._transport.channel import close_fds
from corepool._transport.pickling import BY_VALUE_MODULE, dumps, loads, needs_by_value
from corepool._transport.status import shared_board
from corepool._transport.stdlib_objects import sent_as_when_spawning
from corepool.errors import PoolError
from corepool.options import PoolOptions

__all__ = ["LocalBackend"]

logger = logging.getLogger(__name__)

# A worker holds its running chunk plus one queued, so it never waits for the
# parent between chunks.
CHUNKS_PER_WORKER = 2
# Remember this many functions per pool; older ones are dropped by workers too.
FUNCTION_CACHE_SIZE = 64
# A worker that dies before it is ready this many times in a row means the
# environment is broken, not the task: stop instead of looping.
MAX_START_FAILURES = 3
STOP_GRACE_S = 2.0


class _Function(NamedTuple):
    """A task function as sent to workers: its pool-wide id, pickle and descriptors."""

    fn: Callable[[], Any]  # a weak reference where it can be: the cache keeps nothing alive
    fn_id: int
    packed: Packed
    fds: list[int]  # the parent's; each first send to a worker sends duplicates
    by_value: bool  # loading it imports cloudpickle


class _Slot:
    """One worker position of the pool and the process currently in it."""

    __slots__ = (
        "has_by_value",
        "in_flight",
        "known_fns",
        "launched",
        "process",
        "ready",
        "tasks_left",
    )

    def __init__(self, process: WorkerProcess, tasks_left: int | None, launched: float) -> None:
        self.process = process
        self.launched = launched  # time.perf_counter() when its start was asked for
        self.in_flight: collections.deque[Chunk] = collections.deque()
        self.known_fns: set[int] = set()
        self.ready = False
        self.tasks_left = tasks_left
        self.has_by_value = False  # sent a function by value, or told to load cloudpickle


class LocalBackend:
    """Runs chunks on worker processes of this machine."""

    REFUSED: ClassVar[Mapping[str, str]] = {}

    def __init__(self, options: PoolOptions) -> None:
        self.options = options
        self._workers = options.resolved_workers
        self._method = options.resolved_start_method
        self._board = shared_board()
        # Workers of a pool with no per-worker setup can serve the next pool.
        self._setup = WorkerSetup(options.resolved_preload, options.resolved_inner_threads)
        self._park_key = (self._method, self._setup)
        self._parkable = (
            options.initializer is None
            and options.max_tasks_per_worker is None
            and options.max_memory_per_worker is None
        )
        self._slots: dict[int, _Slot] = {}
        # One selector for the backend's life: each worker's connection and
        # pidfd are registered when it starts and unregistered when it goes.
        self._selector = selectors.DefaultSelector()
        self._retiring: list[WorkerProcess] = []
        self._functions: collections.OrderedDict[int, _Function] = collections.OrderedDict()
        self._forgotten: list[int] = []
        self._next_fn_id = 0
        self._by_value_in_use = False  # a function went by value: workers load cloudpickle
        self._start_failures = 0
        self._threshold = options.buffer_threshold_bytes
        # The initializer and its arguments, with the descriptors of the
        # corepool primitives among them (a Lock, a Queue): sent to each worker.
        self._initializer: Packed | None = None
        self._initializer_fds: list[int] = []
        if options.initializer is not None:
            # As the stdlib spawns a pool's workers with them: its own queues
            # and locks in initargs pickle (and their descriptors travel).
            with sent_as_when_spawning():
                self._initializer, self._initializer_fds = pack(
                    (options.initializer, options.initargs), self._threshold
                )
        # Load-once objects: pickled once, their buffers put in segments once;
        # each worker maps the same segments.
        self._shared: Packed | None = None
        self._shared_fds: list[int] = []
        if options.shared:
            self._shared, self._shared_fds = pack(dict(options.shared), self._threshold)
        # Copies of large arguments, by key (a job's, or one jobs share).
        self._segment_caches: dict[int, SegmentCache] = {}

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def chunk_seconds(self) -> float:
        return TARGET_CHUNK_SECONDS

    def describe(self) -> str:
        return f"start_method={self._method!r}"

    def start(self) -> None:
        for worker_id in range(self._workers):
            self._start(worker_id)

    def _start(self, worker_id: int) -> None:
        launched = time.perf_counter()
        while True:
            process = adopt(self._park_key) if self._parkable else None
            how = "adopted"
            if process is None:
                process = start_worker(self._method, worker_id, self._board.fd, self._setup)
                process.slot = self._board.allocate()
                how = "started"
            try:
                configure_worker(
                    process,
                    worker_id,
                    buffer_threshold=self._threshold,
                    max_memory_bytes=self.options.max_memory_bytes,
                    initializer=self._initializer,
                    initializer_fds=self._initializer_fds,
                    shared=self._shared,
                    shared_fds=self._shared_fds,
                    inner_threads=self._setup.inner_threads,
                )
                break
            except OSError:  # it ended before it took its configuration: start another
                exitcode = process.exitcode(timeout=1.0)
                self._release_process(process)
                logger.debug(
                    "worker %d (pid %d, %s) ended with %s before it was configured",
                    worker_id,
                    process.pid,
                    how,
                    exitcode,
                )
                if how == "started":  # an adopted one may have been leaving: not a failure
                    self._count_start_failure(process.pid, exitcode)
        self._slots[worker_id] = _Slot(process, self.options.max_tasks_per_worker, launched)
        self._selector.register(process.conn, selectors.EVENT_READ, worker_id)
        if process.sentinel is not None:
            self._selector.register(process.sentinel, selectors.EVENT_READ, worker_id)
        logger.debug("worker %d %s, pid %d (%s)", worker_id, how, process.pid, self._method)

    def free_workers(self) -> list[int]:
        free = [
            (len(slot.in_flight), worker_id)
            for worker_id, slot in self._slots.items()
            if len(slot.in_flight) < CHUNKS_PER_WORKER and slot.tasks_left != 0
        ]
        return [worker_id for _, worker_id in sorted(free)]

    def task_budget(self, worker_id: int) -> int | None:
        return self._slots[worker_id].tasks_left

    def stop_task(self, job_id: int, index: int) -> None:
        """Kill the worker running task ``index`` of job ``job_id``, if one is running it now."""
        for worker_id, slot in self._slots.items():
            head = slot.in_flight[0] if slot.in_flight else None
            if head is None or head.job_id != job_id or head.stride != 1:
                continue
            chunk_id, position, _ = self._board.read(slot.process.slot)
            if (
                chunk_id == head.id
                and 0 <= position < len(head)
                and head.indices[position] == index
            ):
                logger.debug("killing worker %d to stop task %d of a job", worker_id, index)
                slot.process.kill()

    def stop_job(self, job_id: int) -> None:
        """Kill the workers whose running chunk (the first they hold) is of job ``job_id``."""
        for worker_id, slot in self._slots.items():
            if slot.in_flight and slot.in_flight[0].job_id == job_id:
                logger.debug("killing worker %d to stop the tasks of a job", worker_id)
                slot.process.kill()

    def is_idle(self) -> bool:
        return not any(slot.in_flight for slot in self._slots.values())

    def release(self, sharing: int) -> None:
        cache = self._segment_caches.pop(sharing, None)
        if cache is not None:
            cache.close()

    def send(self, worker_id: int, chunk: Chunk) -> int:
        slot = self._slots[worker_id]
        cache = self._segment_caches.get(chunk.sharing)
        if cache is None:
            cache = self._segment_caches[chunk.sharing] = SegmentCache()
        # First: if an item will not pickle, nothing has changed.
        items, fds = pack(chunk.items, self._threshold, cache)
        try:
            function = self._function(chunk.fn)
        except BaseException:
            close_fds(fds)
            raise
        forget = tuple(fid for fid in self._forgotten if fid in slot.known_fns)
        slot.known_fns.difference_update(forget)
        first_time = function.fn_id not in slot.known_fns
        slot.known_fns.add(function.fn_id)
        if first_time:
            fds.extend(os.dup(fd) for fd in function.fds)
            if function.by_value and not slot.has_by_value:
                slot.has_by_value = True
                self._preload_by_value()
        message = RunChunk(
            chunk_id=chunk.id,
            tasks=len(chunk),
            stride=chunk.stride,
            timed=chunk.timeout_s is not None,
            fn_id=function.fn_id,
            fn=function.packed if first_time else None,
            mode=chunk.mode,
            items=items,
            forget=forget,
            exits_are_errors=chunk.exits_are_errors,
        )
        slot.in_flight.append(chunk)
        if slot.tasks_left is not None:
            slot.tasks_left -= len(chunk)
        # Segments (large buffers, shared arrays) count at their size.
        shared = sum(os.fstat(fd).st_size for fd in fds[: len(items.kinds)])
        chunk.moved = (len(items.data) + (len(function.packed.data) if first_time else 0), shared)
        _send_quietly(slot.process, dumps(message), fds)
        return len(items.data) + shared

    def _function(self, fn: Any) -> _Function:
        """``fn`` with its pool-wide id and its pickle, made once and remembered."""
        key = id(fn)
        entry = self._functions.get(key)
        if entry is not None and entry.fn() is fn:
            self._functions.move_to_end(key)
            return entry
        # Threshold None: a function's buffers travel in band; only the
        # descriptors of corepool primitives among its globals ride along.
        packed, fds = pack(fn, None)
        entry = self._functions[key] = _Function(
            _reference(fn), self._next_fn_id, packed, fds, needs_by_value(packed.data)
        )
        self._next_fn_id += 1
        if len(self._functions) > FUNCTION_CACHE_SIZE:
            _, old = self._functions.popitem(last=False)
            close_fds(old.fds)
            self._forgotten.append(old.fn_id)
            del self._forgotten[:-FUNCTION_CACHE_SIZE]
        return entry

    def _preload_by_value(self) -> None:
        """Have idle workers load cloudpickle now: a function travels by value.

        Each would otherwise import it (about 10 ms) on receiving its first
        chunk of that function, while the others wait on what it holds.
        """
        self._by_value_in_use = True  # workers that become ready later are told too
        message = dumps(Preload((BY_VALUE_MODULE,)))
        for slot in self._slots.values():
            if slot.ready and not slot.in_flight and not slot.has_by_value:
                slot.has_by_value = True
                _send_quietly(slot.process, message)

    def wait(self, wakeup_fd: int, timeout: float | None) -> tuple[list[Event], bool]:
        selector = self._selector
        if wakeup_fd not in selector.get_map():
            selector.register(wakeup_fd, selectors.EVENT_READ)
        for slot in self._slots.values():
            conn = slot.process.conn
            interest = selectors.EVENT_READ
            if conn.has_pending_output:
                interest |= selectors.EVENT_WRITE
            if selector.get_key(conn).events != interest:
                selector.modify(conn, interest, selector.get_key(conn).data)
        ready = selector.select(self._until_next_deadline(timeout))
        events: list[Event] = []
        woken = False
        readable: set[int] = set()
        for key, mask in ready:
            if key.fd == wakeup_fd:
                woken = True
            elif isinstance(key.data, WorkerProcess):
                self._reap_retired(key.data)
            elif (
                mask & selectors.EVENT_WRITE
                and key.fd == self._slots[key.data].process.conn.fileno()
            ):
                _flush_quietly(self._slots[key.data].process)
            if mask & selectors.EVENT_READ and isinstance(key.data, int):
                readable.add(key.data)
        for worker_id in sorted(readable):
            if worker_id in self._slots:
                events.extend(self._read_worker(worker_id))
        events.extend(self._stop_overdue())
        return events, woken

    def _running_deadlines(self) -> list[tuple[float, int, bool]]:
        """``(deadline, worker_id, started)`` of each worker's head chunk that has a task_timeout.

        A head chunk the worker has not started yet (it is still decoding it)
        gets a provisional deadline a full timeout from now: its first task
        cannot end sooner, and the scheduler looks again then.
        """
        deadlines = []
        now = time.monotonic()
        for worker_id, slot in self._slots.items():
            head = slot.in_flight[0] if slot.in_flight else None
            if head is None or head.timeout_s is None:
                continue
            chunk_id, _, started_ns = self._board.read(slot.process.slot)
            if chunk_id == head.id and started_ns > 0:
                deadlines.append((started_ns / 1e9 + head.timeout_s, worker_id, True))
            else:
                deadlines.append((now + head.timeout_s, worker_id, False))
        return deadlines

    def _until_next_deadline(self, timeout: float | None) -> float | None:
        deadlines = self._running_deadlines()
        if not deadlines:
            return timeout
        remaining = max(0.0, min(deadlines)[0] - time.monotonic())
        return remaining if timeout is None else min(timeout, remaining)

    def _stop_overdue(self) -> list[Event]:
        """Kill each worker whose running task passed its deadline; report the losses."""
        now = time.monotonic()
        events: list[Event] = []
        for deadline, worker_id, started in self._running_deadlines():
            if started and deadline <= now and worker_id in self._slots:
                process = self._slots[worker_id].process
                logger.debug("worker %d (pid %d) passed its task_timeout", worker_id, process.pid)
                process.kill()
                events.append(self._worker_lost(worker_id, timed_out=True))
        return events

    def _read_worker(self, worker_id: int) -> list[Event]:
        """Read all that ``worker_id`` sent; report its death once it is drained."""
        slot = self._slots[worker_id]
        events: list[Event] = []
        try:
            messages = slot.process.conn.receive()
        except (EOFError, OSError):
            messages = None
        for message in messages or ():
            event = self._handle_message(worker_id, loads(message.payload), message.fds)
            if event is not None:
                events.append(event)
                if isinstance(event, InitializerFailed):
                    return events
        if self._slots.get(worker_id) is not slot:
            # Retired while we read (max_tasks_per_worker): its successor holds
            # the slot now, and the old process's end is no loss.
            return events
        if messages is None:
            events.append(self._worker_lost(worker_id))
            return events
        if slot.process.sentinel is not None and not slot.process.is_alive():
            events.append(self._worker_lost(worker_id))
        return events

    def _handle_message(self, worker_id: int, message: object, fds: list[int]) -> Event | None:
        slot = self._slots[worker_id]
        if fds and not isinstance(message, ChunkDone):
            close_fds(fds)  # only results come with segments
        if isinstance(message, ChunkDone):
            payload = open_segments(message.results, fds, writable_copies=True)
            chunk = slot.in_flight.popleft()
            assert chunk.id == message.chunk_id, "a worker answers its chunks in order"
            if message.over_memory:
                logger.debug("worker %d passed max_memory_per_worker", worker_id)
                slot.tasks_left = 0  # no new chunks; retired once those it holds are done
            if slot.tasks_left == 0 and not slot.in_flight:
                self._retire(worker_id)
            busy_s = message.decode_s + message.compute_s + message.encode_s
            return ChunkFinished(
                chunk,
                payload,
                message.errors,
                busy_s,
                worker_id,
                message.decode_s,
                message.compute_s,
                message.encode_s,
            )
        if isinstance(message, Ready):
            slot.ready = True
            self._start_failures = 0
            if self._by_value_in_use:
                self._preload_by_value()
            return WorkerReady(worker_id, time.perf_counter() - slot.launched)
        if isinstance(message, InitFailed):
            return InitializerFailed(worker_id, message.error)
        raise PoolError(f"worker {worker_id} sent an unexpected message: {message!r}")

    def _unwatch(self, process: WorkerProcess) -> None:
        """Unregister ``process`` from the selector: before its descriptors close."""
        self._selector.unregister(process.conn)
        if process.sentinel is not None and process.sentinel in self._selector.get_map():
            self._selector.unregister(process.sentinel)

    def _worker_lost(self, worker_id: int, *, timed_out: bool = False) -> WorkerLost:
        slot = self._slots.pop(worker_id)
        process = slot.process
        self._unwatch(process)
        exitcode = process.exitcode(timeout=1.0)
        chunk_id, position, _ = self._board.read(process.slot)
        running = bool(slot.in_flight) and slot.in_flight[0].id == chunk_id
        self._release_process(process)
        lost = WorkerLost(
            worker_id,
            process.pid,
            exitcode,
            list(slot.in_flight),
            position if running else None,
            timed_out=timed_out and running,
        )
        logger.debug("worker %d (pid %d) ended with %s", worker_id, process.pid, exitcode)
        if not slot.ready:
            self._count_start_failure(process.pid, exitcode)
        self._start(worker_id)
        return lost

    def _release_process(self, process: WorkerProcess) -> None:
        """Let go of a worker that has ended: its handles, and its slot on the status board."""
        process.close()
        self._board.release(process.slot)

    def _count_start_failure(self, pid: int, exitcode: int | None) -> None:
        """Count a worker that died before it was ready; give up after a few in a row."""
        self._start_failures += 1
        if self._start_failures >= MAX_START_FAILURES:
            raise PoolError(
                f"{MAX_START_FAILURES} workers in a row died before they were ready "
                f"(last: pid {pid}, exit code {exitcode}). The environment "
                "cannot start workers: check the error output above, or try "
                "start_method='spawn'."
            )

    def _retire(self, worker_id: int) -> None:
        """Stop a worker that reached max_tasks_per_worker and start its successor."""
        slot = self._slots.pop(worker_id)
        _send_quietly(slot.process, dumps(Stop()))
        self._unwatch(slot.process)
        self._selector.register(slot.process.conn, selectors.EVENT_READ, slot.process)
        self._retiring.append(slot.process)
        self._start(worker_id)

    def _reap_retired(self, process: WorkerProcess) -> None:
        self._selector.unregister(process.conn)
        process.exitcode(timeout=STOP_GRACE_S)
        self._release_process(process)
        self._retiring.remove(process)

    def shutdown(self, *, graceful: bool) -> None:
        self._selector.close()
        processes = self._retiring
        for slot in self._slots.values():
            if graceful and self._parkable and not slot.in_flight:
                _send_quietly(slot.process, dumps(Park(PARK_SECONDS)))
                if not slot.process.conn.has_pending_output and slot.process.is_alive():
                    park(self._park_key, slot.process)
                    continue
            processes.append(slot.process)
        self._slots.clear()
        self._retiring = []
        # Escalate: ask, then SIGTERM, then SIGKILL; each step only for those still running.
        if graceful:
            for process in processes:
                _send_quietly(process, dumps(Stop()))
            _stop_all(processes, STOP_GRACE_S)
            _stop_all(processes, STOP_GRACE_S, signal.SIGTERM)
        _stop_all(processes, STOP_GRACE_S, signal.SIGKILL)
        for process in processes:
            self._release_process(process)
        for sharing in list(self._segment_caches):
            self.release(sharing)
        close_fds(self._shared_fds)
        close_fds(self._initializer_fds)
        self._shared_fds = self._initializer_fds = []
        for function in self._functions.values():
            close_fds(function.fds)
        self._functions.clear()


def _reference(fn: Any) -> Callable[[], Any]:
    """A weak reference to ``fn``; a strong one for what has none (builtins: never stale)."""
    try:
        return weakref.ref(fn)
    except TypeError:
        return lambda: fn


def _send_quietly(process: WorkerProcess, payload: bytes, fds: list[int] | None = None) -> None:
    """Queue a message (the channel takes ``fds``); a dead worker is noticed by ``wait``."""
    with contextlib.suppress(OSError):
        process.conn.send(payload, fds or ())


def _flush_quietly(process: WorkerProcess) -> None:
    with contextlib.suppress(OSError):
        process.conn.flush()


def _stop_all(processes: list[WorkerProcess], grace_s: float, signum: int | None = None) -> None:
    """Send ``signum`` (if given) to those still running, then wait up to ``grace_s`` for all."""
    running = [process for process in processes if process.is_alive()]
    for process in running:
        if signum is not None:
            logger.debug("sending %s to worker pid %d", signal.Signals(signum).name, process.pid)
            process.kill(signum)
    deadline = time.monotonic() + grace_s
    for process in running:
        process.exitcode(timeout=max(0.0, deadline - time.monotonic()))
