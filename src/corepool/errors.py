"""Every exception a corepool user may catch.

The tree, and the standard library's exception each one also is:

    PoolError(Exception)                     also a ...
    ├─ WorkerDied          .worker_id ...    concurrent.futures.process.BrokenProcessPool
    ├─ TaskTimeout         .task_index ...   TimeoutError
    ├─ PoolClosed          use after close() RuntimeError
    ├─ SerializationError  .type_name ...    pickle.PicklingError and pickle.UnpicklingError
    ├─ InitializerError    initializer raised  BrokenProcessPool (a BrokenExecutor)
    ├─ BackendError        __cause__ is the backend's own exception
    └─ QueueClosed         a closed corepool.Queue

    RemoteTraceback(Exception)   the worker's traceback text, chained as the
                                 __cause__ of an exception raised by a task

A task's own exception reaches the caller as its own type, not wrapped: catch
``ValueError`` as you would in serial code. Only what corepool itself detects
is a ``PoolError``. Each is also the standard library's exception for the
same event (the right-hand column), so an ``except`` clause written for
``multiprocessing`` or ``concurrent.futures`` catches it unchanged.
"""

from __future__ import annotations

import pickle as _pickle
import signal as _signal
from concurrent.futures.process import BrokenProcessPool as _BrokenProcessPool

__all__ = [
    "BackendError",
    "InitializerError",
    "PoolClosed",
    "PoolError",
    "QueueClosed",
    "RemoteTraceback",
    "SerializationError",
    "TaskTimeout",
    "WorkerDied",
    "signal_name",
]


def signal_name(exitcode: int | None) -> str | None:
    """Return ``"SIGKILL"`` for an exit code of ``-9``; ``None`` for a normal exit."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return _signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


class PoolError(Exception):
    """Base class of the errors that corepool itself raises."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text.

    It is chained as the ``__cause__`` of the exception re-raised in the
    caller, so the usual traceback printout shows where the task failed.
    """

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return f'\n"""\n{self.traceback_text.rstrip()}\n"""'


_SIGNAL_CAUSES = {
    "SIGKILL": (
        "Likely out of memory (the kernel's OOM killer sends SIGKILL) or killed by another process."
    ),
    "SIGSEGV": "Likely a crash in native code (an extension module or ctypes call).",
    "SIGBUS": "Likely a crash in native code, or a memory-mapped file that shrank.",
    "SIGABRT": "Likely a failed assertion or abort() in native code.",
    "SIGFPE": "Likely an arithmetic fault in native code.",
    "SIGILL": "Likely native code built for another processor.",
    "SIGTERM": "Something sent the worker SIGTERM (a process manager, or kill).",
}


def _death_cause(exitcode: int | None, *, in_pool: bool) -> str:
    name = signal_name(exitcode)
    if name == "SIGKILL" and in_pool:
        return _SIGNAL_CAUSES[name][:-1] + ": try fewer workers or a smaller chunksize."
    if name is not None:
        return _SIGNAL_CAUSES.get(name, f"The worker was stopped by {name}.")
    if exitcode is None:
        return (
            "Its exit status is unknown (a Dask scheduler only says that a worker was "
            "lost; a local worker had not ended a second after its connection closed): "
            "it may have been killed, run out of memory or lost its machine; the "
            "worker's own log says more."
        )
    return (
        f"The task (or code it called) ended the process with exit code {exitcode}: "
        "look for os._exit(), sys.exit() or an uncaught BaseException."
    )


class WorkerDied(PoolError, _BrokenProcessPool):
    """A worker process ended while it was running a task.

    Raised (or returned, with ``return_exceptions=True``) for exactly the task
    that was running; the other tasks it held are run again on other workers.
    The worker is replaced and the pool stays usable. It is a
    ``BrokenProcessPool`` too, what ``concurrent.futures`` raises when a
    worker dies (there, the whole pool breaks).

    Attributes:
        worker_id: The worker's number in the pool (0 to ``workers - 1``).
        pid: The process id of the worker that died.
        exitcode: Its exit code, negative for a signal (``-9`` for SIGKILL).
        signal: The signal's name (``"SIGKILL"``), or ``None`` for a plain exit.
        task_index: The index of the task in its job's input, or ``None`` when
            the worker died between tasks.
        replaced: Whether the pool started a replacement (``None`` for a
            ``corepool.Process``, which has none).
        attempts: How many times the task was tried (see ``retries``).
    """

    def __init__(
        self,
        *,
        worker_id: int,
        pid: int,
        exitcode: int | None,
        task_index: int | None,
        job: str,
        replaced: bool | None = True,
        attempts: int = 1,
    ) -> None:
        self.worker_id = worker_id
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal_name(exitcode)
        self.task_index = task_index
        self.job = job
        if self.signal:
            how = f"got {self.signal}"
        elif exitcode is None:
            how = "was lost"
        else:
            how = f"exited with code {exitcode}"
        where = f"in task {task_index} of {job}" if task_index is not None else f"during {job}"
        after = {True: " It was replaced.", False: " The pool is shutting down.", None: ""}[
            replaced
        ]
        tries = f" The task was tried {attempts} times." if attempts > 1 else ""
        cause = _death_cause(exitcode, in_pool=replaced is not None)
        super().__init__(f"worker {worker_id} (pid {pid}) {how} {where}. {cause}{after}{tries}")
        self.replaced = replaced
        self.attempts = attempts

    def __reduce__(self) -> tuple[object, ...]:
        fields = (
            self.worker_id,
            self.pid,
            self.exitcode,
            self.task_index,
            self.job,
            self.replaced,
            self.attempts,
        )
        return (_rebuild_worker_died, fields)


def _rebuild_worker_died(
    worker_id: int,
    pid: int,
    exitcode: int | None,
    task_index: int | None,
    job: str,
    replaced: bool | None,
    attempts: int,
) -> WorkerDied:
    return WorkerDied(
        worker_id=worker_id,
        pid=pid,
        exitcode=exitcode,
        task_index=task_index,
        job=job,
        replaced=replaced,
        attempts=attempts,
    )


class TaskTimeout(PoolError, TimeoutError):
    """A task ran past its ``task_timeout``; its worker was stopped and replaced.

    Attributes:
        task_index: The index of the task in its job's input.
        timeout: The ``task_timeout`` it passed, in seconds.
        attempts: How many times the task was tried.
    """

    def __init__(self, message: str, *, task_index: int, timeout: float, attempts: int = 1) -> None:
        super().__init__(message)
        self.task_index = task_index
        self.timeout = timeout
        self.attempts = attempts

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_task_timeout, (str(self), self.task_index, self.timeout, self.attempts))


def _rebuild_task_timeout(
    message: str, task_index: int, timeout: float, attempts: int
) -> TaskTimeout:
    return TaskTimeout(message, task_index=task_index, timeout=timeout, attempts=attempts)


class PoolClosed(PoolError, RuntimeError):
    """The pool was used after ``close()`` or ``terminate()``.

    Also a ``RuntimeError``, as the standard library raises.
    """


class SerializationError(PoolError, _pickle.PicklingError, _pickle.UnpicklingError):
    """An argument, result or exception could not cross a process boundary.

    Also a ``pickle.PicklingError`` and a ``pickle.UnpicklingError``, whichever
    of the two the code that catches it was written for.

    Attributes:
        type_name: The qualified name of the type that failed, when known.
        traceback_text: The traceback of the failure as text (possibly from
            the worker), or ``""``.
    """

    def __init__(self, message: str, *, type_name: str = "", traceback_text: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_serialization_error,
            (str(self), self.type_name, self.traceback_text),
        )


def _rebuild_serialization_error(
    message: str, type_name: str, traceback_text: str
) -> SerializationError:
    return SerializationError(message, type_name=type_name, traceback_text=traceback_text)


class InitializerError(PoolError, _BrokenProcessPool):
    """The pool's ``initializer`` raised in a worker; the pool cannot start workers.

    Also a ``BrokenProcessPool`` (a ``BrokenExecutor``), as ``concurrent.futures`` raises.
    """


class BackendError(PoolError):
    """A backend failed in a way of its own; ``__cause__`` holds its exception."""


class QueueClosed(PoolError):
    """A ``corepool.Queue`` was closed: ``put`` after ``close()``, or ``get`` once it is drained."""
