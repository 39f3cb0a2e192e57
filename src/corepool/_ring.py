"""The shared-memory ring that carries ``corepool.Queue``'s messages: layout, locks, wake-ups.

Runs in every process that holds a queue; imports only ``sync`` (the shared
block and its semaphores). One shared segment holds a few process-shared
semaphores, a few int64 fields and the ring of message bytes. Producers
write at the tail under the *put lock*, consumers read at the head under the
*get lock* (two locks: a producer and a consumer never wait for each other;
with one lock, measured, four puts in five between two busy processes found
it taken). Each lock is held for well under a microsecond per message. A
producer posts the *items* semaphore once per entry it wrote; a consumer
takes one before it reads an entry, so it sleeps in the kernel only while
the ring is empty, and a post makes a system call only when someone sleeps.
Producers that find the ring full (or a bounded queue at ``maxsize``) count
themselves in a field and sleep on ``room``, which consumers post; as that
count is changed under both locks, a producer also wakes by itself every
``_RECHECK_S`` to look again.

Ordering without a common lock: a producer writes an entry, then the tail,
lets go of its lock and then posts *items* (a release), which the consumer
takes (an acquire) before it reads: the entry is whole. A consumer reads
the entry, then moves the head; a producer reuses those bytes only after it
reads that head. x86-64 keeps a load before a later store; elsewhere a
consumer passes a fence (two atomic operations) before it moves the head.

A process killed while it holds a lock would stop every other holder for
good. So each holder writes its pid beside its lock, and a process that has
waited for the lock for ``_RECHECK_S`` checks that the holder lives (a
zombie counts as dead); if it died, the waiter takes the lock over. The
fields stay consistent because each operation makes its change visible
with one last store (the tail for a put, the head for a get): a producer
that died before it wrote nothing, a consumer that died after it took its
message with it, as it would have after ``get`` returned.

Entries are 8-byte aligned: an int64 header (size, kind, items) and the
data, which does not wrap: where it would, a ``WRAP`` entry sends readers
back to the start. The data is the bare pickle of one item (``RAW``) or a
message in the queue's format (``FRAME``, see ``_transport/frames.py``). A
``SOCKET`` entry's data is a sequence number: its message (one with
descriptors, which shared memory cannot carry) was sent on the queue's
socket under that number, under the put lock, just before the entry was
written. The consumer that takes the entry receives its message while it
still holds the get lock, so that two consumers cannot swap messages (each
would get another producer's item, or a later item before an earlier one).
A message whose consumer died before receiving it is still in the socket
with a lower number: the next consumer drops it (its items are lost with
their consumer). A producer that died after sending leaves one too; the
number it took is never used again.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable
from enum import IntEnum

from corepool._transport.semaphores import (
    SEM_VALUE_MAX,
    Semaphore,
    SharedBlock,
    libc,
    semaphore_at,
)

__all__ = ["FRAME", "RAW", "SOCKET", "Put", "Ring", "Taken"]

_CAPACITY = 1 << 20  # bytes of messages
_ITEMS, _ROOM, _REPAIR, _FENCE = range(4)  # the semaphores of the block
# The int64 fields, a cache line per side: each lock (a sem_t of 32 bytes)
# shares its line with the fields its holder changes, so a put or a get moves
# few lines between cores.
_PUT_LOCK, _TAIL, _PUT_ITEMS, _PUT_HOLDER, _STATE = 0, 4, 5, 6, 7
_GET_LOCK, _HEAD, _GOT_ITEMS, _GET_HOLDER, _ROOM_WAITERS = 8, 12, 13, 14, 15
_SENT = 16  # the number of the last message sent on the socket (changed under the put lock)
_FIELDS = 24  # the ring's bytes start here, on a cache line
_CLOSED, _ENDED = 1, 2  # _STATE bits: put refused; consumers stop once drained
# An entry's header is one int64: its size in the low 32 bits, its kind in
# the next 8, its items above.
RAW, FRAME, SOCKET, _WRAP = range(4)  # entry kinds
_SIZE_MASK, _KIND_SHIFT, _KIND_MASK, _ITEMS_SHIFT = 0xFFFFFFFF, 32, 0xFF, 40
_RECHECK_S = 0.1
_SPINS = 200  # tries (about 40 ns each) before sleeping on a busy lock
_YIELDS = 20  # sched_yield() calls (about 0.5 us each) before sleeping on an empty ring
_STRONG_ORDER = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def _is_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: not gone, and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


class Put(IntEnum):
    """What ``Ring.put`` did."""

    WRITTEN = 0
    NO_ROOM = 1  # not enough bytes free, or maxsize items already in
    CLOSED = 2  # close() was called: the put is refused
    ENDED = 3  # the queue ended: even counted items are dropped
    SOCKET_FULL = 4  # a socket entry's message found the socket full


class Taken(IntEnum):
    """What ``Ring.take`` found instead of a message."""

    EMPTY = 0
    ENDED = 1


_WRITTEN = Put.WRITTEN
# A SOCKET entry's data: the number of its message.
_SEQUENCE_BYTES = 8


class Ring:
    """The shared ring of one queue; rebuilt in each process from its ``SharedBlock``.

    Args:
        receive: Receives the message of a ``SOCKET`` entry from the socket,
            given its number (dropping older ones, whose consumers died):
            its frame and descriptors.
        block: The shared block of an existing ring; a new ring if omitted.
    """

    # The largest frame the queue writes here (larger pickles travel as
    # segments): a quarter of the ring, so that one message never waits for
    # the whole ring to empty.
    MAX_FRAME = _CAPACITY // 4 - 8

    __slots__ = (
        "_block",
        "_data",
        "_fence",
        "_fields",
        "_get_lock",
        "_head_seen",
        "_items",
        "_put_lock",
        "_receive",
        "_repair",
        "_room",
    )

    def __init__(
        self,
        receive: Callable[[int], tuple[memoryview, list[int]]],
        block: SharedBlock | None = None,
    ) -> None:
        if block is None:
            block = SharedBlock(4, _FIELDS + _CAPACITY // 8)
            for field in (_PUT_LOCK, _GET_LOCK):
                if libc.sem_init(block.field_address(field), 1, 1) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"sem_init failed: {os.strerror(code)}")
            block.init(_REPAIR, 1)
        self._block = block
        self._fields = block.fields.cast("q")
        self._data = block.fields[_FIELDS * 8 :]
        self._put_lock = semaphore_at(block.field_address(_PUT_LOCK), 1)
        self._get_lock = semaphore_at(block.field_address(_GET_LOCK), 1)
        self._repair = semaphore_at(block.sem(_REPAIR), 1)
        self._fence = semaphore_at(block.sem(_FENCE), SEM_VALUE_MAX)
        self._items = semaphore_at(block.sem(_ITEMS), SEM_VALUE_MAX)
        self._room = semaphore_at(block.sem(_ROOM), SEM_VALUE_MAX)
        self._head_seen = 0  # the head as this process last read it: it only grows
        self._receive = receive

    @property
    def block(self) -> SharedBlock:
        """The shared block: what travels to other processes."""
        return self._block

    # -- the locks ---------------------------------------------------------------
    # Taken inline in put and take (a call costs as much as the lock):
    #     if not lock.acquire(False): self._wait_for(lock, holder_field)
    #     fields[holder_field] = _pid

    def _wait_for(self, lock: Semaphore, holder_field: int) -> None:
        """Wait for ``lock``; take it over if its holder died.

        The lock is held for well under a microsecond: trying again for a
        few microseconds nearly always gets it, where sleeping in the kernel
        and being woken would cost both processes a system call and a
        context switch (measured: a put of 10 us instead of 2).
        """
        for _ in range(_SPINS):
            if lock.acquire(False):
                return
        while not lock.acquire(True, _RECHECK_S):
            if self._took_over_from_dead_holder(holder_field):
                return

    def _took_over_from_dead_holder(self, holder_field: int) -> bool:
        """If the lock's holder died, hold the lock instead (one process does)."""
        fields = self._fields
        holder = fields[holder_field]
        if not holder or holder == _pid or _is_alive(holder):
            return False
        if not self._repair.acquire(False):
            return False
        try:
            if fields[holder_field] != holder:  # another waiter took over first
                return False
            fields[holder_field] = _pid
            return True
        finally:
            self._repair.release()

    def _take_put_lock(self) -> None:
        if not self._put_lock.acquire(False):
            self._wait_for(self._put_lock, _PUT_HOLDER)
        self._fields[_PUT_HOLDER] = _pid

    def _drop_put_lock(self) -> None:
        self._fields[_PUT_HOLDER] = 0
        self._put_lock.release()

    # -- putting ----------------------------------------------------------------

    def put(
        self,
        data: bytes,
        kind: int,
        items: int = 1,
        send: Callable[[int], None] | None = None,
        *,
        limit: int = 0,
        counted: bool = False,
        wait_for_room: bool = False,
    ) -> Put:
        """Write an entry of ``items`` items: ``data`` of ``kind``, or with ``send``, a socket one.

        Args:
            send: Sends the entry's message on the socket under the number it
                is given, under the lock; raises ``BlockingIOError`` if the
                socket is full. ``data`` is then ignored.
            limit: maxsize: refuse while this many items are in the queue (0: no limit).
            counted: The items were counted when put (a backlog's); write even if closed.
            wait_for_room: On ``NO_ROOM``, count the caller as waiting for room
                (it then calls ``wait_for_room``).
        """
        fields, lock = self._fields, self._put_lock
        size = len(data) if send is None else _SEQUENCE_BYTES
        total = 8 + ((size + 7) & ~7)
        if not lock.acquire(False):
            self._wait_for(lock, _PUT_HOLDER)
        fields[_PUT_HOLDER] = _pid
        try:
            state = fields[_STATE]
            if state and (state & _ENDED or not counted):
                return Put.ENDED if state & _ENDED else Put.CLOSED
            tail = fields[_TAIL]
            position = tail % _CAPACITY
            gap = _CAPACITY - position
            end = tail + (total + gap if total > gap else total)
            if (end - self._head_seen > _CAPACITY or limit) and not self._has_room(
                end, items, limit, wait_for_room
            ):
                return Put.NO_ROOM
            if send is not None:
                sequence = fields[_SENT] + 1
                fields[_SENT] = sequence  # first: a producer that dies sending wastes it
                try:
                    send(sequence)
                except BlockingIOError:
                    return Put.SOCKET_FULL
            if total > gap:
                fields[_FIELDS + (position >> 3)] = _WRAP << _KIND_SHIFT
                position = 0
            fields[_FIELDS + (position >> 3)] = size | kind << _KIND_SHIFT | items << _ITEMS_SHIFT
            if send is None:
                self._data[position + 8 : position + 8 + size] = data
            else:
                fields[_FIELDS + (position >> 3) + 1] = sequence
            if not counted:
                fields[_PUT_ITEMS] += items
            fields[_TAIL] = end
        finally:
            fields[_PUT_HOLDER] = 0
            lock.release()
        self._items.release()
        return _WRITTEN

    def _has_room(self, end: int, items: int, limit: int, wait_for_room: bool) -> bool:
        """Whether the entry ending at ``end`` fits (read under the put lock).

        With ``wait_for_room``, the caller is counted as waiting before it is
        told no, and the room is looked at once more after a fence: a consumer
        moves the head before it reads that count (after a fence too), so one
        of the two sees the other.
        """
        fields = self._fields
        for look in range(2 if wait_for_room else 1):
            self._head_seen = fields[_HEAD]
            if end - self._head_seen <= _CAPACITY and (
                not limit or fields[_PUT_ITEMS] - fields[_GOT_ITEMS] + items <= limit
            ):
                return True
            if wait_for_room and not look:
                fields[_ROOM_WAITERS] += 1
                self._fence.release()  # an atomic add: a full fence on x86
                self._fence.acquire(False)
        return False

    def wait_for_room(self, timeout: float | None) -> None:
        """Sleep until a consumer takes something, or ``timeout`` (at most ``_RECHECK_S``)."""
        self._room.acquire(True, _RECHECK_S if timeout is None else min(timeout, _RECHECK_S))

    def count(self, items: int) -> bool:
        """Count ``items`` put but not written yet (a backlog's); ``False`` if closed."""
        self._take_put_lock()
        try:
            if self._fields[_STATE]:
                return False
            self._fields[_PUT_ITEMS] += items
            return True
        finally:
            self._drop_put_lock()

    def uncount(self, items: int) -> None:
        """Take back a ``count`` whose items were dropped."""
        self._take_put_lock()
        try:
            self._fields[_PUT_ITEMS] -= items
        finally:
            self._drop_put_lock()

    # -- taking -----------------------------------------------------------------

    def take(
        self, block: bool, timeout: float | None
    ) -> bytes | tuple[bytes | memoryview, list[int]] | Taken:
        """Wait for the first entry as ``Queue.get`` says and take it.

        Returns:
            Its data if it is ``RAW``; its message's frame and descriptors
            (none for ``FRAME``, the socket's message for ``SOCKET``); or
            ``Taken.EMPTY`` (nothing in time), ``Taken.ENDED``.
        """
        items = self._items
        if not items.acquire(False) and not (block and self._wait_for_items(timeout)):
            return Taken.EMPTY
        fields, lock = self._fields, self._get_lock
        if not lock.acquire(False):
            self._wait_for(lock, _GET_HOLDER)
        fields[_GET_HOLDER] = _pid
        try:
            head = fields[_HEAD]
            if head == fields[_TAIL]:  # the end's post, passed on by each consumer
                ended = fields[_STATE] & _ENDED
                return Taken.ENDED if ended else Taken.EMPTY
            position = head % _CAPACITY
            header = fields[_FIELDS + (position >> 3)]
            if header >> _KIND_SHIFT & _KIND_MASK == _WRAP:
                head += _CAPACITY - position
                position = 0
                header = fields[_FIELDS]
            size = header & _SIZE_MASK
            kind = header >> _KIND_SHIFT & _KIND_MASK
            if kind == SOCKET:
                sequence = fields[_FIELDS + (position >> 3) + 1]
            else:
                data = self._data[position + 8 : position + 8 + size].tobytes()
            if not _STRONG_ORDER:  # the copy is done before the head lets producers reuse it
                self._fence.release()
                self._fence.acquire(False)
            fields[_HEAD] = head + 8 + ((size + 7) & ~7)
            fields[_GOT_ITEMS] += header >> _ITEMS_SHIFT
            if kind == SOCKET:  # still under the lock: see the module's docstring
                message = self._receive(sequence)
        finally:
            fields[_GET_HOLDER] = 0
            lock.release()  # an atomic add: the head is out before the count is read
            if fields[_STATE] & _ENDED:  # no puts to come: wake the next consumer too
                self._items.release()
        room_waiters = fields[_ROOM_WAITERS]
        if room_waiters:
            fields[_ROOM_WAITERS] = 0
            for _ in range(room_waiters):
                self._room.release()
        if kind == RAW:
            return data
        return message if kind == SOCKET else (data, [])

    def _wait_for_items(self, timeout: float | None) -> bool:
        """Wait for an items post: first yielding the CPU a few times, then asleep.

        A producer in full flow puts a message every few microseconds: a
        consumer that yields meanwhile (to it, if they share a CPU) usually
        finds one without sleeping, which spares the producer the system call
        that wakes a sleeper, and both the context switches.
        """
        items = self._items
        for _ in range(_YIELDS):
            os.sched_yield()
            if items.acquire(False):
                return True
        return items.acquire(True, timeout)

    # -- state ------------------------------------------------------------------

    def close(self, *, end: bool) -> None:
        """Refuse puts from now on; with ``end``, also let consumers stop once drained."""
        self._take_put_lock()
        try:
            self._fields[_STATE] |= _CLOSED | (_ENDED if end else 0)
        finally:
            self._drop_put_lock()
        if end:
            self._items.release()  # each consumer passes it on (see take)
            self._room.release()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called (by any process)."""
        return bool(self._fields[_STATE] & _CLOSED)

    @property
    def items(self) -> int:
        """Items put and not yet taken (a snapshot)."""
        return max(0, self._fields[_PUT_ITEMS] - self._fields[_GOT_ITEMS])
