"""``Value``, ``Array``, ``RawValue``, ``RawArray``: ctypes objects in corepool's shared memory.

Runs in every process that holds one. Each object is a ctypes instance laid
over a ``SharedBlock`` (``_transport/semaphores.py``: an anonymous shared
segment), of a subclass of its own ctypes type that pickles as a handle to
that block: like the stdlib's, the memory is shared, never copied; unlike
the stdlib's, it also travels to pool tasks and back. ``Value`` and ``Array`` wrap it in
the stdlib's own synchronized wrappers (``get_lock``, ``get_obj``, locked
``value`` and slicing), with a corepool ``RLock`` by default.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing.sharedctypes as _stdlib_sharedctypes
from collections.abc import Sequence
from typing import Any

from corepool._transport.semaphores import SharedBlock
from corepool.sync import RLock

__all__ = ["Array", "RawArray", "RawValue", "Value", "synchronized"]

_FIELD_BYTES = 8
_TYPECODES: dict[str, Any] = dict(_stdlib_sharedctypes.typecode_to_type)  # type: ignore[attr-defined]


def _ctype(typecode_or_type: Any) -> Any:
    return _TYPECODES.get(typecode_or_type, typecode_or_type)


def _reduce_raw(obj: Any) -> tuple[Any, ...]:
    kind = type(obj).__mro__[1]
    if issubclass(kind, ctypes.Array):
        return _attach_array, (kind._type_, kind._length_, obj._corepool_block)
    return _attach, (kind, obj._corepool_block)


@functools.cache
def _shared_type(kind: Any) -> Any:
    """A subclass of ctypes type ``kind`` whose instances pickle as a handle to their memory."""
    return type(kind.__name__, (kind,), {"__reduce__": _reduce_raw, "__module__": __name__})


def _attach(kind: Any, block: SharedBlock) -> Any:
    """The ctypes object of type ``kind`` over ``block``'s memory."""
    obj = _shared_type(kind).from_buffer(block.fields)
    obj._corepool_block = block
    return obj


def _attach_array(item_type: Any, length: int, block: SharedBlock) -> Any:
    return _attach(item_type * length, block)


def _new(kind: Any) -> Any:
    """A zeroed ctypes object of type ``kind`` in a new shared block."""
    fields = max(1, -(-ctypes.sizeof(kind) // _FIELD_BYTES))
    return _attach(kind, SharedBlock(0, fields))


def RawValue(typecode_or_type: Any, *args: Any) -> Any:  # noqa: N802 (the stdlib's name)
    """A ctypes object in shared memory, with no lock.

    Args:
        typecode_or_type: An ``array`` typecode (``"i"``, ``"d"``, ``"c"``, ...)
            or a ctypes type.
        args: The constructor's arguments (the initial value).
    """
    obj = _new(_ctype(typecode_or_type))
    obj.__init__(*args)
    return obj


def RawArray(typecode_or_type: Any, size_or_initializer: int | Sequence[Any]) -> Any:  # noqa: N802
    """A ctypes array in shared memory, with no lock: zeros of a size, or a copy of a sequence."""
    kind = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int):
        return _new(kind * size_or_initializer)
    values = list(size_or_initializer)
    array = _new(kind * len(values))
    array.__init__(*values)
    return array


def _lock_for(lock: Any) -> Any:
    if lock is True or lock is None:
        return RLock()
    if not hasattr(lock, "acquire"):
        raise AttributeError(f"{lock!r} has no method 'acquire': pass a lock, True or False")
    return lock


def Value(typecode_or_type: Any, *args: Any, lock: Any = True) -> Any:  # noqa: N802
    """A ctypes object in shared memory behind a lock: ``.value``, ``get_lock()``, ``get_obj()``.

    Args:
        typecode_or_type: As for ``RawValue``.
        args: The initial value.
        lock: ``True`` or ``None``: a new ``RLock``; ``False``: none (a raw
            object); or the lock to use.

    Raises:
        AttributeError: ``lock`` is not a lock.
    """
    obj = RawValue(typecode_or_type, *args)
    if lock is False:
        return obj
    return synchronized(obj, _lock_for(lock))


def Array(  # noqa: N802 (the stdlib's name)
    typecode_or_type: Any, size_or_initializer: int | Sequence[Any], *, lock: Any = True
) -> Any:
    """A ctypes array in shared memory behind a lock: indexing and slicing, ``get_lock()``."""
    obj = RawArray(typecode_or_type, size_or_initializer)
    if lock is False:
        return obj
    return synchronized(obj, _lock_for(lock))


def _reduce_synchronized(self: Any) -> tuple[Any, ...]:
    return synchronized, (self._obj, self._lock)


class Synchronized(_stdlib_sharedctypes.Synchronized):  # type: ignore[type-arg]
    """The stdlib's ``Synchronized``, passable to pool tasks."""

    __reduce__ = _reduce_synchronized


class SynchronizedArray(_stdlib_sharedctypes.SynchronizedArray):  # type: ignore[type-arg]
    """The stdlib's ``SynchronizedArray``, passable to pool tasks."""

    __reduce__ = _reduce_synchronized


class SynchronizedString(_stdlib_sharedctypes.SynchronizedString):
    """The stdlib's ``SynchronizedString`` (an array of ``c_char``), passable to pool tasks."""

    __reduce__ = _reduce_synchronized


def synchronized(obj: Any, lock: Any = None) -> Any:
    """``obj`` behind ``lock`` (a new ``RLock`` if ``None``), as the stdlib's wrapper types."""
    lock = RLock() if lock is None else lock
    if isinstance(obj, ctypes._SimpleCData):
        return Synchronized(obj, lock)
    if isinstance(obj, ctypes.Array):
        if obj._type_ is ctypes.c_char:
            return SynchronizedString(obj, lock)
        return SynchronizedArray(obj, lock)
    return _stdlib_sharedctypes.synchronized(obj, lock)
