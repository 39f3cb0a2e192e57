"""``Pipe``: two connected ``Connection`` ends, passable to pool tasks and ``corepool.Process``.

Each end is a ``Channel`` (framed messages with descriptors) over a Unix
stream socket; objects travel in the queue's message format, so large
buffers go through shared memory.
"""

from __future__ import annotations

import select
import socket
from typing import Any

from corepool._transport.buffers import DEFAULT_THRESHOLD, PassFd
from corepool._transport.channel import Channel
from corepool._transport.frames import decode, encode

__all__ = ["Connection", "Pipe"]

_PIPE_ROUTE = (
    "a corepool Connection travels only through corepool (pool tasks, corepool.Process, "
    "a corepool.Queue) and multiprocessing (a Manager, its Queue, Pipe and Process): "
    "it was pickled some other way."
)


class Connection:
    """One end of a ``corepool.Pipe``: ``send`` an object, ``recv`` one.

    As with ``multiprocessing``, one end is used by one process at a time.
    """

    def __init__(self, sock: socket.socket, *, readable: bool, writable: bool) -> None:
        self._channel = Channel(sock, blocking=True)
        self._readable = readable
        self._writable = writable

    def send(self, obj: Any) -> None:
        """Send ``obj`` (pickled; large buffers through shared memory).

        Raises:
            OSError: The other end is closed.
        """
        if not self._writable:
            raise OSError("this connection is read-only")
        frame, fds, _ = encode(obj, DEFAULT_THRESHOLD, 0)
        self._channel.send(frame, fds)

    def recv(self) -> Any:
        """Wait for the next object and return it.

        Raises:
            EOFError: The other end was closed and nothing is left to read.
        """
        if not self._readable:
            raise OSError("this connection is write-only")
        message = self._channel.recv()
        assert message is not None
        return decode(memoryview(message.payload), message.fds)[0]

    def send_bytes(self, data: bytes) -> None:
        """Send raw bytes, to be read with ``recv_bytes``."""
        self.send(bytes(data))

    def recv_bytes(self) -> bytes:
        """Wait for bytes sent with ``send_bytes``."""
        data = self.recv()
        if not isinstance(data, bytes):
            raise TypeError(f"recv_bytes() got a {type(data).__name__}, not bytes")
        return data

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether something can be read now, or within ``timeout`` seconds (``None``: wait)."""
        readable, _, _ = select.select([self._channel], [], [], timeout)
        return bool(readable)

    def fileno(self) -> int:
        return self._channel.fileno()

    @property
    def closed(self) -> bool:
        return self._channel.closed

    def close(self) -> None:
        """Close this end; the other end's ``recv`` then raises ``EOFError``."""
        if not self._channel.closed:
            self._channel.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_connection, (
            PassFd(self.fileno(), _PIPE_ROUTE),
            self._readable,
            self._writable,
        )


def _rebuild_connection(fd: int, readable: bool, writable: bool) -> Connection:
    return Connection(socket.socket(fileno=fd), readable=readable, writable=writable)


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:  # noqa: N802 (multiprocessing's name)
    """Two connected ends; with ``duplex=False``, the first only receives and the second only sends.

    Either end can be passed to pool tasks and to ``corepool.Process``.

    Example:
        >>> here, there = corepool.Pipe()
        >>> there.send({"ready": True})
        >>> here.recv()
        {'ready': True}
    """
    first, second = socket.socketpair()
    return (
        Connection(first, readable=True, writable=duplex),
        Connection(second, readable=duplex, writable=True),
    )
