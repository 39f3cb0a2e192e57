"""The message format of ``corepool.Queue`` and ``corepool.Pipe``, and its socket calls.

Runs in every process that holds a queue or a pipe; imports only the rest of
``_transport``, ``_protocol`` and ``errors``. A message is a 3-byte header
(flags, number of segment kinds), the kinds, then the item's pickle, or, for a
pickle too large to send inline, nothing: the pickle is in the last segment.
Segments' descriptors travel beside the message as ``SCM_RIGHTS`` data.
On a queue's socket, a message is preceded by its 8-byte sequence number
(see ``_ring.py``: it pairs the message with its entry in the ring).
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from typing import Any

from corepool._protocol import Packed
from corepool._transport.buffers import (
    MAX_SEGMENTS,
    copy_to_segment,
    map_segment,
    open_segments,
    pack,
)
from corepool._transport.channel import close_fds
from corepool._transport.pickling import PROTOCOL
from corepool.errors import QueueClosed

__all__ = [
    "BATCH",
    "decode",
    "encode",
    "encode_packed",
    "is_plain",
    "plain_frame",
    "receive_frame",
    "send_frame",
]

# A message's pickle larger than this travels as a segment: a SEQPACKET
# message must fit in the socket's send buffer whole.
INLINE_BYTES = 128 * 1024
_SEQUENCE = struct.Struct("=q")  # a queue socket message's number, before its frame
RECEIVE_BYTES = _SEQUENCE.size + INLINE_BYTES + 4096
_ANCILLARY_BYTES = socket.CMSG_SPACE((MAX_SEGMENTS + 1) * 4)
_HEADER = struct.Struct("!BH")  # flags, number of segment kinds
_INLINE, BATCH = 1, 2  # flags: the pickle is in the message; it is a list of items
_SEND_FLAGS = int(socket.MSG_DONTWAIT)
_RECEIVE_FLAGS = int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))
_BROKEN = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
_PLAIN_INLINE = _HEADER.pack(_INLINE, 0)
_PLAIN_BATCH = _HEADER.pack(_INLINE | BATCH, 0)
_SCALARS = frozenset({bytes, str, int, float, bool, type(None)})
_PLAIN_ITEMS = 16  # a longer container is not worth looking through first


def is_plain(obj: Any) -> bool:
    """Whether ``obj`` is a scalar, or a short tuple or list of scalars: pickled as it is.

    Such an object holds no buffer to send out of band and nothing passed by
    handle, so the packer (about 3 us a message, measured) has nothing to do.
    """
    kind = type(obj)
    if kind in _SCALARS:
        return True
    if (kind is tuple or kind is list) and len(obj) <= _PLAIN_ITEMS:
        return _SCALARS.issuperset(map(type, obj))  # all() of a generator costs 2x
    return False


def encode(obj: Any, threshold: int | None, flags: int) -> tuple[bytes, list[int], int]:
    """A message for ``obj`` (a list of items if ``flags`` has ``BATCH``), its fds, its pickle size.

    The pickle may be in a segment rather than the message: its size is
    what a sender that sizes batches needs.
    """
    if is_plain(obj):  # nothing inside can go out of band: plain pickle, no packer
        data = pickle.dumps(obj, PROTOCOL)
        if len(data) <= INLINE_BYTES:
            return plain_frame(data, flags), [], len(data)
    return encode_packed(obj, threshold, flags)


def plain_frame(data: bytes, flags: int) -> bytes:
    """The message of ``data``, a plain pickle of at most ``INLINE_BYTES``."""
    return (_PLAIN_BATCH if flags & BATCH else _PLAIN_INLINE) + data


def encode_packed(obj: Any, threshold: int | None, flags: int) -> tuple[bytes, list[int], int]:
    """``encode`` through the packer: large buffers in segments, corepool objects by handle."""
    packed, fds = pack(obj, threshold)
    size = len(packed.data)
    if size <= INLINE_BYTES:
        if not fds:  # the common case, kept short
            return plain_frame(packed.data, flags), fds, size
        head = _HEADER.pack(flags | _INLINE, len(packed.kinds)) + packed.kinds
        return head + packed.data, fds, size
    try:
        fds.append(copy_to_segment(memoryview(packed.data)))
    except BaseException:
        close_fds(fds)
        raise
    return _HEADER.pack(flags, len(packed.kinds)) + packed.kinds, fds, size


def decode(frame: memoryview | bytes, fds: list[int]) -> tuple[Any, bool]:
    """The message's object, and whether it is a batch (a list of items)."""
    flags, count = _HEADER.unpack_from(frame)
    start = _HEADER.size + count
    if flags & _INLINE and not fds:  # a view: slicing bytes would copy the pickle
        return pickle.loads(memoryview(frame)[start:]), bool(flags & BATCH)
    kinds = bytes(frame[_HEADER.size : start])
    if flags & _INLINE:
        packed = Packed(bytes(frame[start:]), kinds)
        return open_segments(packed, fds, writable_copies=True).load(), bool(flags & BATCH)
    try:
        body = bytes(map_segment(fds[-1], writable=False))
    finally:
        os.close(fds[-1])
    packed = Packed(body, kinds)
    return open_segments(packed, fds[:-1], writable_copies=True).load(), bool(flags & BATCH)


def send_frame(sock: socket.socket, sequence: int, frame: bytes, fds: list[int]) -> None:
    """Send one message, numbered ``sequence``, on a ``SOCK_SEQPACKET`` socket without waiting.

    Raises:
        BlockingIOError: The socket has no room now.
        QueueClosed: The other side is gone.
    """
    ancillary = (
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    )
    try:
        sock.sendmsg([_SEQUENCE.pack(sequence), frame], ancillary, _SEND_FLAGS)
    except BrokenPipeError:
        raise QueueClosed("put() on a closed corepool.Queue") from None


def receive_frame(sock: socket.socket, buffer: bytearray) -> tuple[int, memoryview, list[int]]:
    """Wait for one message of a ``SOCK_SEQPACKET`` socket: its number, frame (in ``buffer``), fds.

    Raises:
        EOFError: The socket was shut.
        ConnectionError: The message did not fit (a bug or a foreign writer).
    """
    size, ancillary, flags, _ = sock.recvmsg_into([buffer], _ANCILLARY_BYTES, _RECEIVE_FLAGS)
    fds: list[int] = []
    for level, kind, data in ancillary:  # none, for a message without segments
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) // 4 * 4]))
    if flags & _BROKEN or 0 < size < _SEQUENCE.size:
        close_fds(fds)
        raise ConnectionError("a corepool.Queue message was truncated")
    if not size:
        raise EOFError("the socket was shut")
    return _SEQUENCE.unpack_from(buffer)[0], memoryview(buffer)[_SEQUENCE.size : size], fds
