"""The parent's end of a worker connection: framed messages, writes that never block.

Runs in the parent, in the scheduler thread. A worker answers with a blocking
write and reads its next chunk only after that; if the parent also blocked
writing a large chunk to it, both would wait for each other forever once the
socket buffers filled. So the parent queues what it sends and writes only
what the socket takes now (``MSG_DONTWAIT``), and the scheduler waits for
the socket to become writable while a message is pending.

The framing is that of ``multiprocessing.connection.Connection``, which the
worker uses: a 4-byte big-endian length (``-1`` then 8 bytes for messages of
2 GiB and more), then the bytes.
"""

from __future__ import annotations

import collections
import itertools
import select
import socket
import struct

__all__ = ["Channel", "recv_exactly"]

_SIZE = struct.Struct("!i")
_LARGE_SIZE = struct.Struct("!Q")
_LARGE = 0x7FFFFFFF


def _header(size: int) -> bytes:
    if size > _LARGE:
        return _SIZE.pack(-1) + _LARGE_SIZE.pack(size)
    return _SIZE.pack(size)


class Channel:
    """Framed messages over a connected stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._outbox: collections.deque[memoryview] = collections.deque()

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def has_pending_output(self) -> bool:
        return bool(self._outbox)

    def send(self, payload: bytes) -> None:
        """Queue ``payload`` and write as much of it as the socket takes now."""
        self._outbox.append(memoryview(_header(len(payload))))
        self._outbox.append(memoryview(payload))
        self.flush()

    def flush(self) -> None:
        """Write queued bytes until the socket would block.

        Raises:
            OSError: The peer is gone (``BrokenPipeError``, ``ConnectionResetError``).
        """
        while self._outbox:
            try:
                sent = self._sock.sendmsg(
                    list(itertools.islice(self._outbox, 64)), [], socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                return
            while sent:
                head = self._outbox[0]
                if sent >= len(head):
                    sent -= len(head)
                    self._outbox.popleft()
                else:
                    self._outbox[0] = head[sent:]
                    sent = 0

    def poll(self) -> bool:
        """Whether a message (or EOF) can be read now."""
        readable, _, _ = select.select([self._sock], [], [], 0)
        return bool(readable)

    def recv(self) -> bytearray:
        """Read one whole message, blocking until it has arrived.

        Raises:
            EOFError: The peer closed its end (the worker ended).
        """
        size = _SIZE.unpack(self._read(_SIZE.size))[0]
        if size == -1:
            size = _LARGE_SIZE.unpack(self._read(_LARGE_SIZE.size))[0]
        return self._read(size)

    def _read(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        received = 0
        while received < size:
            count = self._sock.recv_into(view[received:])
            if count == 0:
                raise EOFError("the worker closed its connection")
            received += count
        return buffer

    def detach(self) -> None:
        """Forget the socket without closing its descriptor (in a forked child)."""
        self._outbox.clear()
        self._sock.detach()

    @property
    def closed(self) -> bool:
        return self._sock.fileno() == -1

    def close(self) -> None:
        self._outbox.clear()
        self._sock.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes from a blocking socket.

    Raises:
        EOFError: The peer closed the socket first.
    """
    data = bytearray()
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            raise EOFError(f"the peer closed the socket after {len(data)} of {size} bytes")
        data += part
    return bytes(data)
