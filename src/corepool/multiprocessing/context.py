"""Contexts: ``get_context(method)`` gives an object with the module's names, for one start method.

Runs in the caller. As in the stdlib, the module's functions are those of
the default context, whose start method ``set_start_method`` chooses; a
concrete context (``get_context("spawn")``) makes its pools and processes
with its own method, whatever the default.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.managers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from corepool.multiprocessing import _start
from corepool.multiprocessing import connection as _connection
from corepool.multiprocessing import pool as _pool
from corepool.multiprocessing import queues as _queues
from corepool.multiprocessing import sharedctypes as _sharedctypes
from corepool.multiprocessing import synchronize as _sync
from corepool.multiprocessing.connection import Connection
from corepool.multiprocessing.process import (
    ForkProcess,
    ForkServerProcess,
    Process,
    SpawnProcess,
)
from corepool.options import START_METHODS, StartMethod

__all__ = ["BaseContext", "DefaultContext", "default_context"]

_PROCESS_CLASSES: dict[str, type[Process]] = {
    "fork": ForkProcess,
    "forkserver": ForkServerProcess,
    "spawn": SpawnProcess,
}


class BaseContext:
    """The names of ``corepool.multiprocessing``, for one start method."""

    ProcessError = multiprocessing.ProcessError
    BufferTooShort = multiprocessing.BufferTooShort
    TimeoutError = multiprocessing.TimeoutError
    AuthenticationError = multiprocessing.AuthenticationError

    current_process = staticmethod(multiprocessing.current_process)
    parent_process = staticmethod(multiprocessing.parent_process)
    active_children = staticmethod(multiprocessing.active_children)
    cpu_count = staticmethod(multiprocessing.cpu_count)
    freeze_support = staticmethod(multiprocessing.freeze_support)
    get_logger = staticmethod(multiprocessing.get_logger)
    log_to_stderr = staticmethod(multiprocessing.log_to_stderr)
    allow_connection_pickling = staticmethod(multiprocessing.allow_connection_pickling)
    set_executable = staticmethod(multiprocessing.set_executable)
    set_forkserver_preload = staticmethod(multiprocessing.set_forkserver_preload)

    def __init__(self, method: StartMethod | None) -> None:
        self._method = method

    @property
    def Process(self) -> type[Process]:  # noqa: N802 (the stdlib's name)
        """The ``Process`` class of this context's start method."""
        return Process if self._method is None else _PROCESS_CLASSES[self._method]

    @property
    def reducer(self) -> Any:
        """The stdlib's reduction module, for pickling its own objects."""
        return multiprocessing.reducer

    def get_start_method(self, allow_none: bool = False) -> StartMethod:
        """This context's start method."""
        if self._method is None:
            return _start.get_start_method(allow_none)
        return self._method

    def get_context(self, method: str | None = None) -> BaseContext:
        """The context of ``method`` (the default context for ``None``).

        Raises:
            ValueError: ``method`` is not one of corepool's start methods.
        """
        if method is None:
            return default_context
        return _CONCRETE[_start.check_method(method)]

    def get_all_start_methods(self) -> list[str]:
        """Every start method, the default first."""
        return _start.get_all_start_methods()

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        """Only the default context's start method can be set.

        Raises:
            ValueError: Always, on a concrete context (as the stdlib).
        """
        raise ValueError("cannot set start method of concrete context")

    def Pool(  # noqa: N802 (the stdlib's name)
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
    ) -> _pool.Pool:
        """A ``Pool`` whose workers start with this context's method."""
        return _pool.Pool(processes, initializer, initargs, maxtasksperchild, context=self)

    def Manager(self) -> multiprocessing.managers.SyncManager:  # noqa: N802
        """The stdlib's ``SyncManager``, started with this context's method."""
        manager = multiprocessing.managers.SyncManager(
            ctx=multiprocessing.get_context(self.get_start_method())
        )
        manager.start()
        return manager

    def Pipe(self, duplex: bool = True) -> tuple[Connection, Connection]:  # noqa: N802
        """Two connected ``Connection`` ends (``duplex=False``: the first only receives)."""
        return _connection.Pipe(duplex)

    def Queue(self, maxsize: int = 0) -> _queues.Queue:  # noqa: N802 (the stdlib's name)
        """A ``Queue`` (see ``corepool.multiprocessing.queues``)."""
        return _queues.Queue(maxsize)

    def JoinableQueue(self, maxsize: int = 0) -> _queues.JoinableQueue:  # noqa: N802
        """A ``JoinableQueue``."""
        return _queues.JoinableQueue(maxsize)

    def SimpleQueue(self) -> _queues.SimpleQueue:  # noqa: N802 (the stdlib's name)
        """A ``SimpleQueue``."""
        return _queues.SimpleQueue()

    def Lock(self) -> _sync.Lock:  # noqa: N802 (the stdlib's name)
        """A ``Lock`` for processes."""
        return _sync.Lock()

    def RLock(self) -> _sync.RLock:  # noqa: N802 (the stdlib's name)
        """A re-entrant lock for processes."""
        return _sync.RLock()

    def Semaphore(self, value: int = 1) -> _sync.Semaphore:  # noqa: N802 (the stdlib's name)
        """A counting semaphore."""
        return _sync.Semaphore(value)

    def BoundedSemaphore(self, value: int = 1) -> _sync.BoundedSemaphore:  # noqa: N802
        """A semaphore that refuses to be released past its initial value."""
        return _sync.BoundedSemaphore(value)

    def Condition(self, lock: _sync.Lock | _sync.RLock | None = None) -> _sync.Condition:  # noqa: N802
        """A condition variable over ``lock`` (a new ``RLock`` by default)."""
        return _sync.Condition(lock)

    def Event(self) -> _sync.Event:  # noqa: N802 (the stdlib's name)
        """An event flag."""
        return _sync.Event()

    def Barrier(  # noqa: N802 (the stdlib's name)
        self, parties: int, action: Callable[[], object] | None = None, timeout: float | None = None
    ) -> _sync.Barrier:
        """A barrier for ``parties`` processes."""
        return _sync.Barrier(parties, action, timeout)

    def Value(self, typecode_or_type: Any, *args: Any, lock: Any = True) -> Any:  # noqa: N802
        """A shared ctypes value behind a lock (see ``sharedctypes.Value``)."""
        return _sharedctypes.Value(typecode_or_type, *args, lock=lock)

    def Array(  # noqa: N802 (the stdlib's name)
        self, typecode_or_type: Any, size_or_initializer: int | Sequence[Any], *, lock: Any = True
    ) -> Any:
        """A shared ctypes array behind a lock (see ``sharedctypes.Array``)."""
        return _sharedctypes.Array(typecode_or_type, size_or_initializer, lock=lock)

    def RawValue(self, typecode_or_type: Any, *args: Any) -> Any:  # noqa: N802
        """A shared ctypes value without a lock."""
        return _sharedctypes.RawValue(typecode_or_type, *args)

    def RawArray(  # noqa: N802 (the stdlib's name)
        self, typecode_or_type: Any, size_or_initializer: int | Sequence[Any]
    ) -> Any:
        """A shared ctypes array without a lock."""
        return _sharedctypes.RawArray(typecode_or_type, size_or_initializer)


class DefaultContext(BaseContext):
    """The module's own context: its start method is the one ``set_start_method`` chose."""

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        """Set the start method of pools and processes made without a context.

        Raises:
            RuntimeError: One was set or used already, and ``force`` is false.
            ValueError: ``method`` is not one of corepool's start methods.
        """
        _start.set_start_method(method, force)


default_context = DefaultContext(None)
_CONCRETE: dict[str, BaseContext] = {method: BaseContext(method) for method in START_METHODS}
