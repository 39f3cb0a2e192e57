"""The scheduler thread's wake-up pipe: callers' threads ring, the scheduler drains.

Runs in the parent. Imports nothing of corepool.

A caller that hands the scheduler work (a job, a cancellation, a resume)
writes one byte, which ends the scheduler's ``select``; while a byte waits
unread, further rings write nothing, so a thousand submits cost one system
call. Draining reads the byte first and lowers the flag after: lowered
first, a ring in between would write a byte that the read swallows while
the flag stays up, and every later ring would be skipped.
"""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["WakeupPipe"]


class WakeupPipe:
    """A self-pipe that wakes one thread blocked in ``select`` on ``fileno()``."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        # Guards closing: once closed, the pipe's numbers may be reused by
        # anyone (a ProcessPoolExecutor's pipe, say), and a stray ring must
        # not write into that.
        self._lock = threading.Lock()
        self._closed = False
        self._pending = False  # a byte waits in the pipe: further rings need not write

    def fileno(self) -> int:
        """The end to select on."""
        return self._read_fd

    def ring(self) -> None:
        """Wake the thread; one system call per wake-up, however many callers ring."""
        if self._pending:
            return
        with self._lock:
            if self._closed:
                return
            self._pending = True
            with contextlib.suppress(BlockingIOError):  # full: the thread is awake already
                os.write(self._write_fd, b"\0")

    def drain(self) -> None:
        """The woken thread: take the byte, then let the next ring write again."""
        os.read(self._read_fd, 4096)
        self._pending = False

    def close(self) -> None:
        """Close both ends; later rings do nothing."""
        with self._lock:
            self._closed = True
            os.close(self._read_fd)
            os.close(self._write_fd)
