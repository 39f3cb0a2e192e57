"""The stdlib's synchronization names, on ``corepool.sync``.

Runs in every process that holds one. ``corepool.sync``'s primitives already
keep the stdlib's contract (``acquire(block, timeout)``, ``release``, ``with``,
``wait(timeout)``, ``notify(n)``, ``threading.Barrier``'s ``wait``, ``abort``,
``reset``); only ``Event`` needs the stdlib's ``repr``.
"""

from __future__ import annotations

from typing import Any

import corepool.sync
from corepool._transport.semaphores import SharedBlock
from corepool.sync import Barrier, BoundedSemaphore, Condition, Lock, RLock, Semaphore

__all__ = ["Barrier", "BoundedSemaphore", "Condition", "Event", "Lock", "RLock", "Semaphore"]


class Event(corepool.sync.Event):
    """``multiprocessing.Event``: ``set``, ``clear``, ``is_set``, ``wait(timeout)``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<Event at {id(self):#x} {'set' if self.is_set() else 'unset'}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_event, (self._condition, self._block)


def _rebuild_event(condition: Condition, block: SharedBlock) -> Event:
    event = Event.__new__(Event)
    event._condition = condition
    event._block = block
    return event
