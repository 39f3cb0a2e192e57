"""``corepool.Process``: ``multiprocessing.Process`` that returns a value and raises.

The process is a corepool worker that runs one task: started the same way
(fork server, spawn or fork), sent the target by value when it must be
(lambdas, closures, ``__main__``), arguments through the same transport
(large buffers through shared memory; ``Queue``, ``Lock``, ``SharedArray``
and the rest passed as handles), and ended with its parent, never orphaned.
"""

from __future__ import annotations

import select
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from corepool._backends.base import Chunk
from corepool._failures import task_error
from corepool._protocol import CallMode, ChunkDone, RunChunk, Stop
from corepool._spawn import WorkerProcess, configure_worker, start_worker
from corepool._transport.buffers import DEFAULT_THRESHOLD, open_segments, pack
from corepool._transport.channel import close_fds
from corepool._transport.pickling import dumps, loads
from corepool._transport.status import shared_board
from corepool._transport.stdlib_objects import sent_as_when_spawning
from corepool.errors import WorkerDied
from corepool.options import StartMethod, default_start_method

__all__ = ["Process"]

_STATUS_GRACE_S = 2.0
_POLL_S = 0.005


class Process:
    """Run ``target(*args, **kwargs)`` in a new process; get its return value or exception.

    Like ``multiprocessing.Process`` (``start``, ``join``, ``is_alive``,
    ``pid``, ``exitcode``, ``terminate``, ``kill``), plus ``result()``.

    Args:
        target: The function to run; lambdas and closures work.
        args: Its positional arguments.
        kwargs: Its keyword arguments.
        name: A name for messages; the target's name by default.
        start_method: As for ``Pool``; the platform's default if ``None``.

    Example:
        >>> p = corepool.Process(target=sum, args=([1, 2, 3],))
        >>> p.start()
        >>> p.result()
        6
    """

    def __init__(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        start_method: StartMethod | None = None,
    ) -> None:
        if not callable(target):
            raise TypeError(f"target must be callable, got {target!r}")
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self.name = name or getattr(target, "__qualname__", None) or repr(target)
        self._method = start_method or default_start_method()
        self._worker: WorkerProcess | None = None
        self._done: ChunkDone | None = None
        self._payload: Any = None
        self._outcome: tuple[bool, Any] | None = None  # (raised, value) once known

    def __repr__(self) -> str:
        if self._worker is None:
            state = "initial"
        elif self.is_alive():
            state = f"started pid={self.pid}"
        else:
            state = f"stopped exitcode={self.exitcode}"
        return f"<corepool.Process {self.name!r} {state}>"

    def start(self) -> None:
        """Start the process.

        Raises:
            RuntimeError: It was started before.
            SerializationError, TypeError: The target or an argument cannot be pickled.
        """
        if self._worker is not None:
            raise RuntimeError(f"Process {self.name!r} can only be started once")
        # As the stdlib starts a process with them: its own queues, locks and
        # pipe ends among the target and its arguments pickle, and their
        # descriptors travel (plain pickle would copy a Connection's fd number).
        with sent_as_when_spawning():
            items, fds = pack([(self._args, self._kwargs)], DEFAULT_THRESHOLD)
            try:
                function, function_fds = pack(self._target, None)
            except BaseException:
                close_fds(fds)
                raise
        board = shared_board()
        worker = start_worker(self._method, 0, board.fd)
        worker.slot = board.allocate()
        self._worker = worker
        configure_worker(worker, 0, buffer_threshold=DEFAULT_THRESHOLD)
        run = RunChunk(
            chunk_id=0,
            tasks=1,
            stride=1,
            timed=False,
            fn_id=0,
            fn=function,
            mode=CallMode.CALL,
            items=items,
            forget=(),
            exits_are_errors=False,
        )
        worker.conn.send(dumps(run), fds + function_fds)
        worker.conn.send(dumps(Stop()))
        self._flush()

    def _flush(self) -> None:
        """Finish writing the start messages (the connection never blocks)."""
        worker = self._require_started()
        while worker.conn.has_pending_output and worker.is_alive():
            select.select([], [worker.conn], [], 0.1)
            try:
                worker.conn.flush()
            except OSError:
                return

    def _require_started(self) -> WorkerProcess:
        if self._worker is None:
            raise RuntimeError(f"Process {self.name!r} was not started")
        return self._worker

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return None if self._worker is None else self._worker.pid

    @property
    def exitcode(self) -> int | None:
        """``None`` while running; then the exit code, negative for a signal (``-9``).

        It is 0 once the target has run, whether it returned or raised:
        ``result()`` tells which.
        """
        return None if self._worker is None else self._worker.exitcode()

    def is_alive(self) -> bool:
        """Whether the process has started and not ended."""
        return self._worker is not None and self._worker.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the process ends, or ``timeout`` seconds pass."""
        worker = self._require_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._read()
            if worker.slot < 0 or not worker.is_alive():
                # The fork server reports the exit status a moment after the end.
                worker.exitcode(timeout=_STATUS_GRACE_S)
                self._read()
                self._release()
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            waits: list[Any] = [] if self._done is not None else [worker.conn]
            if worker.sentinel is not None:
                waits.append(worker.sentinel)
                select.select(waits, [], [], remaining)
            else:  # no pidfd (macOS): look again every few milliseconds
                select.select(waits, [], [], min(remaining or _POLL_S, _POLL_S))

    def _read(self) -> None:
        worker = self._require_started()
        if worker.conn.closed or self._done is not None:
            return
        try:
            messages = worker.conn.receive()
        except (EOFError, OSError):
            return
        for message in messages:
            done = loads(message.payload)
            if isinstance(done, ChunkDone):
                self._done = done
                self._payload = open_segments(done.results, message.fds, writable_copies=True)

    def _release(self) -> None:
        worker = self._worker
        if worker is not None and worker.slot >= 0:
            worker.close()
            shared_board().release(worker.slot)
            worker.slot = -1

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the process; return what the target returned, or raise what it raised.

        Like ``join``, this waits for the process to end; a process that put
        more items on a ``Queue`` than its socket holds ends only once they
        are taken: get them first (as with ``multiprocessing``).

        Raises:
            TimeoutError: The process did not end within ``timeout`` seconds.
            WorkerDied: The process ended without finishing the target
                (killed, ``os._exit``, a segfault): signal by name, exit code.
            Exception: The target's own exception, with its traceback from
                the process as ``__cause__``.
        """
        if self._outcome is None:
            self.join(timeout)
            worker = self._require_started()
            if worker.exitcode() is None and self._done is None:
                raise TimeoutError(f"Process {self.name!r} did not end within {timeout}s")
            self._outcome = self._settle(worker)
        raised, value = self._outcome
        if raised:
            raise value
        return value

    def _settle(self, worker: WorkerProcess) -> tuple[bool, Any]:
        done = self._done
        job = f"Process({self.name})"
        if done is None:
            died = WorkerDied(
                worker_id=0,
                pid=worker.pid,
                exitcode=worker.exitcode(),
                task_index=0,
                job=job,
                replaced=None,
            )
            return True, died
        if done.errors:
            chunk = Chunk(0, 0, self._target, CallMode.CALL, [0], [(self._args, self._kwargs)])
            return True, task_error(job, 0, chunk.items[0], done.errors[0])
        return False, self._payload.load()[0]

    def terminate(self) -> None:
        """Send SIGTERM."""
        self._require_started().kill(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL."""
        self._require_started().kill(signal.SIGKILL)

    def __del__(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None and worker.slot >= 0 and not worker.is_alive():
            self._release()
