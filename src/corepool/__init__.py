"""corepool: multiprocessing done right.

Fast, crash-proof process pools and the primitives you already know.
"""

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

__all__ = [
    "BackendError",
    "Barrier",
    "BoundedSemaphore",
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
    "Process",
    "Queue",
    "QueueClosed",
    "RLock",
    "RemoteTraceback",
    "Semaphore",
    "SerializationError",
    "SharedArray",
    "TaskTimeout",
    "Value",
    "WorkerDied",
    "__version__",
    "map",
    "worker_state",
]
