"""What went wrong, as the exception the caller sees: messages with ids, causes, next steps.

Runs in the parent (the scheduler thread, and ``corepool.Process``). Turns a
worker's ``RemoteError``, a worker's death, a timeout or a pickling failure
into the caller's exception, with the task named. Imports ``_backends.base``,
``_protocol``, ``_transport`` and ``errors``.
"""

from __future__ import annotations

import reprlib
from typing import Any

from corepool._backends.base import WorkerLost
from corepool._protocol import CallMode, ErrorSite, RemoteError
from corepool._transport.pickling import (
    describe_unpicklable,
    dumps,
    find_unpicklable,
    loads,
    qualified_type_name,
)
from corepool.errors import (
    InitializerError,
    PoolError,
    RemoteTraceback,
    SerializationError,
    TaskTimeout,
    WorkerDied,
)

__all__ = [
    "add_note",
    "death_error",
    "initializer_error",
    "task_error",
    "unpicklable_arguments",
    "unpicklable_function",
]

_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` where Python has it (3.11+)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)


def unpicklable_arguments(
    job_name: str, index: int, item: Any, mode: CallMode, error: Exception
) -> SerializationError:
    """The error of a task whose arguments would not pickle in the parent."""
    failure = SerializationError(
        f"the arguments of task {index} of {job_name} could not be pickled to "
        f"send them to a worker: {qualified_type_name(error)}: {error}"
        f"{_where_unpicklable(item, mode)}. Pass plain data (or create the "
        "object inside the task or the pool's initializer) instead.",
        type_name=_culprit_type(item, mode),
    )
    failure.__cause__ = error
    return failure


def unpicklable_function(job_name: str, fn: Any, error: Exception) -> SerializationError:
    """The error of a call whose function would not pickle."""
    culprit = find_unpicklable(fn, "the function")
    failure = SerializationError(
        f"the function of {job_name} could not be pickled: "
        f"{qualified_type_name(error)}: {error}"
        f"{describe_unpicklable(fn, 'the function')}. Define it at module "
        "level, and create what it needs (locks, connections, open files) inside "
        "it or in the pool's initializer.",
        type_name=qualified_type_name(culprit[1] if culprit else fn),
    )
    failure.__cause__ = error
    return failure


def death_error(
    job_name: str,
    index: int,
    event: WorkerLost,
    timeout_s: float | None,
    *,
    attempts: int,
    replaced: bool,
) -> PoolError:
    """``TaskTimeout`` or ``WorkerDied`` for the task that was running when its worker ended."""
    if event.timed_out:
        return TaskTimeout(
            f"task {index} of {job_name} passed task_timeout={timeout_s}s; "
            f"worker {event.worker_id} was stopped and replaced."
            + (f" The task was tried {attempts} times." if attempts > 1 else ""),
            task_index=index,
            timeout=timeout_s or 0.0,
            attempts=attempts,
        )
    return WorkerDied(
        worker_id=event.worker_id,
        pid=event.pid,
        exitcode=event.exitcode,
        task_index=index,
        job=job_name,
        replaced=replaced,
        attempts=attempts,
    )


def initializer_error(worker_id: int, remote: RemoteError) -> InitializerError:
    """The error that stops a pool whose initializer raised in a worker."""
    error = InitializerError(
        f"the pool's initializer raised {remote.type_name}: {remote.message} "
        f"(in worker {worker_id}). No task can run: fix the initializer "
        "and create a new pool."
    )
    error.__cause__ = RemoteTraceback(remote.traceback_text)
    return error


def _where_unpicklable(item: Any, mode: CallMode) -> str:
    """Where in a task's arguments pickling fails, as ``describe_unpicklable`` says it."""
    if mode is CallMode.ITEM:
        return describe_unpicklable(item, "the item")
    if mode is CallMode.STAR:
        return describe_unpicklable(tuple(item), "args")
    args, kwargs = item
    return describe_unpicklable(tuple(args), "args") or describe_unpicklable(kwargs, "kwargs")


def _culprit_type(item: Any, mode: CallMode) -> str:
    """The type name of what would not pickle, looking inside argument tuples."""
    if mode is CallMode.ITEM:
        return qualified_type_name(item)
    args = item if mode is CallMode.STAR else (*item[0], *item[1].values())
    for arg in args:
        try:
            dumps(arg)
        except Exception:
            return qualified_type_name(arg)
    return qualified_type_name(item)


def task_error(job_name: str, index: int, item: Any, remote: RemoteError) -> BaseException:
    """Turn a worker's ``RemoteError`` (of task ``index``, run on ``item``) into the caller's."""
    where = f"task {index} of {job_name}"
    if remote.live is not None:
        # Raised in this process (a thread): the very exception, with its own
        # traceback and cause, as ThreadPoolExecutor hands it back.
        add_note(remote.live, f"raised by {where}, item {_short_repr.repr(item)}")
        return remote.live
    if remote.site is ErrorSite.TASK and remote.exception is not None:
        try:
            exc: BaseException = loads(remote.exception)
        except Exception as failure:
            exc = SerializationError(
                f"{where} raised {remote.type_name}: {remote.message}, which could not be "
                f"unpickled in the parent ({qualified_type_name(failure)}: {failure}). Give "
                "the exception class an __init__ that accepts its args, or a __reduce__.",
                type_name=remote.type_name,
                traceback_text=remote.traceback_text,
            )
        else:
            add_note(exc, f"raised by {where}, item {_short_repr.repr(item)}")
    elif remote.site is ErrorSite.TASK:
        exc = SerializationError(
            f"{where} raised {remote.type_name}: {remote.message}, which could not be sent "
            f"back to the parent: {remote.problem}. Keep only plain data in the exception, "
            "and give its class an __init__ that accepts its args (or a __reduce__).",
            type_name=remote.type_name,
            traceback_text=remote.traceback_text,
        )
    elif remote.site is ErrorSite.RESULT:
        exc = SerializationError(
            f"{where}: {remote.message}",
            type_name=remote.type_name,
            traceback_text=remote.traceback_text,
        )
    else:
        exc = SerializationError(
            f"{where} could not start: its function or arguments failed to unpickle in the "
            f"worker with {remote.type_name}: {remote.message}",
            type_name=remote.type_name,
            traceback_text=remote.traceback_text,
        )
    exc.__cause__ = RemoteTraceback(remote.traceback_text)
    return exc
