"""``Queue`` for processes, passable to pool tasks and ``corepool.Process``.

A ``Queue`` is a ring of messages in shared memory (``_ring.py``) that every
process holding the queue maps: ``put`` writes one message under the put
lock, ``get`` takes one under the get lock, each held for under a
microsecond; nobody makes a system call unless a consumer sleeps on an empty
queue (or a producer on a full one) and must be woken. Messages that hold
file descriptors (large buffers, which travel as shared-memory segments as
with pool tasks, and corepool objects passed by handle) go over a
``SOCK_SEQPACKET`` socket pair that every holder shares, with an entry in
the ring that keeps their place. ``close()`` stops the queue for everyone:
consumers drain what is left, then ``get`` raises ``QueueClosed`` and
iteration ends.

``Pipe`` and ``Connection`` live in ``pipes.py`` and are importable from
here too.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from corepool._ring import FRAME, RAW, SOCKET, Put, Ring, Taken
from corepool._transport import exit_hooks
from corepool._transport.buffers import DEFAULT_THRESHOLD, PassFd
from corepool._transport.channel import close_fds
from corepool._transport.frames import (
    BATCH,
    INLINE_BYTES,
    RECEIVE_BYTES,
    decode,
    encode,
    encode_packed,
    is_plain,
    plain_frame,
    receive_frame,
    send_frame,
)
from corepool._transport.pickling import PROTOCOL
from corepool._transport.semaphores import SharedBlock
from corepool.errors import QueueClosed
from corepool.pipes import Connection, Pipe

__all__ = ["Connection", "Pipe", "Queue"]

# put_many aims each message at about this many bytes of pickle, and at most
# this many items: a batch of large items must not become one huge pickle.
_BATCH_BYTES = 32 * 1024
_BATCH_ITEMS = 1000
_FIRST_BATCH = 8
_QUEUE_ROUTE = (
    "a corepool.Queue travels only through corepool (pool tasks, corepool.Process, "
    "another corepool.Queue) and multiprocessing (a Manager, its Queue, Pipe and "
    "Process): it was pickled some other way."
)
_CLOSED_PUT = "put() on a closed corepool.Queue"
_dumps, _loads = pickle.dumps, pickle.loads
# A message without descriptors always fits in the ring: a larger pickle
# travels as a segment, whose descriptor takes it to the socket.
assert INLINE_BYTES + 4096 < Ring.MAX_FRAME


def _entry(
    writer: socket.socket, frame: bytes, fds: list[int], items: int
) -> tuple[bytes, int, int, Callable[[int], None] | None]:
    """``Ring.put``'s first arguments for a message: the ring, or the socket (descriptors)."""
    if not fds:
        return frame, FRAME, items, None
    return b"", SOCKET, items, lambda sequence: send_frame(writer, sequence, frame, fds)


class _SocketReceiver:
    """Receives a ``SOCKET`` entry's message from the queue's socket (``Ring``'s ``receive``)."""

    __slots__ = ("_buffers", "_reader")

    def __init__(self, reader: socket.socket) -> None:
        self._reader = reader
        self._buffers = threading.local()  # each thread's receive buffer

    def __call__(self, sequence: int) -> tuple[memoryview, list[int]]:
        """The frame and descriptors of message ``sequence``, dropping older ones before it."""
        # Into a buffer kept for this thread: recvmsg() would allocate (and, past
        # 128 KiB, map and unmap) a buffer of the largest size on every call.
        buffer = getattr(self._buffers, "buffer", None)
        if buffer is None:
            buffer = self._buffers.buffer = bytearray(RECEIVE_BYTES)
        while True:
            number, frame, fds = receive_frame(self._reader, buffer)
            if number == sequence:
                return frame, fds
            close_fds(fds)  # a message whose consumer (or producer) died: lost with it
            if number > sequence:
                raise ConnectionError(
                    f"corepool.Queue message {sequence} is missing from the queue's socket "
                    f"(found message {number} instead): something outside corepool read "
                    "from the socket. The queue cannot be used any more; make a new one."
                )


class _Backlog:
    """Messages of an unbounded queue that had no room yet, in this process.

    A thread writes them, in order, as consumers make room; ``put`` never
    waits. The process waits for its backlog to be sent when it exits
    normally (as with ``multiprocessing.Queue``); a process killed first
    loses it.
    """

    def __init__(self, ring: Ring, writer: socket.socket) -> None:
        self._ring = ring
        self._writer = writer
        self._messages: collections.deque[tuple[bytes, list[int], int]] = collections.deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._close_after = False

    def __bool__(self) -> bool:
        return bool(self._messages)

    def add(self, frame: bytes, fds: list[int], items: int) -> None:
        """Queue a message behind those already waiting (its items are counted already)."""
        with self._lock:
            self._messages.append((frame, fds, items))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._drain, name="corepool-queue-backlog", daemon=True
                )
                _draining.add(self)  # outlives the queue object until it is sent
                self._thread.start()

    def close_when_sent(self) -> bool:
        """Have the thread end the queue once the backlog is sent; ``False`` if none is left."""
        with self._lock:
            if self._thread is None:
                return False
            self._close_after = True
            return True

    def _drain(self) -> None:
        ring = self._ring
        while True:
            with self._lock:
                if not self._messages:
                    self._finish()
                    if self._close_after:
                        ring.close(end=True)
                    return
                frame, fds, items = self._messages[0]
            entry = _entry(self._writer, frame, fds, items)
            try:
                status = ring.put(*entry, counted=True, wait_for_room=True)
            except (QueueClosed, OSError):
                status = Put.ENDED
            if status is Put.NO_ROOM:
                ring.wait_for_room(None)
            elif status is Put.SOCKET_FULL:
                select.select([], [self._writer], [], None)
            elif status is Put.ENDED:  # closed by another process: the rest is dropped
                with self._lock:
                    for _, left, dropped in self._messages:
                        close_fds(left)
                        ring.uncount(dropped)
                    self._messages.clear()
                    self._finish()
                return
            else:
                with self._lock:
                    self._messages.popleft()
                close_fds(fds)

    def _finish(self) -> None:
        """The thread's last step, under the lock."""
        self._thread = None
        _draining.discard(self)

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


class Queue:
    """A first-in first-out queue for processes: many producers, many consumers.

    Pass it to pool tasks and to ``corepool.Process`` like any argument.
    Every item put is got exactly once; a consumer killed while it waits in
    ``get`` loses nothing (items it had already received when it died are
    lost with it, as any task's work in progress is).

    ``put`` on an unbounded queue never waits: items the queue has no room
    for yet (its ring holds 1 MiB of pickles) wait in the putting process,
    written by a thread as consumers make room, and that process ends only
    once they are written (as with ``multiprocessing.Queue``: consume before
    you join a producer).

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
        self._setup(writer, reader, maxsize, buffer_threshold, None)

    def _setup(
        self,
        writer: socket.socket,
        reader: socket.socket,
        maxsize: int,
        threshold: int | None,
        block: SharedBlock | None,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._maxsize = maxsize
        self._threshold = threshold
        self._ring = Ring(_SocketReceiver(reader), block)
        self._backlog: _Backlog | None = None  # this process's, made on first need
        self._received: collections.deque[Any] = collections.deque()  # of a batch

    # -- putting -------------------------------------------------------------

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` at the end; wait for room up to ``timeout`` unless ``block`` is false.

        Raises:
            queue.Full: No room in time.
            QueueClosed: The queue was closed.
        """
        if not self._maxsize and not self._backlog and is_plain(obj):
            # Pickled plainly (nothing in it can go out of band) and written
            # as a bare pickle: no message header to make or parse.
            data = _dumps(obj, PROTOCOL)
            if len(data) > INLINE_BYTES:  # too large for the ring: the packer's segment
                frame, fds, _ = encode_packed(obj, self._threshold, 0)
            elif self._ring.put(data, RAW):  # not WRITTEN (0): the long way says what to do
                frame, fds = plain_frame(data, 0), []
            else:  # the common case: straight into the ring
                return
        else:
            frame, fds, _ = encode(obj, self._threshold, 0)
        self._put(frame, fds, 1, block, timeout)

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, block=False)``."""
        self.put(obj, False)

    def put_many(
        self, objs: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        """Put each of ``objs``, in order, in batches: far faster than ``put`` one at a time.

        With a ``maxsize``, each item is put on its own (room is counted per item).
        """
        if self._maxsize:
            deadline = None if timeout is None else time.monotonic() + timeout
            for obj in objs:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                self.put(obj, block, remaining)
            return
        batch: list[Any] = []
        limit = _FIRST_BATCH
        for obj in objs:
            batch.append(obj)
            if len(batch) >= limit:
                size = self._put_batch(batch)
                # Learn the items' size: the next batch aims at _BATCH_BYTES.
                limit = max(1, min(_BATCH_ITEMS, len(batch) * _BATCH_BYTES // max(1, size)))
                batch = []
        if batch:
            self._put_batch(batch)

    def _put_batch(self, batch: list[Any]) -> int:
        """One message for ``batch`` (a list of items, or the item alone); its pickle's size."""
        if len(batch) == 1:
            frame, fds, size = encode(batch[0], self._threshold, 0)
        else:
            frame, fds, size = encode(batch, self._threshold, BATCH)
        self._put(frame, fds, len(batch), True, None)
        return size

    def _put(
        self, frame: bytes, fds: list[int], items: int, block: bool, timeout: float | None
    ) -> None:
        """Put one encoded message of ``items`` items: the ring, the socket, or the backlog."""
        assert items <= _BATCH_ITEMS  # the ring counts them in 16 bits
        try:
            if self._maxsize:
                self._put_bounded(frame, fds, items, block, timeout)
                return
            backlog = self._backlog
            if not backlog:  # nothing of ours is waiting: try the ring first
                status = self._ring.put(*_entry(self._writer, frame, fds, items))
                if status is Put.WRITTEN:
                    return
                if status is Put.CLOSED or status is Put.ENDED:
                    raise QueueClosed(_CLOSED_PUT)
            if not self._ring.count(items):
                raise QueueClosed(_CLOSED_PUT)
            if backlog is None:
                backlog = self._backlog = _Backlog(self._ring, self._writer)
            backlog.add(frame, fds, items)
            fds = []  # the backlog's now
        finally:
            close_fds(fds)

    def _put_bounded(
        self, frame: bytes, fds: list[int], items: int, block: bool, timeout: float | None
    ) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        entry = _entry(self._writer, frame, fds, items)
        while True:
            status = self._ring.put(*entry, limit=self._maxsize, wait_for_room=block)
            if status is Put.WRITTEN:
                return
            if status is Put.CLOSED or status is Put.ENDED:
                raise QueueClosed(_CLOSED_PUT)
            remaining = None if deadline is None else deadline - time.monotonic()
            if not block or (remaining is not None and remaining <= 0):
                raise queue.Full
            if status is Put.SOCKET_FULL:
                select.select([], [self._writer], [], remaining)
            else:
                self._ring.wait_for_room(remaining)

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
        taken = self._ring.take(block, timeout)
        if type(taken) is bytes:  # the common case: a bare pickle
            return _loads(taken)
        obj, batch = self._take(block, timeout, taken)
        if not batch:
            return obj
        received.extend(obj[1:])
        if received:
            _holding.add(self)
        return obj[0]

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

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
            self._add_received(*self._take(block, timeout, self._ring.take(block, timeout)))
        with contextlib.suppress(queue.Empty, QueueClosed):
            while len(received) < max_items:
                self._add_received(*self._take(False, None, self._ring.take(False, None)))
        count = min(max_items, len(received))
        items = [received.popleft() for _ in range(count)]
        if not received:
            _holding.discard(self)
        return items

    def _add_received(self, obj: Any, batch: bool) -> None:
        if batch:
            self._received.extend(obj)
        else:
            self._received.append(obj)

    def _take(
        self,
        block: bool,
        timeout: float | None,
        taken: bytes | tuple[bytes | memoryview, list[int]] | Taken,
    ) -> tuple[Any, bool]:
        """Finish taking one message: its object, and whether it is a batch.

        ``taken`` is what ``Ring.take(block, timeout)`` returned.
        """
        while True:
            if type(taken) is bytes:
                return _loads(taken), False
            if isinstance(taken, tuple):
                return decode(*taken)
            if taken is Taken.ENDED:
                raise QueueClosed("the corepool.Queue is closed and drained")
            if not block or timeout is not None:
                raise queue.Empty
            taken = self._ring.take(True, None)

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
        return self._ring.items

    def empty(self) -> bool:
        """Whether the queue holds no item now (a snapshot)."""
        return self.qsize() == 0 and not self._received

    def full(self) -> bool:
        """Whether ``put`` would wait now (a snapshot)."""
        return bool(self._maxsize) and self.qsize() >= self._maxsize

    @property
    def maxsize(self) -> int:
        """The ``maxsize`` the queue was made with."""
        return self._maxsize

    def flush(self) -> None:
        """Wait until every item this process put is in the queue (its backlog written)."""
        if self._backlog is not None:
            self._backlog.join()

    def close(self) -> None:
        """Stop the queue for every process: ``put`` raises ``QueueClosed``; consumers drain it.

        Returns at once. Items this process put but the queue had no room
        for yet are written first (by a background thread), then the queue
        closes; consumers get every item, then ``QueueClosed``. Close from
        the last producer: another process's items not yet written when the
        queue closes are dropped. Idempotent.
        """
        pending = self._backlog is not None and self._backlog.close_when_sent()
        self._ring.close(end=not pending)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (by any process)."""
        return self._ring.closed

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.qsize()} items"
        return f"<corepool.Queue {state}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_queue, (
            PassFd(self._writer.fileno(), _QUEUE_ROUTE),
            PassFd(self._reader.fileno(), _QUEUE_ROUTE),
            self._maxsize,
            self._threshold,
            self._ring.block,
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
    writer: int, reader: int, maxsize: int, threshold: int | None, block: SharedBlock
) -> Queue:
    rebuilt = Queue.__new__(Queue)
    rebuilt._setup(
        socket.socket(fileno=writer), socket.socket(fileno=reader), maxsize, threshold, block
    )
    return rebuilt
