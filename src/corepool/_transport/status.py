"""The status board: a few int64 fields of shared memory per worker.

The parent creates one board for all its pools and hands its file
descriptor to each worker, with the number of the slot that is the worker's
for life (a worker parked by one pool and adopted by the next keeps it). A
worker writes the chunk and the position of the task it is running, with no
message sent per task, so that when it dies the parent reads exactly which
task killed it. The memory is an anonymous file (``memfd_create`` on
Linux, an unlinked temporary file elsewhere): it has no name, so nothing can
be left behind in ``/dev/shm`` whatever happens to either side.
"""

from __future__ import annotations

import mmap
import threading

from corepool._protocol import STATUS_FIELDS, STATUS_IDLE
from corepool._transport.buffers import anonymous_file

__all__ = ["StatusBoard", "forget_shared_board", "shared_board"]

_FIELD_BYTES = 8
# Slots of the parent's board: workers alive at once, all pools together.
# Pages are only touched when used, so a generous size costs nothing.
BOARD_SLOTS = 16_384


class StatusBoard:
    """One status slot per worker id, in memory shared by parent and workers."""

    def __init__(self, slots: int, fd: int | None = None) -> None:
        self.slots = slots
        size_bytes = max(1, slots) * STATUS_FIELDS * _FIELD_BYTES
        self.fd = anonymous_file("corepool-status", size_bytes) if fd is None else fd
        self._map = mmap.mmap(self.fd, size_bytes)
        self._fields = memoryview(self._map).cast("q")
        self._lock = threading.Lock()
        self._free = list(reversed(range(slots)))

    def slot(self, worker_id: int) -> memoryview:
        """The writable int64 fields of one worker's slot."""
        start = worker_id * STATUS_FIELDS
        return self._fields[start : start + STATUS_FIELDS]

    def read(self, slot: int) -> tuple[int, int, int]:
        """``(chunk_id, position, started_ns)`` of the task the worker runs or ran last.

        Read in this order on purpose: the worker writes a task's start time
        before its position, so a start time read after a position is never
        older than that position's task.
        """
        start = slot * STATUS_FIELDS
        fields = self._fields
        return fields[start], fields[start + 1], fields[start + 2]

    def reset(self, slot: int) -> None:
        fields = self.slot(slot)
        fields[0] = STATUS_IDLE
        fields[1] = 0
        fields[2] = 0

    def allocate(self) -> int:
        """Take a free slot for a new worker."""
        with self._lock:
            if not self._free:
                raise RuntimeError(
                    f"more than {self.slots} corepool workers are alive at once: "
                    "close pools you no longer use"
                )
            slot = self._free.pop()
        self.reset(slot)
        return slot

    def release(self, slot: int) -> None:
        """Give back the slot of a worker that has ended."""
        with self._lock:
            self._free.append(slot)


_shared: StatusBoard | None = None
_shared_lock = threading.Lock()
_inherited: list[StatusBoard] = []  # kept, never closed: see forget_shared_board()


def shared_board() -> StatusBoard:
    """This process's board, made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = StatusBoard(BOARD_SLOTS)
        return _shared


def forget_shared_board() -> None:
    """In a child made by ``os.fork()``: the board copied from the parent is not ours.

    The copy is kept referenced, never closed: its descriptor number is the
    one the child's own worker loop maps.
    """
    global _shared
    if _shared is not None:
        _inherited.append(_shared)
    _shared = None
