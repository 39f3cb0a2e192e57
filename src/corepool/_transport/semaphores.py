"""Process-shared POSIX semaphores in a shared segment: what corepool's locks are made of.

A ``SharedBlock`` is one small shared-memory segment (see ``buffers.py``)
holding ``sems`` semaphores (``sem_init`` with ``pshared=1``) followed by
int64 fields. ``corepool.sync`` builds its locks, conditions, events,
barriers and values on it; ``corepool._ring`` its queue's ring. It travels
as a handle to its segment (pickle protocol 5 with corepool, or the stdlib's
reduction for ``multiprocessing``'s routes), never copied.

Linux only: macOS has no process-shared unnamed semaphores (``libc`` is
``None`` there, and a ``SharedBlock`` says so).
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import os
import pickle
import platform
import sys
import time
from collections.abc import Callable
from multiprocessing import reduction
from typing import Any, ClassVar, Protocol

from corepool._transport.buffers import StdlibSegment, is_shared, new_shared_segment

__all__ = [
    "SEM_VALUE_MAX",
    "Semaphore",
    "SharedBlock",
    "libc",
    "sem_acquire",
    "sem_release",
    "sem_value",
    "semaphore_at",
]

_SEM_BYTES = 64  # sizeof(sem_t) is 32 on 64-bit Linux; a cache line each
_FIELD_BYTES = 8

_WRONG_ROUTE = (
    "a corepool {kind} travels only through corepool (pool tasks and their "
    "results, corepool.Process, corepool.Queue) and multiprocessing (a Manager, "
    "its Queue, Pipe and Process), as a handle to its shared memory; it was "
    "pickled some other way."
)


class _timespec(ctypes.Structure):  # noqa: N801 (the C name)
    _fields_: ClassVar[list[tuple[str, Any]]] = [
        ("tv_sec", ctypes.c_long),
        ("tv_nsec", ctypes.c_long),
    ]


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    for name in ("sem_wait", "sem_trywait", "sem_post"):
        getattr(libc, name).argtypes = [ctypes.c_void_p]
    libc.sem_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
    libc.sem_timedwait.argtypes = [ctypes.c_void_p, ctypes.POINTER(_timespec)]
    libc.sem_getvalue.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    return libc


libc = _load_libc()


class SharedBlock:
    """A shared segment of ``sems`` process-shared semaphores followed by ``fields`` int64s."""

    __slots__ = ("__weakref__", "_address", "_memory", "fields", "sems")

    def __init__(self, sems: int, fields: int, memory: memoryview | None = None) -> None:
        if libc is None:
            raise NotImplementedError(
                "corepool's locks and shared values need Linux (process-shared "
                "POSIX semaphores); on this platform use multiprocessing's"
            )
        fresh = memory is None
        if memory is None:
            memory = new_shared_segment(sems * _SEM_BYTES + fields * _FIELD_BYTES)
        self._memory = memory
        self._address = ctypes.addressof(memory.obj)  # type: ignore[arg-type]
        self.sems = sems
        self.fields = memory[sems * _SEM_BYTES : sems * _SEM_BYTES + fields * _FIELD_BYTES]
        if fresh:
            for number in range(sems):
                self.init(number, 0)

    def sem(self, number: int) -> int:
        """The address of semaphore ``number``."""
        return self._address + number * _SEM_BYTES

    def field_address(self, number: int) -> int:
        """The address of field ``number``."""
        return self._address + self.sems * _SEM_BYTES + number * _FIELD_BYTES

    def init(self, number: int, value: int) -> None:
        if libc.sem_init(self.sem(number), 1, value) != 0:
            _raise_errno("sem_init")

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        if not isinstance(protocol, int) or protocol < 5:
            raise TypeError(_WRONG_ROUTE.format(kind="lock or value"))
        return _attach_block, (pickle.PickleBuffer(self._memory), self.sems)


def _reduce_block_for_multiprocessing(block: SharedBlock) -> tuple[Any, ...]:
    return _attach_block, (StdlibSegment(block._memory), block.sems)


reduction.register(SharedBlock, _reduce_block_for_multiprocessing)


def _attach_block(buffer: Any, sems: int) -> SharedBlock:
    view = memoryview(buffer)
    if not is_shared(view):
        raise TypeError(_WRONG_ROUTE.format(kind="lock or value"))
    fields = (len(view) - sems * _SEM_BYTES) // _FIELD_BYTES
    return SharedBlock(sems, fields, view)


def _raise_errno(call: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{call} failed: {os.strerror(code)}")


def sem_acquire(sem: int, block: bool, timeout: float | None) -> bool:
    """Take one unit of the semaphore at ``sem``; ``False`` if it could not in time."""
    if not block or (timeout is not None and timeout <= 0):
        if libc.sem_trywait(sem) == 0:
            return True
        if ctypes.get_errno() != errno.EAGAIN:
            _raise_errno("sem_trywait")
        return False
    if timeout is None:
        while libc.sem_wait(sem) != 0:
            if ctypes.get_errno() != errno.EINTR:  # a signal: its handler ran; wait on
                _raise_errno("sem_wait")
        return True
    deadline = time.time() + timeout
    when = _timespec(int(deadline), int((deadline % 1) * 1e9))
    while libc.sem_timedwait(sem, ctypes.byref(when)) != 0:
        error = ctypes.get_errno()
        if error == errno.ETIMEDOUT:
            return False
        if error != errno.EINTR:
            _raise_errno("sem_timedwait")
    return True


def sem_release(sem: int) -> None:
    if libc.sem_post(sem) != 0:
        _raise_errno("sem_post")


def sem_value(sem: int) -> int:
    value = ctypes.c_int()
    if libc.sem_getvalue(sem, ctypes.byref(value)) != 0:
        _raise_errno("sem_getvalue")
    return value.value


# -- one semaphore, at its address --------------------------------------------------

SEM_VALUE_MAX = 2**31 - 1


class Semaphore(Protocol):
    """One ``sem_t`` of a shared block, with ``threading``'s acquire and release."""

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...

    def release(self) -> None:
        """Give one back; ``ValueError`` if the count would pass the maximum."""


class _CtypesSemaphore:
    """A ``sem_t`` through ctypes calls (about 200 ns each), checked as ``SemLock`` checks."""

    __slots__ = ("_address", "_maximum")

    def __init__(self, address: int, maximum: int) -> None:
        self._address = address
        self._maximum = maximum

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return sem_acquire(self._address, block, timeout)

    def release(self) -> None:
        if self._maximum < SEM_VALUE_MAX and sem_value(self._address) >= self._maximum:
            raise ValueError("semaphore or lock released too many times")
        sem_release(self._address)


def _semaphore_factory(libc_name: str) -> Callable[[int, int], Semaphore]:
    """How to reach a ``sem_t`` at an address: CPython's own C ``SemLock`` where it is safe.

    ``_multiprocessing.SemLock`` built from a handle and no name works on the
    ``sem_t`` at that address (about 20 ns a call, ten times faster than
    ctypes, and a release past the maximum is its ``ValueError``) and, when
    collected, calls ``sem_close`` on it, which glibc refuses harmlessly for
    a semaphore it did not open. Other C libraries (musl unmaps the address)
    get the ctypes calls.
    """
    if libc_name != "glibc":
        return _CtypesSemaphore
    semlock: Any = importlib.import_module("_multiprocessing").SemLock
    kind = 1  # multiprocessing.synchronize.SEMAPHORE

    def make(address: int, maximum: int) -> Semaphore:
        made: Semaphore = semlock._rebuild(address, kind, maximum, None)
        return made

    return make


# semaphore_at(address, maximum): the semaphore at address; SEM_VALUE_MAX: unbounded.
semaphore_at: Callable[[int, int], Semaphore] = _semaphore_factory(platform.libc_ver()[0])
