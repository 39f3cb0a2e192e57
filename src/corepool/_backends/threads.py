"""The thread backend: chunks run on threads of this process.

For I/O-bound tasks (requests, files, databases), where the GIL is released
while a task waits, and for free-threaded Python builds. Tasks, their
arguments and results never leave the process: nothing is pickled, so
lambdas, locks and open files work as arguments and results.

The threads take chunks from one shared inbox, so a free thread takes the
next chunk whoever it was meant for, and put what they finished in one
outbox, then write a byte to a pipe that the scheduler's ``wait`` watches
with its own wake-up pipe: the scheduler still blocks in one ``select``.
What only a process can do is refused when the pool is created (``REFUSED``).
"""

from __future__ import annotations

import array
import itertools
import logging
import queue
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from corepool._backends.base import (
    Chunk,
    ChunkFinished,
    Event,
    InitializerFailed,
    Outbox,
    Values,
)
from corepool._chunking import TARGET_CHUNK_SECONDS
from corepool._protocol import STATUS_FIELDS, STATUS_IDLE
from corepool._transport.pickling import remote_error
from corepool._worker import give_thread_state, run_tasks
from corepool.options import PoolOptions

__all__ = ["ThreadBackend"]

logger = logging.getLogger("corepool")

# Chunks in the inbox or running, per thread: one running and one waiting,
# so that a thread never idles for a round trip through the scheduler.
CHUNKS_PER_THREAD = 2
_names = itertools.count(1)


class ThreadBackend:
    """Runs chunks on a fixed set of threads of this process."""

    REFUSED: ClassVar[Mapping[str, str]] = {
        "task_timeout": "a thread cannot be killed, so an overdue task could not be stopped",
        "max_tasks_per_worker": "a thread is never replaced by a fresh one",
        "max_memory_per_worker": "threads share this process's memory; none owns any",
        "start_method": "no process is started",
        "preload": "threads run in this process, with the modules it has",
        "inner_threads": "BLAS and OpenMP limits apply to a whole process, not to one thread",
    }

    def __init__(self, options: PoolOptions) -> None:
        self._workers = options.resolved_workers
        self._initializer = options.initializer
        self._initargs = options.initargs
        self._shared = dict(options.shared or {})
        self._inbox: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Chunks sent and not yet reported; only the scheduler's thread
        # counts them. Which thread runs a chunk does not matter here.
        self._in_flight = 0
        self._outbox: Outbox[Event] = Outbox()
        self._pool_name = f"corepool-thread-{next(_names)}"

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def chunk_seconds(self) -> float:
        return TARGET_CHUNK_SECONDS

    def describe(self) -> str:
        return "backend='thread'"

    def start(self) -> None:
        for worker_id in range(self._workers):
            thread = threading.Thread(
                target=self._serve,
                args=(worker_id,),
                name=f"{self._pool_name}-{worker_id}",
                daemon=True,  # a task that never returns must not hold the interpreter's exit
            )
            self._threads.append(thread)
            thread.start()

    def free_workers(self) -> list[int]:
        """One id per chunk the inbox may take now: any thread will run it."""
        room = self._workers * CHUNKS_PER_THREAD - self._in_flight
        return [slot % self._workers for slot in range(max(0, room))]

    def task_budget(self, worker_id: int) -> int | None:
        return None

    def send(self, worker_id: int, chunk: Chunk) -> int:
        self._in_flight += 1
        chunk.moved = (0, 0)  # nothing is pickled: the objects themselves are shared
        self._inbox.put(chunk)
        return _size(chunk.items)

    def wait(self, wakeup_fd: int, timeout: float | None) -> tuple[list[Event], bool]:
        events, woken = self._outbox.wait(wakeup_fd, timeout)
        self._in_flight -= sum(isinstance(event, ChunkFinished) for event in events)
        return events, woken

    def is_idle(self) -> bool:
        return self._in_flight == 0

    def release(self, sharing: int) -> None:
        """Nothing is kept per job: arguments were never copied."""

    def stop_task(self, job_id: int, index: int) -> None:
        """A running thread cannot be stopped: its task runs on and its result is dropped."""

    def stop_job(self, job_id: int) -> None:
        """As ``stop_task``: the job's running tasks run on; the chunks not started are dropped."""

    def shutdown(self, *, graceful: bool) -> None:
        for _ in self._threads:
            self._inbox.put(None)
        if graceful:
            for thread in self._threads:
                thread.join()
        # Without ``graceful`` a running task is left to end by itself (no
        # thread can be killed); its thread exits after it.
        self._outbox.close()

    # -- the threads -----------------------------------------------------------

    def _serve(self, worker_id: int) -> None:
        give_thread_state(dict(self._shared))
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:  # a thread has no exit of its own to take instead
                self._outbox.put(InitializerFailed(worker_id, remote_error(exc)))
                return
        status = memoryview(array.array("q", [STATUS_IDLE] * STATUS_FIELDS))
        while (chunk := self._inbox.get()) is not None:
            started = time.perf_counter()
            # Whatever a task raises is its error: SystemExit and
            # KeyboardInterrupt cannot end a process from here.
            results, errors = run_tasks(
                chunk.fn,
                chunk.mode,
                chunk.items,
                chunk.stride,
                status,
                BaseException,
                in_process=True,
            )
            busy = time.perf_counter() - started
            payload = Values(results, _size(results))
            # All of it is compute: nothing is decoded or encoded on a thread.
            self._outbox.put(ChunkFinished(chunk, payload, errors, busy, worker_id, 0.0, busy, 0.0))


def _size(values: Sequence[Any]) -> int:
    """A cheap estimate of the bytes ``values`` hold, for the read-ahead budget."""
    if isinstance(values, range):  # its items are made as they are read
        return sys.getsizeof(values)
    return sum(map(sys.getsizeof, values))
