"""Locks, semaphores, conditions, events, barriers and shared numbers for processes.

Each object lives in a small shared-memory segment (see
``_transport/buffers.py``): POSIX semaphores (``sem_init`` with
``pshared=1``) and plain fields, mapped by every process that has it. So,
unlike ``multiprocessing``'s, they can be passed to pool tasks, to
``corepool.Process`` and back, under every start method, with no Manager:
they travel as a handle, never copied. Like the segment, they vanish with
the last process that holds them, whatever happened to the others.

Waiting releases the GIL and can be interrupted by Ctrl-C. A process that
dies holding a lock leaves it held, as with ``multiprocessing``.

Linux only: macOS has no process-shared unnamed semaphores.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from corepool._transport.semaphores import (
    SEM_VALUE_MAX,
    SharedBlock,
    sem_acquire,
    sem_release,
    sem_value,
    semaphore_at,
)

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Counter",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
    "Value",
]


class _Context:
    """``with lock:`` for the acquire/release pair of a subclass."""

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class Semaphore(_Context):
    """A counter that ``acquire`` takes one from, waiting while it is zero; ``release`` adds one.

    Args:
        value: The initial count.
    """

    __slots__ = ("_block", "_sem")

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError(f"a semaphore's value must be >= 0, got {value}")
        self._block = SharedBlock(1, 1)
        self._block.init(0, value)
        self._block.fields.cast("q")[0] = value
        self._sem = semaphore_at(self._block.sem(0), self._maximum())

    def _maximum(self) -> int:
        """The count a ``release`` may not pass."""
        return SEM_VALUE_MAX

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take one; wait up to ``timeout`` seconds (``None``: forever) unless ``block`` is false.

        Returns:
            Whether it was taken.
        """
        return self._sem.acquire(block, timeout)

    def release(self) -> None:
        """Give one back, waking one waiter."""
        self._sem.release()

    def get_value(self) -> int:
        """The current count (a snapshot: other processes may change it at once)."""
        return sem_value(self._block.sem(0))

    def __repr__(self) -> str:
        return f"<corepool.{type(self).__name__} value={self.get_value()}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_semaphore, (type(self), self._block)


def _rebuild_semaphore(cls: type[Semaphore], block: SharedBlock) -> Semaphore:
    instance: Semaphore = _rebuild(cls, block)
    instance._sem = semaphore_at(block.sem(0), instance._maximum())
    return instance


class BoundedSemaphore(Semaphore):
    """A ``Semaphore`` whose ``release`` raises ``ValueError`` past its initial value."""

    __slots__ = ()

    def _maximum(self) -> int:
        return int(self._block.fields.cast("q")[0])

    def release(self) -> None:
        """Give one back; raise ``ValueError`` if that would pass the initial value."""
        try:
            super().release()
        except ValueError:
            raise ValueError(f"{type(self).__name__} released too many times") from None


class Lock(Semaphore):
    """A lock for processes (and threads): one holder at a time.

    ``with lock:`` around the critical section. Any process may release it,
    as with ``multiprocessing.Lock``; releasing it when it is not held raises
    ``ValueError``.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(1)

    def _maximum(self) -> int:
        return 1

    def release(self) -> None:
        """Release the lock; ``ValueError`` if it is not held."""
        try:
            super().release()
        except ValueError:
            raise ValueError("release of an unlocked corepool.Lock") from None

    def locked(self) -> bool:
        """Whether some process holds the lock now."""
        return self.get_value() == 0

    # What Condition needs of its lock. A Lock has no owner: held is held.
    def _held_here(self) -> bool:
        return self.locked()

    def _release_all(self) -> int:
        self.release()
        return 1

    def _acquire_again(self, depth: int) -> None:
        self.acquire()

    def __repr__(self) -> str:
        return f"<corepool.Lock {'locked' if self.locked() else 'unlocked'}>"


def _rebuild(cls: Any, block: SharedBlock) -> Any:
    instance = cls.__new__(cls)
    instance._block = block
    return instance


_OWNER_PID, _OWNER_THREAD, _DEPTH = 0, 1, 2


class RLock(_Context):
    """A lock that its holder (a thread of a process) may take again; each take needs a release."""

    __slots__ = ("_block",)

    def __init__(self) -> None:
        self._block = SharedBlock(1, 3)
        self._block.init(0, 1)

    def _fields(self) -> memoryview:
        return self._block.fields.cast("q")

    def _held_here(self) -> bool:
        fields = self._fields()
        return fields[_OWNER_PID] == os.getpid() and fields[_OWNER_THREAD] == threading.get_ident()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take the lock, or take it once more if this thread holds it already."""
        fields = self._fields()
        if self._held_here():
            fields[_DEPTH] += 1
            return True
        if not sem_acquire(self._block.sem(0), block, timeout):
            return False
        fields[_OWNER_PID], fields[_OWNER_THREAD], fields[_DEPTH] = (
            os.getpid(),
            threading.get_ident(),
            1,
        )
        return True

    def release(self) -> None:
        """Release once; the lock is free when every take is released.

        Raises:
            RuntimeError: This thread does not hold the lock.
        """
        if not self._held_here():
            raise RuntimeError("cannot release a corepool.RLock that this thread does not hold")
        fields = self._fields()
        fields[_DEPTH] -= 1
        if fields[_DEPTH] == 0:
            fields[_OWNER_PID] = fields[_OWNER_THREAD] = 0
            sem_release(self._block.sem(0))

    def _release_all(self) -> int:
        """Release every take (for ``Condition.wait``); return how many there were."""
        depth = self._fields()[_DEPTH]
        self._fields()[_DEPTH] = 1
        self.release()
        return int(depth)

    def _acquire_again(self, depth: int) -> None:
        self.acquire()
        self._fields()[_DEPTH] = depth

    def __repr__(self) -> str:
        fields = self._fields()
        owner = f"pid {fields[_OWNER_PID]}" if fields[_DEPTH] else "nobody"
        return f"<corepool.RLock held by {owner}, depth {fields[_DEPTH]}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self._block)


_SLEEPING, _WOKEN, _WAKE = 0, 1, 2


class Condition(_Context):
    """Wait until another process says something changed (``notify``), holding ``lock`` around.

    Args:
        lock: A ``corepool.Lock`` or ``RLock`` (a new ``RLock`` by default).
    """

    __slots__ = ("_block", "_lock")

    def __init__(self, lock: Lock | RLock | None = None) -> None:
        self._lock = lock if lock is not None else RLock()
        self._block = SharedBlock(3, 0)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the underlying lock."""
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        """Release the underlying lock."""
        self._lock.release()

    def _check_owned(self) -> None:
        if not self._lock._held_here():
            raise RuntimeError("a Condition must be acquired before wait or notify")

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a ``notify`` (or ``timeout``), take the lock again.

        Returns:
            ``False`` if the timeout passed first.
        """
        self._check_owned()
        block = self._block
        sem_release(block.sem(_SLEEPING))  # announce one more sleeper
        depth = self._lock._release_all()
        try:
            return sem_acquire(block.sem(_WAKE), True, timeout)
        finally:
            sem_release(block.sem(_WOKEN))  # tell the notifier this sleeper is up
            self._lock._acquire_again(depth)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true (or ``timeout``); return its last value."""
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` processes (or threads) waiting on this condition."""
        self._check_owned()
        block = self._block
        # Sleepers that timed out since the last notify left a "woken" behind
        # without being woken: settle those first.
        while sem_acquire(block.sem(_WOKEN), False, None):
            sem_acquire(block.sem(_SLEEPING), False, None)
        woken = 0
        while woken < n and sem_acquire(block.sem(_SLEEPING), False, None):
            sem_release(block.sem(_WAKE))
            woken += 1
        if woken:
            for _ in range(woken):  # wait until each has taken its wake-up (or timed out)
                sem_acquire(block.sem(_WOKEN), True, None)
            while sem_acquire(block.sem(_WAKE), False, None):
                pass  # a sleeper timed out instead: take back its unused wake-up

    def notify_all(self) -> None:
        """Wake every process (or thread) waiting on this condition."""
        self.notify(sys.maxsize)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_condition, (self._lock, self._block)


def _rebuild_condition(lock: Lock | RLock, block: SharedBlock) -> Condition:
    condition = Condition.__new__(Condition)
    condition._lock = lock
    condition._block = block
    return condition


class Event:
    """A flag that processes wait for: ``set`` wakes every waiter, ``clear`` lowers it again."""

    __slots__ = ("_block", "_condition")

    def __init__(self) -> None:
        self._condition = Condition(Lock())
        self._block = SharedBlock(0, 1)

    def is_set(self) -> bool:
        """Whether the flag is up."""
        return bool(self._block.fields.cast("q")[0])

    def set(self) -> None:
        """Raise the flag and wake every waiter."""
        with self._condition:
            self._block.fields.cast("q")[0] = 1
            self._condition.notify_all()

    def clear(self) -> None:
        """Lower the flag."""
        with self._condition:
            self._block.fields.cast("q")[0] = 0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is up (or ``timeout`` passes); return whether it is up."""
        with self._condition:
            return bool(self._condition.wait_for(self.is_set, timeout))

    def __repr__(self) -> str:
        return f"<corepool.Event {'set' if self.is_set() else 'unset'}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_event, (self._condition, self._block)


def _rebuild_event(condition: Condition, block: SharedBlock) -> Event:
    event = Event.__new__(Event)
    event._condition = condition
    event._block = block
    return event


class Barrier(threading.Barrier):
    """``parties`` processes (or threads) wait in ``wait()`` until all have arrived.

    ``threading.Barrier``'s logic, with its state and condition in shared
    memory. Raises ``threading.BrokenBarrierError`` as that one does.
    """

    def __init__(
        self, parties: int, action: Callable[[], Any] | None = None, timeout: float | None = None
    ) -> None:
        if parties < 1:
            raise ValueError(f"a Barrier needs at least 1 party, got {parties}")
        self._restore(parties, action, timeout, Condition(Lock()), SharedBlock(0, 2))
        self._state = 0
        self._count = 0

    def _restore(
        self,
        parties: int,
        action: Callable[[], Any] | None,
        timeout: float | None,
        condition: Condition,
        block: SharedBlock,
    ) -> None:
        self._parties = parties
        self._action = action
        self._timeout = timeout
        self._cond = condition
        self._block = block

    @property
    def _state(self) -> int:
        return int(self._block.fields.cast("q")[0])

    @_state.setter
    def _state(self, value: int) -> None:
        self._block.fields.cast("q")[0] = value

    @property
    def _count(self) -> int:
        return int(self._block.fields.cast("q")[1])

    @_count.setter
    def _count(self, value: int) -> None:
        self._block.fields.cast("q")[1] = value

    def __reduce__(self) -> tuple[Any, ...]:
        state = (self._parties, self._action, self._timeout, self._cond, self._block)
        return _rebuild_barrier, state


def _rebuild_barrier(
    parties: int,
    action: Callable[[], Any] | None,
    timeout: float | None,
    condition: Condition,
    block: SharedBlock,
) -> Barrier:
    barrier = Barrier.__new__(Barrier)
    barrier._restore(parties, action, timeout, condition, block)
    return barrier


def _load_atomic_adds() -> dict[str, Any]:
    """``__atomic_fetch_add_N`` of libatomic for each integer typecode, if the library is here."""
    try:
        library = ctypes.CDLL(ctypes.util.find_library("atomic") or "libatomic.so.1")
    except OSError:
        return {}
    adds = {}
    for typecode, kind in _CTYPES.items():
        if typecode in "fd":
            continue
        add = library[f"__atomic_fetch_add_{ctypes.sizeof(kind)}"]
        # No argtypes: converting arguments through them costs 2.5x the call.
        # Callers pass a c_void_p, a small int (libffi widens it to the
        # register) or an instance of ``kind``, and the memory order.
        add.restype = kind
        adds[typecode] = add
    return adds


_CTYPES: dict[str, Any] = {
    "b": ctypes.c_byte, "B": ctypes.c_ubyte, "h": ctypes.c_short, "H": ctypes.c_ushort,
    "i": ctypes.c_int, "I": ctypes.c_uint, "l": ctypes.c_long, "L": ctypes.c_ulong,
    "q": ctypes.c_longlong, "Q": ctypes.c_ulonglong, "f": ctypes.c_float, "d": ctypes.c_double,
}  # fmt: skip
_SEQ_CST = 5  # __ATOMIC_SEQ_CST
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_ATOMIC_ADDS = _load_atomic_adds()


class Value:
    """A number in shared memory, with an atomic ``add`` and a lock.

    ``counter.add(1)`` (or ``counter += 1``) is one atomic step for every
    process that holds the value: no update is lost, unlike
    ``multiprocessing.Value`` with a bare ``+=``. For integers it is a
    single atomic instruction (libatomic's ``__atomic_fetch_add``), with no
    lock; for floats, or where libatomic is missing, it takes the value's
    lock. Reading or writing ``.value`` is atomic too. ``with
    v.get_lock():`` groups several steps against other code that takes the
    lock (an integer ``add`` does not).

    Args:
        typecode_or_type: An ``array`` typecode (``"i"``, ``"q"``, ``"d"``,
            ...) or a ctypes type (``ctypes.c_double``).
        value: The initial value.
    """

    __slots__ = ("_add", "_block", "_cell", "_kind", "_lock", "_pointer", "_typecode")

    def __init__(self, typecode_or_type: str | type[Any] = "q", value: float = 0) -> None:
        typecode = getattr(typecode_or_type, "_type_", typecode_or_type)
        if not isinstance(typecode, str) or typecode not in _CTYPES:
            raise TypeError(
                f"Value needs one of the typecodes {', '.join(_CTYPES)} or a ctypes "
                f"number type, got {typecode_or_type!r}"
            )
        self._attach(typecode, Lock(), SharedBlock(0, 1))
        self._cell[0] = value

    def _attach(self, typecode: str, lock: Lock, block: SharedBlock) -> None:
        self._typecode = typecode
        self._lock = lock
        self._block = block
        size = ctypes.sizeof(_CTYPES[typecode])
        self._cell: Any = block.fields[:size].cast(typecode)  # type: ignore[call-overload]
        self._kind = _CTYPES[typecode]
        self._pointer = ctypes.c_void_p(block.field_address(0))
        self._add = _ATOMIC_ADDS.get(typecode)

    @property
    def value(self) -> Any:
        """The number now."""
        return self._cell[0]

    @value.setter
    def value(self, new: Any) -> None:
        if self._add is not None:
            self._cell[0] = new  # an aligned store: atomic against fetch-add
        else:
            with self._lock:
                self._cell[0] = new

    def add(self, amount: Any = 1) -> Any:
        """Add ``amount`` in one atomic step; return the new value."""
        add = self._add
        if add is not None:
            small = type(amount) is int and _INT32_MIN <= amount <= _INT32_MAX
            old = add(self._pointer, amount if small else self._kind(amount), _SEQ_CST)
            return self._kind(old + amount).value  # wraps around as C does
        with self._lock:
            cell = self._cell
            cell[0] += amount
            return cell[0]

    def __iadd__(self, amount: Any) -> Value:
        self.add(amount)
        return self

    def __isub__(self, amount: Any) -> Value:
        self.add(-amount)
        return self

    def get_lock(self) -> Lock:
        """The value's lock, to group several steps."""
        return self._lock

    def __repr__(self) -> str:
        return f"<corepool.{type(self).__name__}({self._typecode!r}, {self.value!r})>"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_value, (type(self), self._typecode, self._lock, self._block)


def _rebuild_value(cls: type[Value], typecode: str, lock: Lock, block: SharedBlock) -> Value:
    value = cls.__new__(cls)
    value._attach(typecode, lock, block)
    return value


class Counter(Value):
    """An integer ``Value`` that starts at ``initial``: ``hits.add(1)``, ``hits.value``."""

    __slots__ = ()

    def __init__(self, initial: int = 0) -> None:
        super().__init__("q", initial)
