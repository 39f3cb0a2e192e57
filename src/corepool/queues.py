"""``Queue`` and ``Pipe`` for processes, passable to pool tasks and ``corepool.Process``.

A ``Queue`` is a Unix ``SOCK_SEQPACKET`` socket pair that every process
holding the queue shares: ``put`` sends one message, ``get`` receives one.
The kernel hands each message, whole, to exactly one reader, so many
producers and many consumers need no lock and no feeder thread. Large
buffers (numpy arrays, ``bytearray``) and large pickles travel as
shared-memory segments, as with pool tasks. ``close()`` shuts the socket's
sending side for everyone: consumers drain what is left, then ``get``
raises ``QueueClosed`` and iteration ends.

``Pipe`` gives two ``Connection`` ends of a stream socket pair: ``send``
and ``recv`` objects (large buffers through shared memory), like
``multiprocessing.Pipe``.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import queue
import select
import socket
import struct
import threading
import time
import weakref
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
from corepool._transport.channel import Channel
from corepool._transport.pickling import dumps, loads
from corepool.errors import QueueClosed
from corepool.sync import Semaphore, _Block, _sem_acquire, _sem_release, _sem_value

__all__ = ["Connection", "Pipe", "Queue"]

# A message's pickle larger than this travels as a segment: a SEQPACKET
# message must fit in the socket's send buffer whole.
_INLINE_BYTES = 64 * 1024
_RECEIVE_BYTES = _INLINE_BYTES + 4096
_ANCILLARY_BYTES = socket.CMSG_SPACE((MAX_SEGMENTS + 1) * 4)
_KINDS = struct.Struct("!BH")  # inline flag, number of segment kinds
_ITEMS, _CLOSED = 0, 0  # the state block's semaphore and field
_QUEUE_ROUTE = (
    "a corepool.Queue travels only through corepool (pool tasks, corepool.Process, "
    "another corepool.Queue): it was pickled some other way."
)


def _encode(obj: Any, threshold: int | None) -> tuple[bytes, list[int]]:
    """One queue message: a header, the segment kinds, and the pickle or (if large) a segment."""
    packed, fds = pack(obj, threshold)
    if len(packed.data) <= _INLINE_BYTES:
        return _KINDS.pack(1, len(packed.kinds)) + packed.kinds + packed.data, fds
    try:
        fds.append(copy_to_segment(memoryview(packed.data)))
    except BaseException:
        _close_all(fds)
        raise
    return _KINDS.pack(0, len(packed.kinds)) + packed.kinds, fds


def _decode(frame: bytes, fds: list[int]) -> Any:
    inline, count = _KINDS.unpack_from(frame)
    kinds = frame[_KINDS.size : _KINDS.size + count]
    if inline:
        body = frame[_KINDS.size + count :]
        return open_segments(Packed(body, kinds), fds, writable_copies=True).load()
    try:
        body = bytes(map_segment(fds[-1], writable=False))
    finally:
        os.close(fds[-1])
    return open_segments(Packed(body, kinds), fds[:-1], writable_copies=True).load()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _shut(writer: socket.socket) -> None:
    """Close the queue's sending side, for every process that holds it."""
    with contextlib.suppress(OSError):
        writer.shutdown(socket.SHUT_WR)


def _send_message(sock: socket.socket, frame: bytes, fds: list[int]) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
    try:
        sock.sendmsg([frame], ancillary if fds else [], socket.MSG_DONTWAIT)
    except BrokenPipeError:
        raise QueueClosed("put() on a closed corepool.Queue") from None


class _Backlog:
    """Messages of an unbounded queue that its socket had no room for yet, in this process.

    A thread sends them, in order, as consumers make room; ``put`` never
    waits. The process waits for its backlog to be sent when it exits
    normally (as with ``multiprocessing.Queue``); a process killed first
    loses it.
    """

    def __init__(self, writer: socket.socket, state: _Block) -> None:
        # Not the queue itself: the registry is keyed weakly by the queue.
        self._writer = writer
        self._state = state
        self._messages: collections.deque[tuple[bytes, list[int]]] = collections.deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._close_after = False

    def close_when_sent(self) -> bool:
        """Have the thread close the queue once the backlog is sent; ``False`` if none is left."""
        with self._lock:
            if not self._messages:
                return False
            self._close_after = True
            return True

    def add_if_waiting(self, frame: bytes, fds: list[int]) -> bool:
        """Queue behind earlier messages still waiting (order per producer); ``False`` if none."""
        with self._lock:
            if not self._messages:
                return False
            self._messages.append((frame, fds))
            return True

    def add(self, frame: bytes, fds: list[int]) -> None:
        with self._lock:
            self._messages.append((frame, fds))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._drain, name="corepool-queue-backlog", daemon=True
                )
                _draining.add(self)  # outlives the queue object until it is sent
                self._thread.start()

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
                        _close_all(left)
                    self._messages.clear()
                    self._thread = None
                    _draining.discard(self)
                return
            with self._lock:
                self._messages.popleft()
            _close_all(fds)
            _sem_release(self._state.sem(_ITEMS))

    def join(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()


_backlogs: weakref.WeakKeyDictionary[Queue, _Backlog] = weakref.WeakKeyDictionary()
_backlogs_lock = threading.Lock()
_draining: set[_Backlog] = set()  # backlogs with a thread at work


def _backlog_of(queue: Queue) -> _Backlog:
    with _backlogs_lock:
        backlog = _backlogs.get(queue)
        if backlog is None:
            backlog = _backlogs[queue] = _Backlog(queue._writer, queue._state)
        return backlog


def flush_backlogs() -> None:
    """Wait until every queue's backlog in this process is sent (at exit)."""
    for backlog in list(_draining):
        backlog.join()


atexit.register(flush_backlogs)
exit_hooks.register(flush_backlogs)


class Queue:
    """A first-in first-out queue for processes: many producers, many consumers.

    Pass it to pool tasks and to ``corepool.Process`` like any argument.
    Every item put is got exactly once; a consumer killed while it waits in
    ``get`` loses nothing (an item it had already received when it died is
    lost with it, as any task's work in progress is).

    ``put`` on an unbounded queue never waits: items the queue has no room
    for yet wait in the putting process, sent by a thread as consumers make
    room, and that process ends only once they are sent (as with
    ``multiprocessing.Queue``: consume before you join a producer).

    Args:
        maxsize: ``put`` waits while this many items are in the queue;
            ``0`` (the default) bounds it only by the socket's buffer.
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
        self._writer, self._reader = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._maxsize = maxsize
        self._threshold = buffer_threshold
        self._space = Semaphore(maxsize) if maxsize else None
        self._state = _Block(1, 1)  # items in the socket; the closed flag

    # -- putting -------------------------------------------------------------

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` at the end; wait for room up to ``timeout`` unless ``block`` is false.

        Raises:
            queue.Full: No room in time.
            QueueClosed: The queue was closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._closed():
            raise QueueClosed("put() on a closed corepool.Queue")
        if self._space is not None and not self._space.acquire(block, timeout):
            raise queue.Full
        try:
            sent = self._send(obj, block, deadline)
        except BaseException:
            if self._space is not None:
                self._space.release()
            raise
        if sent:
            _sem_release(self._state.sem(_ITEMS))

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, block=False)``."""
        self.put(obj, block=False)

    def put_many(
        self, objs: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        """Put each of ``objs``, in order (each is its own message: any consumer may get it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for obj in objs:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.put(obj, block, remaining)

    def _send(self, obj: Any, block: bool, deadline: float | None) -> bool:
        """Send one message; ``False`` if it went to this process's backlog instead."""
        frame, fds = _encode(obj, self._threshold)
        backlog = _backlog_of(self) if self._space is None else None
        if backlog is not None and backlog.add_if_waiting(frame, fds):
            return False
        try:
            while True:
                try:
                    _send_message(self._writer, frame, fds)
                    return True
                except BlockingIOError:
                    if backlog is not None:  # unbounded: never wait for consumers
                        backlog.add(frame, fds)
                        fds = []
                        return False
                    if not block:
                        raise queue.Full from None
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise queue.Full from None
                    select.select([], [self._writer], [], remaining)
        finally:
            _close_all(fds)

    # -- getting -------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the first item; wait up to ``timeout`` unless ``block`` is false.

        Raises:
            queue.Empty: Nothing came in time.
            QueueClosed: The queue is closed and drained.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                frame, fds = self._receive()
            except BlockingIOError:
                remaining = None if deadline is None else deadline - time.monotonic()
                if not block or (remaining is not None and remaining <= 0):
                    raise queue.Empty from None
                select.select([self._reader], [], [], remaining)
                continue
            _sem_acquire(self._state.sem(_ITEMS), False, None)
            if self._space is not None:
                self._space.release()
            return _decode(frame, fds)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    def get_many(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[Any]:
        """Wait for one item (as ``get``), then take up to ``max_items`` in all without waiting.

        Raises:
            queue.Empty: Nothing came in time.
            QueueClosed: The queue is closed and drained.
        """
        items = [self.get(block, timeout)]
        while len(items) < max_items:
            try:
                items.append(self.get(block=False))
            except (queue.Empty, QueueClosed):
                break
        return items

    def _receive(self) -> tuple[bytes, list[int]]:
        frame, ancillary, flags, _ = self._reader.recvmsg(
            _RECEIVE_BYTES, _ANCILLARY_BYTES, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
        )
        fds: list[int] = []
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) // 4 * 4]))
        if not frame and not fds:
            raise QueueClosed("the corepool.Queue is closed and drained")
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ConnectionError("a corepool.Queue message was truncated")
        return frame, fds

    def __iter__(self) -> Iterator[Any]:
        """Each item as it comes, until the queue is closed and drained."""
        while True:
            try:
                yield self.get()
            except QueueClosed:
                return

    # -- state ---------------------------------------------------------------

    def qsize(self) -> int:
        """How many items are in the queue now (a snapshot)."""
        return _sem_value(self._state.sem(_ITEMS))

    def empty(self) -> bool:
        """Whether the queue holds no item now (a snapshot)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether ``put`` would wait now (a snapshot)."""
        return self._space is not None and self._space.get_value() == 0

    @property
    def maxsize(self) -> int:
        return self._maxsize

    def _closed(self) -> bool:
        return bool(self._state.fields.cast("q")[_CLOSED])

    def close(self) -> None:
        """Stop the queue for every process: ``put`` raises ``QueueClosed``; consumers drain it.

        Returns at once. Items this process put but the queue had no room
        for yet are sent first (by a background thread), then the queue
        closes; consumers get every item, then ``QueueClosed``. Close from
        the last producer: another process's items not yet sent when the
        queue closes are dropped. Idempotent.
        """
        self._state.fields.cast("q")[_CLOSED] = 1
        backlog = _backlogs.get(self)
        if backlog is None or not backlog.close_when_sent():
            _shut(self._writer)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (by any process)."""
        return self._closed()

    def __repr__(self) -> str:
        state = "closed" if self._closed() else f"{self.qsize()} items"
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


def _rebuild_queue(
    writer: int,
    reader: int,
    maxsize: int,
    threshold: int | None,
    space: Semaphore | None,
    state: _Block,
) -> Queue:
    rebuilt = Queue.__new__(Queue)
    rebuilt._writer = socket.socket(fileno=writer)
    rebuilt._reader = socket.socket(fileno=reader)
    rebuilt._maxsize = maxsize
    rebuilt._threshold = threshold
    rebuilt._space = space
    rebuilt._state = state
    return rebuilt


_PIPE_ROUTE = (
    "a corepool Connection travels only through corepool (pool tasks, corepool.Process, "
    "a corepool.Queue): it was pickled some other way."
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
        packed, fds = pack(obj, DEFAULT_THRESHOLD)
        self._channel.send(dumps(packed), fds)

    def recv(self) -> Any:
        """Wait for the next object and return it.

        Raises:
            EOFError: The other end was closed and nothing is left to read.
        """
        if not self._readable:
            raise OSError("this connection is write-only")
        message = self._channel.recv()
        assert message is not None
        packed: Packed = loads(message.payload)
        return open_segments(packed, message.fds, writable_copies=True).load()

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
