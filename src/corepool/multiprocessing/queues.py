"""``Queue``, ``JoinableQueue``, ``SimpleQueue``: the stdlib's methods, on ``corepool.Queue``.

Runs in every process that holds a queue. The items travel through a
``corepool.Queue`` (one socket shared by every holder; passable to pool
tasks); what the stdlib keeps per process, that this process closed its end,
stays per process here: ``close()`` does not close the queue for the others.
"""

from __future__ import annotations

import threading
from typing import Any

import corepool.queues
from corepool.sync import Condition, Lock, Semaphore

__all__ = ["JoinableQueue", "Queue", "SimpleQueue"]


class Queue:
    """``multiprocessing.Queue``: ``put``, ``get``, ``qsize``, ``empty``, ``full``, ``close``, ...

    Args:
        maxsize: ``put`` waits while this many items are in the queue; ``0`` or
            less: never.

    Example:
        >>> q = Queue()
        >>> q.put("hello")
        >>> q.get(timeout=1)
        'hello'
    """

    def __init__(self, maxsize: int = 0) -> None:
        self._attach(corepool.queues.Queue(max(0, maxsize)))

    def _attach(self, items: corepool.queues.Queue) -> None:
        self._items = items
        self._closed = False  # by this process
        self._put_here = False
        self._join_cancelled = False

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_queue, (type(self), self._items, self._extra_state())

    def _extra_state(self) -> tuple[Any, ...]:
        return ()

    def _restore(self, state: tuple[Any, ...]) -> None:
        """Take what ``_extra_state`` gave (subclasses)."""

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` at the end; wait for room up to ``timeout`` unless ``block`` is false.

        Raises:
            queue.Full: No room in time.
            ValueError: This process closed the queue.
        """
        self._check_open()
        self._items.put(obj, block, timeout)
        self._put_here = True

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, False)``."""
        self.put(obj, False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the first item; wait up to ``timeout`` unless ``block`` is false.

        Raises:
            queue.Empty: Nothing came in time.
            ValueError: This process closed the queue.
        """
        self._check_open()
        return self._items.get(block, timeout)

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self.get(False)

    def qsize(self) -> int:
        """How many items are in the queue (a snapshot)."""
        return self._items.qsize()

    def empty(self) -> bool:
        """Whether the queue is empty (a snapshot).

        Raises:
            OSError: This process put items, then closed the queue (as the stdlib).
        """
        if self._closed and self._put_here:
            raise OSError(f"Queue {self!r}: handle is closed")
        return self._items.empty()

    def full(self) -> bool:
        """Whether ``put`` would wait (a snapshot)."""
        return self._items.full()

    def close(self) -> None:
        """This process puts and gets no more; what it put still reaches the queue."""
        self._closed = True

    def join_thread(self) -> None:
        """After ``close()``: wait until every item this process put is in the queue."""
        if not self._closed:
            raise ValueError(f"Queue {self!r} not closed: call close() first")
        if not self._join_cancelled:
            self._items.flush()

    def cancel_join_thread(self) -> None:
        """Make ``join_thread()`` return without waiting for the items not yet sent."""
        self._join_cancelled = True

    def __repr__(self) -> str:
        return f"<corepool.multiprocessing.{type(self).__name__} at {id(self):#x}>"


def _rebuild_queue(cls: type[Queue], items: corepool.queues.Queue, state: tuple[Any, ...]) -> Queue:
    queue = cls.__new__(cls)
    queue._attach(items)
    queue._restore(state)
    return queue


class JoinableQueue(Queue):
    """A ``Queue`` whose consumers call ``task_done()``, and whose ``join()`` waits for them all."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._restore((Semaphore(0), Condition(Lock())))

    def _extra_state(self) -> tuple[Any, ...]:
        return (self._unfinished, self._condition)

    def _restore(self, state: tuple[Any, ...]) -> None:
        self._unfinished, self._condition = state

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` (see ``Queue.put``); it counts as unfinished until a ``task_done()``."""
        self._check_open()
        with self._condition:
            self._unfinished.release()  # before the item can be taken and marked done
        try:
            super().put(obj, block, timeout)
        except BaseException:
            self._unfinished.acquire(False)
            raise

    def task_done(self) -> None:
        """Say that an item taken with ``get`` is dealt with.

        Raises:
            ValueError: Called more times than items were put.
        """
        with self._condition:
            if not self._unfinished.acquire(False):
                raise ValueError("task_done() called too many times")
            if self._unfinished.get_value() == 0:
                self._condition.notify_all()

    def join(self) -> None:
        """Wait until every item put has had its ``task_done()``."""
        with self._condition:
            while self._unfinished.get_value() != 0:
                self._condition.wait()


class SimpleQueue:
    """``multiprocessing.SimpleQueue``: ``put``, ``get``, ``empty``, ``close``; unbounded."""

    def __init__(self) -> None:
        self._items = corepool.queues.Queue()
        self._closed = threading.Event()

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_simple_queue, (self._items,)

    def put(self, obj: Any) -> None:
        """Put ``obj`` at the end."""
        self._check_open()
        self._items.put(obj)

    def get(self) -> Any:
        """Wait for the first item; remove and return it."""
        self._check_open()
        return self._items.get()

    def empty(self) -> bool:
        """Whether the queue is empty (a snapshot)."""
        self._check_open()
        return self._items.empty()

    def close(self) -> None:
        """This process uses the queue no more."""
        self._closed.set()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise OSError(f"{self!r}: handle is closed")

    def __repr__(self) -> str:
        return f"<corepool.multiprocessing.SimpleQueue at {id(self):#x}>"


def _rebuild_simple_queue(items: corepool.queues.Queue) -> SimpleQueue:
    queue = SimpleQueue.__new__(SimpleQueue)
    queue._items = items
    queue._closed = threading.Event()
    return queue
