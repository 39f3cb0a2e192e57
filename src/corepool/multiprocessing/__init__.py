"""``multiprocessing``, done right: ``import corepool.multiprocessing as multiprocessing``.

The standard library module's names, signatures and semantics, on corepool's
engine. Code written for ``multiprocessing`` runs unchanged, and:

* a worker that dies (killed, out of memory, a segfault) fails the one task
  it was running with ``WorkerDied`` (a ``BrokenProcessPool``); the pool goes
  on instead of hanging;
* no ``if __name__ == "__main__":`` guard is needed, under any start method;
* ``Queue``, ``Lock``, ``Value``, ``Array``, ``Event`` and the rest can be
  passed to pool tasks as arguments, not only to a ``Process``.

``Pool`` runs on ``corepool.Pool``; ``Process`` is the stdlib's
``BaseProcess`` launched as a corepool worker; the queues, locks and shared
values are corepool's, with the stdlib's methods added where they lacked.
What the stdlib already does right is its own: ``Manager`` is its
``SyncManager``, ``connection``, ``reduction``, ``managers``, ``util`` and
``shared_memory`` are its modules. docs/architecture.md ("Departures from
multiprocessing") lists every difference and its reason.
"""

from __future__ import annotations

from multiprocessing import (
    AuthenticationError,
    BufferTooShort,
    ProcessError,
    TimeoutError,
    connection,
    managers,
    reduction,
    shared_memory,
    util,
)
from multiprocessing.util import SUBDEBUG, SUBWARNING

from corepool.multiprocessing.context import BaseContext, DefaultContext, default_context
from corepool.multiprocessing.pool import AsyncResult, Pool
from corepool.multiprocessing.process import Process
from corepool.multiprocessing.queues import JoinableQueue, Queue, SimpleQueue
from corepool.multiprocessing.sharedctypes import Array, RawArray, RawValue, Value
from corepool.multiprocessing.synchronize import (
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    RLock,
    Semaphore,
)

__all__ = [
    "SUBDEBUG",
    "SUBWARNING",
    "Array",
    "AsyncResult",
    "AuthenticationError",
    "Barrier",
    "BaseContext",
    "BoundedSemaphore",
    "BufferTooShort",
    "Condition",
    "DefaultContext",
    "Event",
    "JoinableQueue",
    "Lock",
    "Manager",
    "Pipe",
    "Pool",
    "Process",
    "ProcessError",
    "Queue",
    "RLock",
    "RawArray",
    "RawValue",
    "Semaphore",
    "SimpleQueue",
    "TimeoutError",
    "Value",
    "active_children",
    "allow_connection_pickling",
    "connection",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "managers",
    "parent_process",
    "reducer",
    "reduction",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
    "shared_memory",
    "util",
]

# The module's functions are its default context's, as in the stdlib.
Manager = default_context.Manager
Pipe = default_context.Pipe
active_children = default_context.active_children
allow_connection_pickling = default_context.allow_connection_pickling
cpu_count = default_context.cpu_count
current_process = default_context.current_process
freeze_support = default_context.freeze_support
get_all_start_methods = default_context.get_all_start_methods
get_context = default_context.get_context
get_logger = default_context.get_logger
get_start_method = default_context.get_start_method
log_to_stderr = default_context.log_to_stderr
parent_process = default_context.parent_process
reducer = default_context.reducer
set_executable = default_context.set_executable
set_forkserver_preload = default_context.set_forkserver_preload
set_start_method = default_context.set_start_method
