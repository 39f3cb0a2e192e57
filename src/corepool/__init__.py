"""corepool: multiprocessing done right.

Fast, crash-proof process pools and the primitives you already know.

The public names load on first use (PEP 562), so that ``import corepool``
stays cheap and a worker process, which imports only corepool's worker side,
never loads the parent's pool, scheduler or toolbox code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corepool._worker import worker_state
    from corepool.errors import (
        BackendError,
        InitializerError,
        PoolClosed,
        PoolError,
        QueueClosed,
        RemoteTraceback,
        SerializationError,
        TaskTimeout,
        WorkerDied,
    )
    from corepool.options import MapOptions, PoolOptions
    from corepool.pool import Pool, map
    from corepool.process import Process
    from corepool.queues import Connection, Pipe, Queue
    from corepool.shared import SharedArray
    from corepool.stats import BytesMoved, CallStats, PoolStats, TimeSpent
    from corepool.sync import (
        Barrier,
        BoundedSemaphore,
        Condition,
        Counter,
        Event,
        Lock,
        RLock,
        Semaphore,
        Value,
    )

__version__ = "0.1.0"

# Each public name and the module that defines it.
_HOMES = {
    "worker_state": "corepool._worker",
    **dict.fromkeys(
        (
            "BackendError",
            "InitializerError",
            "PoolClosed",
            "PoolError",
            "QueueClosed",
            "RemoteTraceback",
            "SerializationError",
            "TaskTimeout",
            "WorkerDied",
        ),
        "corepool.errors",
    ),
    "MapOptions": "corepool.options",
    "PoolOptions": "corepool.options",
    "Pool": "corepool.pool",
    "map": "corepool.pool",
    "Process": "corepool.process",
    "Connection": "corepool.queues",
    "Pipe": "corepool.queues",
    "Queue": "corepool.queues",
    "SharedArray": "corepool.shared",
    **dict.fromkeys(("BytesMoved", "CallStats", "PoolStats", "TimeSpent"), "corepool.stats"),
    **dict.fromkeys(
        (
            "Barrier",
            "BoundedSemaphore",
            "Condition",
            "Counter",
            "Event",
            "Lock",
            "RLock",
            "Semaphore",
            "Value",
        ),
        "corepool.sync",
    ),
}

__all__ = [
    "BackendError",
    "Barrier",
    "BoundedSemaphore",
    "BytesMoved",
    "CallStats",
    "Condition",
    "Connection",
    "Counter",
    "Event",
    "InitializerError",
    "Lock",
    "MapOptions",
    "Pipe",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolOptions",
    "PoolStats",
    "Process",
    "Queue",
    "QueueClosed",
    "RLock",
    "RemoteTraceback",
    "Semaphore",
    "SerializationError",
    "SharedArray",
    "TaskTimeout",
    "TimeSpent",
    "Value",
    "WorkerDied",
    "__version__",
    "map",
    "worker_state",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'corepool' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
