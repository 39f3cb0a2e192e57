"""Large buffers out of band: pickles that point at shared memory instead of holding the bytes.

Runs in the parent and in every worker. Items, results and a pool's shared
objects are pickled with protocol 5; every buffer that pickle offers out of
band (``PickleBuffer``: numpy arrays, pandas columns through them, Arrow
buffers, ``bytearray``, and ``memoryview`` here) of ``threshold`` bytes or
more is copied once into its own *segment*, an anonymous shared-memory file,
whose descriptor travels with the message (see ``channel.py``). The receiver
maps it and unpickles over the mapping: no copy on that side.

A segment has no name, so there is nothing to unlink and nothing can be
left in ``/dev/shm``: the kernel frees it when the last descriptor and the
last mapping of it are gone, whichever process held them and however that
process ended.

Two kinds of segment:

* a *copy* of a buffer: read-only where the receiver is a worker (the
  same copy may serve many tasks, and a write by one must not surprise the
  next), writable where the receiver is the parent (a result is its own);
* a *shared* segment, the memory of a ``SharedArray``: sent as is, never
  copied, and mapped writable by everyone.
"""

from __future__ import annotations

import contextlib
import copyreg
import ctypes
import io
import mmap
import os
import pickle
import tempfile
import weakref
from typing import Any, NamedTuple

import cloudpickle

from corepool._protocol import Packed
from corepool._transport.pickling import MAIN_REFERENCE, PROTOCOL, dumps

__all__ = [
    "DEFAULT_THRESHOLD",
    "Payload",
    "SegmentCache",
    "anonymous_file",
    "is_shared",
    "new_shared_segment",
    "open_segments",
    "pack",
    "unpack",
]

DEFAULT_THRESHOLD = 1 << 20
MAX_SEGMENTS = 250  # per message: the channel's limit of descriptors
_COPY, _SHARED = b"c", b"s"

# Mappings are made with libc's mmap rather than the mmap module, which keeps
# a descriptor open per mapping: a caller holding a few thousand result
# arrays would run out of descriptors. A mapping is a ctypes array over the
# mapped memory, unmapped when the last view of it is gone.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int64,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value

# The shared segments this process maps (by the id of their ctypes array,
# which cannot be hashed), with a descriptor of each to send it on.
_shared_fds: dict[int, int] = {}


def anonymous_file(name: str, size_bytes: int) -> int:
    """A new file of ``size_bytes`` zero bytes that lives only in memory and has no path.

    ``memfd_create`` on Linux; elsewhere an unlinked temporary file.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
    else:
        with tempfile.TemporaryFile(prefix=name) as handle:
            fd = os.dup(handle.fileno())
    os.ftruncate(fd, size_bytes)
    return fd


def _map(fd: int, *, writable: bool) -> memoryview:
    """Map the whole of ``fd`` (shared); the view keeps the mapping, which ends with it."""
    size = os.fstat(fd).st_size
    protection = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    address = _libc.mmap(None, size, protection, mmap.MAP_SHARED, fd, 0)
    if address in (None, _MAP_FAILED):
        code = ctypes.get_errno()
        raise OSError(
            code, f"cannot map a shared-memory segment of {size} bytes: {os.strerror(code)}"
        )
    memory = (ctypes.c_char * size).from_address(address)
    weakref.finalize(memory, _libc.munmap, address, size)
    view = memoryview(memory).cast("B")
    return view if writable else view.toreadonly()


def new_shared_segment(size_bytes: int) -> memoryview:
    """A writable shared segment of ``size_bytes`` (at least 1), mapped here."""
    return _map_shared(anonymous_file("corepool-shared", max(1, size_bytes)))


def _map_shared(fd: int) -> memoryview:
    """Map a shared segment writable; ``fd`` then belongs to the mapping and closes with it."""
    view = _map(fd, writable=True)
    _shared_fds[id(view.obj)] = fd
    weakref.finalize(view.obj, _forget_shared, id(view.obj), fd)
    return view


def _forget_shared(key: int, fd: int) -> None:
    del _shared_fds[key]
    os.close(fd)


def _shared_fd_of(owner: object) -> int | None:
    """The descriptor of the shared segment that ``owner`` (a view of one) shows, if any."""
    for _ in range(2):
        if isinstance(owner, ctypes.Array):
            return _shared_fds.get(id(owner))
        if not isinstance(owner, memoryview):
            return None
        owner = owner.obj
    return None


def is_shared(view: memoryview) -> bool:
    """Whether ``view`` shows a shared segment that this process maps."""
    return _shared_fd_of(view) is not None


def _copy_to_segment(view: memoryview) -> int:
    """A new segment holding a copy of ``view`` (flat bytes, as ``PickleBuffer.raw()`` gives)."""
    fd = anonymous_file("corepool-buffer", view.nbytes)
    written = 0
    while written < view.nbytes:
        written += os.pwrite(fd, view[written:], written)
    return fd


class SegmentCache:
    """Copies already made for one call, so that an array sent with many tasks is copied once.

    Keyed by the buffer's exporting object, which the cache keeps alive (so
    its id cannot be reused) until ``close``. A buffer changed after its copy
    was made is not copied again: the call's tasks see it as it was when
    first sent.
    """

    def __init__(self) -> None:
        self._copies: dict[int, tuple[object, int]] = {}

    def copy(self, view: memoryview) -> int:
        """A descriptor (a new one, the caller's to close) of the copy of ``view``."""
        owner = view.obj
        entry = self._copies.get(id(owner))
        if entry is None or entry[0] is not owner:
            entry = self._copies[id(owner)] = (owner, _copy_to_segment(view))
        return os.dup(entry[1])

    def close(self) -> None:
        for _, fd in self._copies.values():
            os.close(fd)
        self._copies.clear()


class _Packer:
    """The ``buffer_callback`` of one pickling: moves large buffers into segments."""

    def __init__(self, threshold: int | None, cache: SegmentCache | None) -> None:
        self.threshold = threshold
        self.cache = cache
        self.fds: list[int] = []
        self.kinds = bytearray()

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        """Return ``True`` to keep ``buffer`` in band, ``False`` once it is in a segment."""
        if len(self.fds) >= MAX_SEGMENTS:
            return True
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: pickle copies it in band
            return True
        shared_fd = _shared_fd_of(view.obj)
        if shared_fd is not None:
            self.fds.append(os.dup(shared_fd))
            self.kinds += _SHARED
            return False
        if self.threshold is None or view.nbytes < max(1, self.threshold):
            return True
        self.fds.append(self.cache.copy(view) if self.cache else _copy_to_segment(view))
        self.kinds += _COPY
        return False

    def close(self) -> None:
        """Drop the segments made so far."""
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.kinds.clear()


def _reduce_memoryview(view: memoryview) -> tuple[Any, ...]:
    return memoryview, (pickle.PickleBuffer(view),)


def _dumps_with_memoryviews(obj: Any, packer: _Packer) -> bytes:
    """Pickle ``obj`` where it holds ``memoryview`` objects, which plain pickle refuses.

    Each is sent as a buffer (out of band if large) and rebuilt as a
    ``memoryview``. Only tried after plain pickle failed: a per-type entry in
    the pickler's ``dispatch_table`` costs nothing, but a ``reducer_override``
    would make pickling many small objects four times slower.
    """
    stream = io.BytesIO()
    pickler = pickle.Pickler(stream, PROTOCOL, buffer_callback=packer)
    pickler.dispatch_table = {**copyreg.dispatch_table, memoryview: _reduce_memoryview}
    pickler.dump(obj)
    return stream.getvalue()


_PICKLE_ERRORS = (pickle.PicklingError, TypeError, AttributeError)


def pack(
    obj: Any, threshold: int | None, cache: SegmentCache | None = None
) -> tuple[Packed, list[int]]:
    """Pickle ``obj`` with its large buffers in segments; return it and their descriptors.

    Plain pickle first, then with ``memoryview`` support, then cloudpickle
    for what they cannot pickle or would pickle by a reference to
    ``__main__`` (as ``pickling.dumps`` does). The descriptors are the
    caller's: send them (the channel closes them) or close them.
    """
    packer = _Packer(threshold, cache)
    data: bytes | None = None
    try:
        try:
            data = pickle.dumps(obj, PROTOCOL, buffer_callback=packer)
        except _PICKLE_ERRORS:
            packer.close()
            with contextlib.suppress(*_PICKLE_ERRORS):
                data = _dumps_with_memoryviews(obj, packer)
        if data is None or MAIN_REFERENCE in data:
            packer.close()
            data = bytes(cloudpickle.dumps(obj, PROTOCOL, buffer_callback=packer))
    except BaseException:
        packer.close()
        raise
    return Packed(data, bytes(packer.kinds)), packer.fds


def open_segments(kinds: bytes, fds: list[int], *, writable_copies: bool) -> list[memoryview]:
    """Map the segments of a received ``Packed``; every descriptor is taken (closed or kept).

    Copies are mapped read-only unless ``writable_copies``; shared segments
    are always writable.
    """
    views = []
    pending = list(fds)
    try:
        if len(fds) != len(kinds):
            raise ConnectionError(f"{len(kinds)} segments were announced but {len(fds)} came")
        for kind in kinds:
            fd = pending[0]
            if kind == _SHARED[0]:
                views.append(_map_shared(fd))
            else:
                views.append(_map(fd, writable=writable_copies))
                os.close(fd)
            pending.pop(0)
    finally:
        for fd in pending:
            os.close(fd)
    return views


def unpack(packed: Packed, buffers: list[memoryview]) -> Any:
    """Unpickle ``packed`` over the mapped ``buffers`` of its segments."""
    return pickle.loads(packed.data, buffers=buffers)


class Payload(NamedTuple):
    """Received pickled values with their mapped segments: ``load()`` unpickles them."""

    packed: Packed
    buffers: list[memoryview]

    @classmethod
    def of(cls, values: Any) -> Payload:
        """``values`` pickled in band (where results must be pickled again)."""
        return cls(Packed(dumps(values), b""), [])

    def load(self) -> Any:
        return pickle.loads(self.packed.data, buffers=self.buffers)
