"""``Pipe``: the stdlib's ``Connection`` ends, made passable to pool tasks.

Runs in every process that holds an end. The stdlib's ``Connection`` is
right as it is (bytes messages, ``send_bytes``/``recv_bytes_into``,
``poll``, ``BufferTooShort``), but pickled by anything but the stdlib's own
process start it silently carries a descriptor number that means nothing in
the receiver. This subclass pickles its descriptor as a ``PassFd``, which
corepool's transport (pool tasks, ``Process``, queues) and the stdlib's
pickler (its queues, a ``Manager``) both carry.
"""

from __future__ import annotations

import multiprocessing.connection as _stdlib_connection
import os
import socket
from typing import Any

from corepool._transport.buffers import PassFd

__all__ = ["Connection", "Pipe"]

_ROUTE = (
    "a corepool.multiprocessing Connection travels through corepool (pool tasks, "
    "Process, queues) or multiprocessing's own pickling; it was pickled some other way."
)


class Connection(_stdlib_connection.Connection):
    """``multiprocessing.connection.Connection`` that can be passed to pool tasks."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (PassFd(self.fileno(), _ROUTE), self.readable, self.writable)


def _rebuild(fd: int, readable: bool, writable: bool) -> Connection:
    return Connection(fd, readable, writable)


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:  # noqa: N802 (the stdlib's name)
    """Two connected ends; with ``duplex=False`` the first only receives, the second only sends.

    Example:
        >>> reader, writer = Pipe(duplex=False)
        >>> writer.send([1, 2])
        >>> reader.recv()
        [1, 2]
    """
    if duplex:
        first, second = socket.socketpair()
        return Connection(first.detach()), Connection(second.detach())
    read_end, write_end = os.pipe()
    return Connection(read_end, writable=False), Connection(write_end, readable=False)
