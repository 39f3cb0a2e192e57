"""``Queue`` and ``Pipe`` for processes, passable to pool tasks and ``corepool.Process``.

A ``Queue`` is a Unix ``SOCK_SEQPACKET`` socket pair that every process
holding the queue shares: ``put`` sends one message, ``get`` receives one.
The kernel hands each message, whole, to exactly one reader, so many
producers and many consumers need no lock; a thread in a producer sends only
what the socket had no room for (its backlog). Large
buffers (numpy arrays, ``bytearray``) and large pickles travel as
shared-memory segments, as with pool tasks. ``close()`` shuts the socket's
sending side for everyone: consumers drain what is left, then ``get``
raises ``QueueClosed`` and iteration ends.

``Pipe`` gives two ``Connection`` ends of a stream socket pair: ``send``
and ``recv`` objects (large buffers through shared memory), like
``multiprocessing.Pipe``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from corepool._protocol import Packed
from corepool._transport import exit_hooks
from corepool._transport.buffers import (
    DEFAULT_THRESHOLD,
    MAX_SEGMENTS,
    PassFd,
    copy_to_segment,
    map_segment,
    open_segments,
    pack,
)
from corepool._transport.channel import Channel, close_fds
from corepool._transport.pickling import PROTOCOL
from corepool.errors import QueueClosed
from corepool.sync import Semaphore, SharedBlock, libc, sem_value

__all__ = ["Connection", "Pipe", "Queue"]

# A message's pickle larger than this travels as a segment: a SEQPACKET
# message must fit in the socket's send buffer whole.
_INLINE_BYTES = 128 * 1024
_RECEIVE_BYTES = _INLINE_BYTES + 4096
_ANCILLARY_BYTES = socket.CMSG_SPACE((MAX_SEGMENTS + 1) * 4)
_HEADER = struct.Struct("!BH")  # flags, number of segment kinds
_INLINE, _BATCH = 1, 2  # flags: the pickle is in the message; it is a list of items
_SEND_FLAGS = int(socket.MSG_DONTWAIT)
_RECEIVE_BLOCKING = int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))
_RECEIVE_FLAGS = int(socket.MSG_DONTWAIT) | _RECEIVE_BLOCKING
_BROKEN = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
_PLAIN_INLINE = _HEADER.pack(_INLINE, 0)
_PLAIN_BATCH = _HEADER.pack(_INLINE | _BATCH, 0)
# put_many aims each message at about this many bytes of pickle, and at most
# this many items: a batch of large items must not become one huge pickle.
_BATCH_BYTES = 32 * 1024
_BATCH_ITEMS = 1000
_SCALARS = frozenset({bytes, str, int, float, bool, type(None)})
_FIRST_BATCH = 8
_ITEMS, _CLOSED_BYTE = 0, 0  # the state block's semaphore, and its flag byte
_QUEUE_ROUTE = (
    "a corepool.Queue travels only through corepool (pool tasks, corepool.Process, "
    "another corepool.Queue) and multiprocessing (a Manager, its Queue, Pipe and "
    "Process): it was pickled some other way."
)


def _encode(obj: Any, threshold: int | None, flags: int) -> tuple[bytes, list[int], int]:
    """A queue message (header, segment kinds, pickle or segment), its fds and pickle size."""
    if type(obj) in _SCALARS:  # nothing inside can go out of band: plain pickle, no packer
        data = pickle.dumps(obj, PROTOCOL)
        if len(data) <= _INLINE_BYTES:
            return _PLAIN_INLINE + data, [], len(data)
    packed, fds = pack(obj, threshold)
    size = len(packed.data)
    if size <= _INLINE_BYTES:
        if not fds:  # the common case, kept short
            head = _PLAIN_BATCH if flags & _BATCH else _PLAIN_INLINE
            return head + packed.data, fds, size
        head = _HEADER.pack(flags | _INLINE, len(packed.kinds)) + packed.kinds
        return head + packed.data, fds, size
    try:
        fds.append(copy_to_segment(memoryview(packed.data)))
    except BaseException:
        close_fds(fds)
        raise
    return _HEADER.pack(flags, len(packed.kinds)) + packed.kinds, fds, size


def _decode(frame: memoryview, fds: list[int]) -> tuple[Any, bool]:
    """The message's object, and whether it is a batch (a list of items)."""
    flags, count = _HEADER.unpack_from(frame)
    start = _HEADER.size + count
    kinds = bytes(frame[_HEADER.size : start])
    if flags & _INLINE:
        if not fds:
            return pickle.loads(frame[start:]), bool(flags & _BATCH)
        packed = Packed(bytes(frame[start:]), kinds)
        return open_segments(packed, fds, writable_copies=True).load(), bool(flags & _BATCH)
    try:
        body = bytes(map_segment(fds[-1], writable=False))
    finally:
        os.close(fds[-1])
    packed = Packed(body, kinds)
    return open_segments(packed, fds[:-1], writable_copies=True).load(), bool(flags & _BATCH)


def _shut(writer: socket.socket) -> None:
    """Close the queue's sending side, for every process that holds it."""
    with contextlib.suppress(OSError):
        writer.shutdown(socket.SHUT_WR)


def _send_message(sock: socket.socket, frame: bytes, fds: list[int]) -> None:
    try:
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
            sock.sendmsg([frame], ancillary, _SEND_FLAGS)
        else:
            sock.send(frame, _SEND_FLAGS)
    except BrokenPipeError:
        raise QueueClosed("put() on a closed corepool.Queue") from None


class _Backlog:
    """Messages of an unbounded queue that its socket had no room for yet, in this process.

    A thread sends them, in order, as consumers make room; ``put`` never
    waits. The process waits for its backlog to be sent when it exits
    normally (as with ``multiprocessing.Queue``); a process killed first
    loses it.
    """

    def __init__(self, writer: socket.socket) -> None:
        self._writer = writer
        self._messages: collections.deque[tuple[bytes, list[int]]] = collections.deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._close_after = False

    def __bool__(self) -> bool:
        return bool(self._messages)

    def add(self, frame: bytes, fds: list[int]) -> None:
        """Queue a message behind those already waiting (it is counted already)."""
        with self._lock:
            self._messages.append((frame, fds))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._drain, name="corepool-queue-backlog", daemon=True
                )
                _draining.add(self)  # outlives the queue object until it is sent
                self._thread.start()

    def close_when_sent(self) -> bool:
        """Have the thread close the queue once the backlog is sent; ``False`` if none is left."""
        with self._lock:
            if self._thread is None:
                return False
            self._close_after = True
            return True

    def _drain(self) -> None:
        sock = self._writer
        while True:
            with self._lock:
                if not self._messages:
                    self._thread = None
                    _draining.discard(self)
                    if self._close_after:
                        _shut(sock)
                    return
                frame, fds = self._messages[0]
            try:
                _send_message(sock, frame, fds)
            except BlockingIOError:
                select.select([], [sock], [], None)
                continue
            except (QueueClosed, OSError):
                with self._lock:
                    for _, left in self._messages:
                        close_fds(left)
                    self._messages.clear()
                    self._thread = None
                    _draining.discard(self)
                return
            with self._lock:
                self._messages.popleft()
            close_fds(fds)

    def join(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()


_draining: set[_Backlog] = set()  # backlogs with a thread at work


def flush_backlogs() -> None:
    """Wait until every queue's backlog in this process is sent (at exit)."""
    for backlog in list(_draining):
        backlog.join()


exit_hooks.register(flush_backlogs, exit_hooks.Stage.FLUSH)


def _count_in(items_sem: int, items: int) -> None:
    """Add ``items`` to the queue's item count (a semaphore, by address)."""
    for _ in range(items):
        libc.sem_post(items_sem)


class Queue:
    """A first-in first-out queue for processes: many producers, many consumers.

    Pass it to pool tasks and to ``corepool.Process`` like any argument.
    Every item put is got exactly once; a consumer killed while it waits in
    ``get`` loses nothing (items it had already received when it died are
    lost with it, as any task's work in progress is).

    ``put`` on an unbounded queue never waits: items the queue has no room
    for yet wait in the putting process, sent by a thread as consumers make
    room, and that process ends only once they are sent (as with
    ``multiprocessing.Queue``: consume before you join a producer).

    For many small items, ``put_many`` and ``get_many`` move them in
    batches, many times faster than one at a time. The items of one
    ``put_many`` batch go to one consumer, in order: items it received but
    has not returned yet are kept for its next ``get``, and handed back to
    the queue if it ends first.

    Args:
        maxsize: ``put`` waits while this many items are in the queue;
            ``0`` (the default): never.
        buffer_threshold: Buffers this large travel through shared memory
            (see ``PoolOptions.buffer_threshold``).

    Example:
        >>> tasks = corepool.Queue()
        >>> for job in jobs:
        ...     tasks.put(job)
        >>> tasks.close()
        >>> for job in tasks:     # ends once closed and drained
        ...     handle(job)
    """

    def __init__(
        self, maxsize: int = 0, *, buffer_threshold: int | None = DEFAULT_THRESHOLD
    ) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        writer, reader = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._setup(writer, reader, maxsize, buffer_threshold)
        self._space = Semaphore(maxsize) if maxsize else None
        self._state = SharedBlock(1, 1)  # items in the queue; the closed flag
        self._items = self._state.sem(_ITEMS)

    def _setup(
        self, writer: socket.socket, reader: socket.socket, maxsize: int, threshold: int | None
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._maxsize = maxsize
        self._threshold = threshold
        self._backlog: _Backlog | None = None  # this process's, made on first need
        self._received: collections.deque[Any] = collections.deque()  # of a batch
        self._buffers = threading.local()  # each thread's receive buffer

    # -- putting -------------------------------------------------------------

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` at the end; wait for room up to ``timeout`` unless ``block`` is false.

        Raises:
            queue.Full: No room in time.
            QueueClosed: The queue was closed.
        """
        self._put(obj, 1, block, timeout)

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, block=False)``."""
        self._put(obj, 1, False, None)

    def put_many(
        self, objs: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        """Put each of ``objs``, in order, in batches: far faster than ``put`` one at a time.

        With a ``maxsize``, each item is put on its own (room is counted per item).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._space is not None:
            for obj in objs:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._put(obj, 1, block, remaining)
            return
        batch: list[Any] = []
        limit = _FIRST_BATCH
        for obj in objs:
            batch.append(obj)
            if len(batch) >= limit:
                size = self._put_batch(batch, block, timeout)
                # Learn the items' size: the next batch aims at _BATCH_BYTES.
                limit = max(1, min(_BATCH_ITEMS, len(batch) * _BATCH_BYTES // max(1, size)))
                batch = []
        if batch:
            self._put_batch(batch, block, timeout)

    def _put_batch(self, batch: list[Any], block: bool, timeout: float | None) -> int:
        """One message for ``batch``: a list of items, or the item alone."""
        if len(batch) == 1:
            return self._put(batch[0], 1, block, timeout)
        return self._put(batch, len(batch), block, timeout)

    def _put(self, obj: Any, items: int, block: bool, timeout: float | None) -> int:
        """Send one message holding ``items`` items (a list when more than one); return its size."""
        if self._state.fields[_CLOSED_BYTE]:
            raise QueueClosed("put() on a closed corepool.Queue")
        space = self._space
        if space is not None and not space.acquire(block, timeout):
            raise queue.Full
        frame, fds, size = _encode(obj, self._threshold, _BATCH if items > 1 else 0)
        # Counted before it is sent: a consumer may take it the moment it is.
        _count_in(self._items, items)
        try:
            if space is None:
                self._send_unbounded(frame, fds)
            else:
                self._send_bounded(frame, fds, block, timeout)
        except BaseException:
            for _ in range(items):
                libc.sem_trywait(self._items)
            if space is not None:
                space.release()
            raise
        return size

    def _send_unbounded(self, frame: bytes, fds: list[int]) -> None:
        backlog = self._backlog
        if not backlog:  # nothing of ours is waiting: try the socket first
            try:
                _send_message(self._writer, frame, fds)
            except BlockingIOError:
                pass
            else:
                if fds:
                    close_fds(fds)
                return
        if backlog is None:
            backlog = self._backlog = _Backlog(self._writer)
        backlog.add(frame, fds)

    def _send_bounded(
        self, frame: bytes, fds: list[int], block: bool, timeout: float | None
    ) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    _send_message(self._writer, frame, fds)
                    return
                except BlockingIOError:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if not block or (remaining is not None and remaining <= 0):
                        raise queue.Full from None
                    select.select([], [self._writer], [], remaining)
        finally:
            close_fds(fds)

    # -- getting -------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the first item; wait up to ``timeout`` unless ``block`` is false.

        Raises:
            queue.Empty: Nothing came in time.
            QueueClosed: The queue is closed and drained.
        """
        received = self._received
        if received:
            item = received.popleft()
            if not received:
                _holding.discard(self)
            return item
        return self._receive(block, timeout)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    def get_many(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[Any]:
        """Wait for items (as ``get``), then take up to ``max_items`` in all without waiting.

        Raises:
            queue.Empty: Nothing came in time.
            QueueClosed: The queue is closed and drained.
        """
        received = self._received
        if not received:
            received.append(self._receive(block, timeout))
        with contextlib.suppress(queue.Empty, QueueClosed):
            while len(received) < max_items:
                received.append(self._receive(False, None))
        count = min(max_items, len(received))
        items = [received.popleft() for _ in range(count)]
        if not received:
            _holding.discard(self)
        return items

    def _receive(self, block: bool, timeout: float | None) -> Any:
        """Receive one message, waiting as ``get`` says; return its (first) item.

        The rest of a batch goes to ``_received``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        reader = self._reader
        # Waiting with no timeout is a plain blocking receive: the kernel
        # wakes one waiting consumer per message. (The socket itself stays
        # blocking: its O_NONBLOCK flag would be shared by every process.)
        wait_flags = _RECEIVE_BLOCKING if block and timeout is None else _RECEIVE_FLAGS
        # Into a buffer kept for this thread: recvmsg() would allocate (and, past
        # 128 KiB, map and unmap) a buffer of the largest size on every call.
        buffer = getattr(self._buffers, "buffer", None)
        if buffer is None:
            buffer = self._buffers.buffer = bytearray(_RECEIVE_BYTES)
        while True:
            try:
                size, ancillary, flags, _ = reader.recvmsg_into(
                    [buffer], _ANCILLARY_BYTES, wait_flags
                )
            except BlockingIOError:
                remaining = None if deadline is None else deadline - time.monotonic()
                if not block or (remaining is not None and remaining <= 0):
                    raise queue.Empty from None
                select.select([reader], [], [], remaining)
                continue
            break
        fds: list[int] = []
        for level, kind, data in ancillary:  # none, for a message without segments
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) // 4 * 4]))
        if not size:
            raise QueueClosed("the corepool.Queue is closed and drained")
        frame = memoryview(buffer)[:size]
        if flags & _BROKEN:
            close_fds(fds)
            raise ConnectionError("a corepool.Queue message was truncated")
        obj, batch = _decode(frame, fds)
        if self._space is not None:
            self._space.release()
        if not batch:
            libc.sem_trywait(self._items)
            return obj
        for _ in obj:
            libc.sem_trywait(self._items)
        self._received.extend(obj[1:])
        if len(obj) > 1:
            _holding.add(self)
        return obj[0]

    def __iter__(self) -> Iterator[Any]:
        """Each item as it comes, until the queue is closed and drained."""
        while True:
            try:
                yield self.get()
            except QueueClosed:
                return

    # -- state ---------------------------------------------------------------

    def qsize(self) -> int:
        """How many items are in the queue now (a snapshot; not those a consumer holds)."""
        return sem_value(self._state.sem(_ITEMS))

    def empty(self) -> bool:
        """Whether the queue holds no item now (a snapshot)."""
        return self.qsize() == 0 and not self._received

    def full(self) -> bool:
        """Whether ``put`` would wait now (a snapshot)."""
        return self._space is not None and self._space.get_value() == 0

    @property
    def maxsize(self) -> int:
        """The ``maxsize`` the queue was made with."""
        return self._maxsize

    def flush(self) -> None:
        """Wait until every item this process put is in the queue (its backlog sent)."""
        if self._backlog is not None:
            self._backlog.join()

    def close(self) -> None:
        """Stop the queue for every process: ``put`` raises ``QueueClosed``; consumers drain it.

        Returns at once. Items this process put but the queue had no room
        for yet are sent first (by a background thread), then the queue
        closes; consumers get every item, then ``QueueClosed``. Close from
        the last producer: another process's items not yet sent when the
        queue closes are dropped. Idempotent.
        """
        self._state.fields[_CLOSED_BYTE] = 1
        if self._backlog is None or not self._backlog.close_when_sent():
            _shut(self._writer)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (by any process)."""
        return bool(self._state.fields[_CLOSED_BYTE])

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.qsize()} items"
        return f"<corepool.Queue {state}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_queue, (
            PassFd(self._writer.fileno(), _QUEUE_ROUTE),
            PassFd(self._reader.fileno(), _QUEUE_ROUTE),
            self._maxsize,
            self._threshold,
            self._space,
            self._state,
        )


# Queues of this process that hold received items of a batch, handed back at
# exit: kept alive until then (a task's queue argument is dropped before).
_holding: set[Queue] = set()


def _hand_back() -> None:
    """Put back the items this process received in batches but never returned."""
    for held in list(_holding):
        left = list(held._received)
        held._received.clear()
        if left:
            with contextlib.suppress(QueueClosed, OSError):
                held.put_many(left)


exit_hooks.register(_hand_back, exit_hooks.Stage.HAND_BACK)


def _rebuild_queue(
    writer: int,
    reader: int,
    maxsize: int,
    threshold: int | None,
    space: Semaphore | None,
    state: SharedBlock,
) -> Queue:
    rebuilt = Queue.__new__(Queue)
    rebuilt._setup(socket.socket(fileno=writer), socket.socket(fileno=reader), maxsize, threshold)
    rebuilt._space = space
    rebuilt._state = state
    rebuilt._items = state.sem(_ITEMS)
    return rebuilt


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
        frame, fds, _ = _encode(obj, DEFAULT_THRESHOLD, 0)  # a queue message's format
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
        return _decode(memoryview(message.payload), message.fds)[0]

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
    """
    first, second = socket.socketpair()
    return (
        Connection(first, readable=True, writable=duplex),
        Connection(second, readable=duplex, writable=True),
    )
