"""Framed messages with file descriptors attached, over a connected Unix stream socket.

Both ends of a worker connection use it. The parent runs it non-blocking, in
the scheduler thread: a worker answers with a blocking write and reads its
next chunk only after that, so if the parent also blocked writing a large
chunk to it, both would wait for each other forever once the socket buffers
filled; and a read that waited for the rest of a message would hang the
scheduler if the worker stopped half-way. So the parent queues what it sends
and writes only what the socket takes now, and reads only what has arrived,
keeping partial messages until they are whole. A worker runs it blocking.

A frame is a 12-byte header (payload size as uint64, descriptor count as
uint32) and the payload. Descriptors (shared-memory segments, see
``buffers.py``) travel as ``SCM_RIGHTS`` ancillary data with the first bytes
of the send that carries their frame, so they arrive no later than the
frame's first byte; the reader keeps them in arrival order and hands each
frame as many as its header declares. A message carries at most
``MAX_FDS`` descriptors, the kernel's limit for one send.
"""

from __future__ import annotations

import array
import collections
import itertools
import os
import select
import socket
import struct
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["MAX_FDS", "Channel", "Message", "close_fds", "recv_exactly"]

_HEADER = struct.Struct("!QI")
MAX_FDS = 250  # the kernel accepts 253 per sendmsg (SCM_MAX_FD)
_FD_SIZE = array.array("i").itemsize
_ANCILLARY_SIZE = socket.CMSG_SPACE(MAX_FDS * _FD_SIZE)
_RECV_FLAGS = int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))
_DONTWAIT = int(socket.MSG_DONTWAIT)
_CTRUNC = int(socket.MSG_CTRUNC)
_BATCH = 64  # buffers per sendmsg
# Reads take up to this much at once: a small frame (header and payload)
# arrives in one system call, often with the next ones. Larger payloads are
# read straight into their own buffer.
_READ_BYTES = 64 * 1024


class Message(NamedTuple):
    """One frame: its payload and the descriptors that came with it (the receiver owns them)."""

    payload: bytearray
    fds: list[int]


class _Pending:
    """A part of a queued frame; the header part carries the frame's descriptors."""

    __slots__ = ("data", "fds")

    def __init__(self, data: memoryview, fds: list[int]) -> None:
        self.data = data
        self.fds = fds


class Channel:
    """One end of a worker connection.

    Args:
        sock: A connected ``AF_UNIX`` stream socket; the channel owns it.
        blocking: ``False`` in the parent (``send`` queues, ``receive``
            returns what is whole now); ``True`` in a worker (``send`` and
            ``recv`` wait).
    """

    def __init__(self, sock: socket.socket, *, blocking: bool) -> None:
        sock.setblocking(blocking)
        self._sock = sock
        self._blocking = blocking
        self._outbox: collections.deque[_Pending] = collections.deque()
        self._fds_in: collections.deque[int] = collections.deque()
        self._inbox = bytearray()  # received bytes not yet parsed into frames
        self._scratch = memoryview(bytearray(_READ_BYTES))  # reads of small frames land here
        self._payload: bytearray | None = None  # a large payload being read into place
        self._fd_count = 0
        self._got = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def has_pending_output(self) -> bool:
        return bool(self._outbox)

    @property
    def closed(self) -> bool:
        return self._sock.fileno() == -1

    # -- sending -------------------------------------------------------------

    def send(self, payload: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
        """Send ``payload`` with ``fds``, which the channel now owns and closes once sent.

        Non-blocking: queue the frame and write as much as the socket takes
        now. Blocking: return once the whole frame is written.

        Raises:
            OSError: The peer is gone (``BrokenPipeError``, ``ConnectionResetError``).
        """
        if len(fds) > MAX_FDS:
            close_fds(fds)
            raise ValueError(f"a message carries at most {MAX_FDS} descriptors, not {len(fds)}")
        header = _HEADER.pack(len(payload), len(fds))
        sent = 0
        if not self._outbox:  # the common case: nothing queued, try to write it all now
            ancillary = (
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            )
            try:
                sent = self._sock.sendmsg(
                    [header, payload], ancillary, 0 if self._blocking else _DONTWAIT
                )
            except BlockingIOError:
                pass
            except OSError:
                close_fds(fds)
                raise
            else:
                if fds:
                    close_fds(fds)  # they went with the first byte
                    fds = ()
                if sent == len(header) + len(payload):
                    return
        # Queue what is left: the header's part carries the descriptors, if unsent.
        if sent < len(header):
            self._outbox.append(_Pending(memoryview(header)[sent:], list(fds)))
            self._outbox.append(_Pending(memoryview(payload), []))
        else:
            self._outbox.append(_Pending(memoryview(payload)[sent - len(header) :], []))
        if self._blocking:
            self._flush_blocking()
        else:
            self.flush()

    def flush(self) -> None:
        """Write queued bytes until the socket would block (non-blocking channels).

        Raises:
            OSError: The peer is gone.
        """
        while self._outbox:
            try:
                sent = self._send_batch(_DONTWAIT)
            except BlockingIOError:
                return
            self._consume(sent)

    def _flush_blocking(self) -> None:
        while self._outbox:
            self._consume(self._send_batch(0))

    def _send_batch(self, flags: int) -> int:
        """One ``sendmsg`` of the queue's head; the descriptors of its frames go with it."""
        batch: list[memoryview] = []
        fds: list[int] = []
        for part in itertools.islice(self._outbox, _BATCH):
            if part.fds and batch and len(fds) + len(part.fds) > MAX_FDS:
                break
            batch.append(part.data)
            fds.extend(part.fds)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sent = self._sock.sendmsg(batch, ancillary, int(flags))
        if fds:  # sent with the first byte: the peer has its copies now
            for part in itertools.islice(self._outbox, len(batch)):
                close_fds(part.fds)
                part.fds = []
        return sent

    def _consume(self, sent: int) -> None:
        while sent:
            head = self._outbox[0]
            if sent >= len(head.data):
                sent -= len(head.data)
                self._outbox.popleft()
            else:
                head.data = head.data[sent:]
                sent = 0

    # -- receiving -----------------------------------------------------------

    def receive(self) -> list[Message]:
        """Every message that has arrived whole, without waiting (non-blocking channels).

        Raises:
            EOFError: The peer closed its end; the messages that arrived
                whole before that were returned by earlier calls.
            OSError: The connection broke (``ConnectionResetError``), likewise.
        """
        messages: list[Message] = []
        while True:
            try:
                message = self._read_frame()
            except BlockingIOError:
                return messages
            except (EOFError, OSError):
                # The end (or ECONNRESET: the peer left unread data behind) is
                # seen again on the next call; first hand over what came before.
                if messages:
                    return messages
                raise
            messages.append(message)

    def recv(self, timeout: float | None = None) -> Message | None:
        """Wait for the next message (blocking channels); ``None`` if ``timeout`` passes first.

        Raises:
            EOFError: The peer closed its end.
        """
        if timeout is not None and not self._inbox and self._payload is None:
            readable, _, _ = select.select([self._sock], [], [], timeout)
            if not readable:
                return None
        return self._read_frame()

    def _read_frame(self) -> Message:
        if not self._inbox and self._payload is None:
            # The common case, kept short: nothing left over, and one read
            # brings exactly one frame without descriptors.
            scratch = self._scratch
            count = self._read_into(scratch)
            if count >= _HEADER.size:
                size, fd_count = _HEADER.unpack_from(scratch)
                if fd_count == 0 and count == _HEADER.size + size:
                    return Message(bytearray(scratch[_HEADER.size : count]), [])
            self._inbox += scratch[:count]
        while True:
            message = self._parse()
            if message is not None:
                return message
            self._fill()

    def _parse(self) -> Message | None:
        """The next whole frame out of what was read, or ``None`` if it has not all come."""
        if self._payload is not None:
            if self._got < len(self._payload):
                return None
            payload, self._payload = self._payload, None
            return self._message(payload)
        inbox = self._inbox
        if len(inbox) < _HEADER.size:
            return None
        size, self._fd_count = _HEADER.unpack_from(inbox)
        end = _HEADER.size + size
        if len(inbox) >= end:
            payload = inbox[_HEADER.size : end]
            del inbox[:end]
            return self._message(payload)
        if size > _READ_BYTES:  # read the rest straight into place
            self._payload = bytearray(size)
            self._got = len(inbox) - _HEADER.size
            self._payload[: self._got] = memoryview(inbox)[_HEADER.size :]
            inbox.clear()
        return None

    def _message(self, payload: bytearray) -> Message:
        if len(self._fds_in) < self._fd_count:
            raise ConnectionError(
                f"a message declared {self._fd_count} descriptors but "
                f"{len(self._fds_in)} arrived: the peer does not speak this protocol"
            )
        fds = [self._fds_in.popleft() for _ in range(self._fd_count)]
        return Message(payload, fds)

    def _fill(self) -> None:
        """One read from the socket: into the large payload under way, or the inbox."""
        if self._payload is not None:
            self._got += self._read_into(memoryview(self._payload)[self._got :])
        else:
            count = self._read_into(self._scratch)
            self._inbox += self._scratch[:count]

    def _read_into(self, view: memoryview) -> int:
        count, ancillary, flags, _ = self._sock.recvmsg_into([view], _ANCILLARY_SIZE, _RECV_FLAGS)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % _FD_SIZE])
                self._fds_in.extend(fds)
                if not _RECV_FLAGS:
                    for fd in fds:
                        os.set_inheritable(fd, False)
        if flags & _CTRUNC:
            raise ConnectionError("descriptors were lost in transit (MSG_CTRUNC)")
        if count == 0:
            raise EOFError("the peer closed its connection")
        return count

    # -- ending --------------------------------------------------------------

    def detach(self) -> None:
        """Forget the socket without closing its descriptor (in a forked child)."""
        self._outbox.clear()
        self._fds_in.clear()
        self._inbox.clear()
        self._sock.detach()

    def close(self) -> None:
        for part in self._outbox:
            close_fds(part.fds)
        self._outbox.clear()
        close_fds(self._fds_in)
        self._fds_in.clear()
        self._sock.close()


def close_fds(fds: Iterable[int]) -> None:
    """Close each of ``fds`` (descriptors a message brought, or was to carry)."""
    for fd in fds:
        os.close(fd)


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
