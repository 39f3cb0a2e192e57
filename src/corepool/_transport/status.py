"""The status board: a few int64 fields of shared memory per worker.

The parent creates the board and hands its file descriptor to each worker;
a worker writes the chunk and the position of the task it is running, with
no message sent per task, so that when it dies the parent reads exactly
which task killed it. The memory is an anonymous file (``memfd_create`` on
Linux, an unlinked temporary file elsewhere): it has no name, so nothing can
be left behind in ``/dev/shm`` whatever happens to either side.
"""

from __future__ import annotations

import mmap
import os
import tempfile

from corepool._protocol import STATUS_FIELDS, STATUS_IDLE

__all__ = ["StatusBoard"]

_FIELD_BYTES = 8


def _anonymous_file(size_bytes: int) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("corepool-status", os.MFD_CLOEXEC)
    else:
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    os.ftruncate(fd, size_bytes)
    return fd


class StatusBoard:
    """One status slot per worker id, in memory shared by parent and workers."""

    def __init__(self, slots: int, fd: int | None = None) -> None:
        self.slots = slots
        size_bytes = max(1, slots) * STATUS_FIELDS * _FIELD_BYTES
        self.fd = _anonymous_file(size_bytes) if fd is None else fd
        self._map = mmap.mmap(self.fd, size_bytes)
        self._fields = memoryview(self._map).cast("q")
        if fd is None:
            for slot in range(slots):
                self.reset(slot)

    def slot(self, worker_id: int) -> memoryview:
        """The writable int64 fields of one worker's slot."""
        start = worker_id * STATUS_FIELDS
        return self._fields[start : start + STATUS_FIELDS]

    def read(self, worker_id: int) -> tuple[int, int]:
        """``(chunk_id, position)`` of the task the worker was running."""
        fields = self.slot(worker_id)
        return fields[0], fields[1]

    def reset(self, worker_id: int) -> None:
        fields = self.slot(worker_id)
        fields[0] = STATUS_IDLE
        fields[1] = 0

    def close(self) -> None:
        """Unmap and close; views handed out by ``slot`` must be released first."""
        self._fields.release()
        self._map.close()
        os.close(self.fd)
