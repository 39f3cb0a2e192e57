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
import contextvars
import copyreg
import ctypes
import io
import mmap
import os
import pickle
import weakref
from multiprocessing import reduction
from typing import Any

from corepool._protocol import Packed
from corepool._transport.channel import MAX_FDS, close_fds
from corepool._transport.pickling import MAIN_REFERENCE, PROTOCOL, dumps, dumps_by_value

__all__ = [
    "DEFAULT_THRESHOLD",
    "PassFd",
    "Payload",
    "SegmentCache",
    "StdlibSegment",
    "anonymous_file",
    "copy_to_segment",
    "is_shared",
    "map_segment",
    "new_shared_segment",
    "open_segments",
    "pack",
    "packing",
    "split_fds",
]

DEFAULT_THRESHOLD = 1 << 20
MAX_SEGMENTS = MAX_FDS  # per message: the channel's limit of descriptors
_COPY, _SHARED, _DESCRIPTOR = b"c", b"s", b"f"

# The packer of the pickling under way in this thread (for PassFd), and the
# descriptors of the message being unpickled (for _take_fd).
_packing: contextvars.ContextVar[_Packer] = contextvars.ContextVar("corepool_packing")
_unpacking: contextvars.ContextVar[list[int | None]] = contextvars.ContextVar("corepool_unpacking")

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
        import tempfile  # noqa: PLC0415  # only where memfd_create is missing

        with tempfile.TemporaryFile(prefix=name) as handle:
            fd = os.dup(handle.fileno())
    os.ftruncate(fd, size_bytes)
    return fd


def map_segment(fd: int, *, writable: bool) -> memoryview:
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
    view = map_segment(fd, writable=True)
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


def copy_to_segment(view: memoryview) -> int:
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
            entry = self._copies[id(owner)] = (owner, copy_to_segment(view))
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
        self.fds.append(self.cache.copy(view) if self.cache else copy_to_segment(view))
        self.kinds += _COPY
        return False

    def add_descriptor(self, fd: int) -> int:
        """Send a duplicate of ``fd`` with the message; return its number among the descriptors."""
        if len(self.fds) >= MAX_SEGMENTS:
            raise ValueError(f"a message carries at most {MAX_SEGMENTS} descriptors")
        self.fds.append(os.dup(fd))
        self.kinds += _DESCRIPTOR
        return self.kinds.count(_DESCRIPTOR) - 1

    def close(self) -> None:
        """Drop the segments made so far."""
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.kinds.clear()


class PassFd:
    """A file descriptor inside a pickled object (a socket of a ``Queue``, say).

    Put one among what an object's ``__reduce__`` returns: pickled by
    corepool's transport, a duplicate of the descriptor travels with the
    message, and unpickling gives the receiver's own descriptor (an int),
    which the receiving object then owns. Pickled by ``multiprocessing``
    (a ``Manager`` call, a stdlib ``Queue`` or ``Process``) it travels as
    multiprocessing sends descriptors (``reduction.DupFd``). Pickled any
    other way it raises ``TypeError`` with ``route_error``.
    """

    __slots__ = ("fd", "route_error")

    def __init__(self, fd: int, route_error: str) -> None:
        self.fd = fd
        self.route_error = route_error

    def __reduce__(self) -> tuple[Any, ...]:
        packer = _packing.get(None)
        if packer is None:
            raise TypeError(self.route_error)
        return _take_fd, (packer.add_descriptor(self.fd), self.route_error)


def packing() -> bool:
    """Whether corepool's transport is pickling in this context (a ``PassFd`` will travel)."""
    return _packing.get(None) is not None


def _reduce_for_multiprocessing(passed: PassFd) -> tuple[Any, ...]:
    return _detach, (reduction.DupFd(passed.fd),)


def _detach(handle: Any) -> int:
    """The receiver's own descriptor from a ``reduction.DupFd`` handle."""
    fd: int = handle.detach()
    return fd


class StdlibSegment:
    """A shared segment in a pickle made by ``multiprocessing`` (its ``ForkingPickler``).

    Such a pickle has no corepool message to carry the segment's descriptor;
    multiprocessing's own descriptor passing (``reduction.DupFd``: a copy
    for a child being started, else its resource sharer) carries it, and the
    receiver maps the segment. Put one where corepool's route puts a
    ``PickleBuffer`` of the segment, in a reducer registered with
    ``multiprocessing.reduction.register``.
    """

    __slots__ = ("fd",)

    def __init__(self, memory: memoryview) -> None:
        fd = _shared_fd_of(memory)
        if fd is None:
            raise TypeError("only the memory of a shared segment can travel as a StdlibSegment")
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        return _map_detached, (reduction.DupFd(self.fd),)


def _map_detached(handle: Any) -> memoryview:
    return _map_shared(_detach(handle))


# multiprocessing's pickler (Manager calls, its Queue, Pipe and Process
# arguments) consults this registry before an object's own __reduce__.
reduction.register(PassFd, _reduce_for_multiprocessing)


def _take_fd(number: int, route_error: str) -> int:
    received = _unpacking.get(None)
    if received is None or number >= len(received) or received[number] is None:
        raise TypeError(route_error)
    fd = received[number]
    received[number] = None  # taken: the payload no longer closes it
    assert fd is not None
    return fd


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
    obj: Any,
    threshold: int | None,
    cache: SegmentCache | None = None,
    *,
    for_parent: bool = False,
) -> tuple[Packed, list[int]]:
    """Pickle ``obj`` with its large buffers in segments; return it and their descriptors.

    Plain pickle first, then with ``memoryview`` support, then cloudpickle
    for what they cannot pickle or would pickle by a reference to
    ``__main__`` (as ``pickling.dumps`` does, ``for_parent`` included). The
    descriptors are the caller's: send them (the channel closes them) or
    close them.
    """
    packer = _Packer(threshold, cache)
    data: bytes | None = None
    token = _packing.set(packer)
    try:
        try:
            data = pickle.dumps(obj, PROTOCOL, buffer_callback=packer)
        except _PICKLE_ERRORS:
            packer.close()
            with contextlib.suppress(*_PICKLE_ERRORS):
                data = _dumps_with_memoryviews(obj, packer)
        if data is None or (MAIN_REFERENCE in data and not for_parent):
            packer.close()
            data = dumps_by_value(obj, packer)
    except BaseException:
        packer.close()
        raise
    finally:
        _packing.reset(token)
    return Packed(data, bytes(packer.kinds)), packer.fds


def split_fds(first: Packed | None, fds: list[int]) -> tuple[list[int], list[int]]:
    """Split a message's descriptors: those of ``first``, and the rest (of what follows it)."""
    count = 0 if first is None else len(first.kinds)
    return fds[:count], fds[count:]


def open_segments(packed: Packed, fds: list[int], *, writable_copies: bool) -> Payload:
    """Map the segments of a received ``Packed``; every descriptor is taken (closed or kept).

    Copies are mapped read-only unless ``writable_copies``; shared segments
    are always writable; plain descriptors wait in the payload for the
    objects that unpickling rebuilds around them.
    """
    views = []
    descriptors: list[int | None] = []
    pending = list(fds)
    try:
        if len(fds) != len(packed.kinds):
            raise ConnectionError(
                f"{len(packed.kinds)} descriptors were announced but {len(fds)} came"
            )
        for kind in packed.kinds:
            fd = pending[0]
            if kind == _SHARED[0]:
                views.append(_map_shared(fd))
            elif kind == _COPY[0]:
                views.append(map_segment(fd, writable=writable_copies))
                os.close(fd)
            else:
                descriptors.append(fd)
            pending.pop(0)
    except BaseException:
        close_fds([fd for fd in descriptors if fd is not None])
        raise
    finally:
        close_fds(pending)
    return Payload(packed, views, descriptors)


class Payload:
    """Received pickled values with their mapped segments and descriptors; ``load()`` unpickles.

    Descriptors that no unpickled object took are closed after ``load``, or
    when the payload is dropped unloaded.
    """

    __slots__ = ("__weakref__", "_buffers", "_descriptors", "packed")

    def __init__(
        self,
        packed: Packed,
        buffers: list[memoryview] | None = None,
        descriptors: list[int | None] | None = None,
    ) -> None:
        self.packed = packed
        self._buffers = buffers or []
        self._descriptors = descriptors or []
        if self._descriptors:
            weakref.finalize(self, _close_left, self._descriptors)

    @property
    def nbytes(self) -> int:
        """The pickle's size plus that of its out-of-band buffers."""
        return len(self.packed.data) + sum(buffer.nbytes for buffer in self._buffers)

    @classmethod
    def of(cls, values: Any) -> Payload:
        """``values`` pickled in band (where results must be pickled again)."""
        return cls(Packed(dumps(values), b""))

    def load(self) -> Any:
        """Unpickle the values (once: the descriptors go to the objects they rebuild)."""
        token = _unpacking.set(self._descriptors)
        try:
            return pickle.loads(self.packed.data, buffers=self._buffers)
        finally:
            _unpacking.reset(token)
            _close_left(self._descriptors)


def _close_left(descriptors: list[int | None]) -> None:
    for number, fd in enumerate(descriptors):
        if fd is not None:
            descriptors[number] = None
            os.close(fd)
