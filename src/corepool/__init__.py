"""corepool: multiprocessing done right.

Fast, crash-proof process pools and the primitives you already know.
"""

from corepool._worker import worker_state
from corepool.errors import (
    BackendError,
    InitializerError,
    PoolClosed,
    PoolError,
    RemoteTraceback,
    SerializationError,
    TaskTimeout,
    WorkerDied,
)
from corepool.options import MapOptions, PoolOptions
from corepool.pool import Pool, map
from corepool.shared import SharedArray

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "InitializerError",
    "MapOptions",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolOptions",
    "RemoteTraceback",
    "SerializationError",
    "SharedArray",
    "TaskTimeout",
    "WorkerDied",
    "__version__",
    "map",
    "worker_state",
]
