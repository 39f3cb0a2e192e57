"""``SharedArray``: one numpy array in shared memory that the parent and every task write to.

The pattern it serves: workers fill one big output array, each its own
slice, and the parent reads it with no copy and no result to send back.

    out = corepool.SharedArray.zeros((len(paths), 224, 224, 3), dtype="uint8")
    pool.map(load_into, [(out, i, path) for i, path in enumerate(paths)])
    out.array  # every image, written in place by the workers

A ``SharedArray`` travels to tasks (and back) as a handle of a few bytes:
the memory is never copied. It needs numpy (``pip install
'corepool[numpy]'``).
"""

from __future__ import annotations

import importlib
import pickle
from multiprocessing import reduction
from typing import TYPE_CHECKING, Any

from corepool._transport.buffers import StdlibSegment, is_shared, new_shared_segment

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["SharedArray"]


def _numpy() -> Any:
    """numpy, imported on first use: corepool itself does not need it."""
    try:
        return importlib.import_module("numpy")
    except ImportError:
        raise ImportError(
            "corepool.SharedArray needs numpy: pip install 'corepool[numpy]'"
        ) from None


class SharedArray:
    """A numpy array whose memory is shared by the parent and every worker that receives it.

    Pass it to tasks like any argument: it travels as a handle, every process
    maps the same memory, and what a task writes into it the parent (and
    every other task) sees at once. Give each task its own slice to write:
    as with threads, two processes writing the same elements race.

    Use ``.array`` (a plain ``numpy.ndarray`` view) for numpy operations;
    indexing, ``len`` and ``numpy.asarray`` work on the ``SharedArray``
    itself. The memory is freed when the last process lets go of it, even
    if a worker crashed; it never appears in ``/dev/shm``.

    A ``SharedArray`` can travel only through corepool (pool tasks and
    their results, a pool's ``shared`` objects); pickled some other way it
    raises ``TypeError``.

    Example:
        >>> out = corepool.SharedArray.zeros(1000)
        >>> pool.map(fill, [(out, start) for start in range(0, 1000, 100)])
        >>> out.array.sum()
    """

    __slots__ = ("__weakref__", "_memory", "array")

    def __init__(self, memory: memoryview, shape: tuple[int, ...], dtype: npt.DTypeLike) -> None:
        """Internal: use ``SharedArray.zeros`` or ``SharedArray.from_array``."""
        numpy = _numpy()
        self._memory = memory
        count = 1
        for length in shape:
            count *= length
        flat = numpy.frombuffer(memory, dtype=numpy.dtype(dtype), count=count)
        self.array: np.ndarray[Any, Any] = flat.reshape(shape)

    @classmethod
    def zeros(cls, shape: int | tuple[int, ...], dtype: npt.DTypeLike = float) -> SharedArray:
        """A new shared array of ``shape`` and ``dtype``, filled with zeros.

        Raises:
            ImportError: numpy is not installed.
            TypeError: ``dtype`` holds Python objects, which cannot be shared.
        """
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        kind: np.dtype[Any] = _numpy().dtype(dtype)
        if kind.hasobject:
            raise TypeError(f"a SharedArray holds plain values; dtype {kind} holds objects")
        size = kind.itemsize
        for length in shape:
            size *= length
        return cls(new_shared_segment(size), shape, kind)

    @classmethod
    def from_array(cls, array: npt.ArrayLike) -> SharedArray:
        """A new shared array holding a copy of ``array`` (C order)."""
        source = _numpy().asarray(array)
        shared = cls.zeros(source.shape, source.dtype)
        shared.array[...] = source
        return shared

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's element type."""
        kind: np.dtype[Any] = self.array.dtype
        return kind

    @property
    def nbytes(self) -> int:
        """The size of the array's memory in bytes."""
        return int(self.array.nbytes)

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, key: Any) -> Any:
        return self.array[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.array[key] = value

    def __array__(self, dtype: npt.DTypeLike | None = None, copy: bool | None = None) -> Any:
        if copy:
            return self.array.astype(dtype or self.array.dtype, copy=True)
        return self.array if dtype is None else self.array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"SharedArray(shape={self.shape}, dtype={self.dtype})"

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        if not isinstance(protocol, int) or protocol < 5:
            raise TypeError(_WRONG_ROUTE)
        return _attach, (pickle.PickleBuffer(self._memory), self.shape, self.dtype)


_WRONG_ROUTE = (
    "a SharedArray travels only through corepool (a pool's tasks, results and "
    "shared objects) and multiprocessing (a Manager, its Queue, Pipe and Process), "
    "as a handle to its memory; it was pickled some other way. "
    "Send it through corepool, or send a copy: shared.array.copy()."
)


def _attach(buffer: Any, shape: tuple[int, ...], dtype: Any) -> SharedArray:
    """Rebuild a ``SharedArray`` on the mapped memory its handle named."""
    view = memoryview(buffer)
    if not is_shared(view):
        raise TypeError(_WRONG_ROUTE)
    return SharedArray(view, shape, dtype)


def _reduce_for_multiprocessing(shared: SharedArray) -> tuple[Any, ...]:
    return _attach, (StdlibSegment(shared._memory), shared.shape, shared.dtype)


# multiprocessing's pickler (a Manager call, its Queue or Process) sends the handle too.
reduction.register(SharedArray, _reduce_for_multiprocessing)
