"""The Dask backend: chunks run as tasks on a ``dask.distributed`` cluster.

Runs in the parent. The scheduler thread submits each chunk as one Dask task
and waits; the Dask client's threads (its callback thread and its event
loop) put what happened in an outbox and write a byte to a pipe that
``wait`` selects on together with the scheduler's wake-up pipe, as the
thread backend does. On the cluster's workers ``run_on_worker`` runs a chunk
through ``_worker.run_detached_chunk``. The only module of corepool that
imports dask; ``_backends.create`` loads it on demand.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import dask
import distributed
from distributed.client import ClosedClientError, FutureCancelledError, FuturesCancelledError
from distributed.comm.core import CommClosedError
from distributed.core import RPCClosed
from distributed.exceptions import WorkerStartTimeoutError
from distributed.scheduler import KilledWorker, NoValidWorkerError, NoWorkerError

from corepool._backends.base import (
    Chunk,
    ChunkFinished,
    Event,
    InitializerFailed,
    Outbox,
    Values,
    WorkerLost,
)
from corepool._protocol import CallMode, ChunkDone, ErrorSite, InitFailed
from corepool._transport.buffers import Payload
from corepool._transport.pickling import dumps, loads, remote_error
from corepool._worker import give_thread_state, run_detached_chunk
from corepool.errors import BackendError
from corepool.options import PoolOptions

__all__ = ["DASK_ERRORS", "DaskBackend", "Outcome", "dask_outcome", "run_on_worker", "translate"]

logger = logging.getLogger(__name__)

# A Dask task costs about 1 ms of the scheduler's and the worker's time: aim
# each chunk at much more work than that.
DASK_CHUNK_SECONDS = 0.15
# Chunks in flight per worker thread: one running and one waiting, so that a
# thread never idles for a round trip through the scheduler.
CHUNKS_PER_THREAD = 2
CONNECT_TIMEOUT_S = 30.0
# A lone task lost this many times, never alone on its worker, counts as lost.
MAX_QUIET_LOSSES = 3
# How long after corepool cancels a lost task Dask may still run it somewhere.
RERUN_WINDOW_S = 5.0
_pools = itertools.count(1)


class Outcome(enum.Enum):
    """What a failure reported by Dask means for corepool."""

    LOST = "the worker holding the chunk died: its tasks run again and the killer is blamed"
    BROKEN = "the cluster cannot serve the pool any more: every call fails with BackendError"


# Every exception of dask.distributed that a client can see, and what it
# means here (tests/dask checks that none is missing).
DASK_ERRORS: Mapping[type[BaseException], Outcome] = {
    KilledWorker: Outcome.LOST,
    FutureCancelledError: Outcome.BROKEN,  # cancelled by someone else: a restart, another client
    FuturesCancelledError: Outcome.BROKEN,
    ClosedClientError: Outcome.BROKEN,
    CommClosedError: Outcome.BROKEN,  # and FatalCommClosedError
    RPCClosed: Outcome.BROKEN,
    NoValidWorkerError: Outcome.BROKEN,
    NoWorkerError: Outcome.BROKEN,
    WorkerStartTimeoutError: Outcome.BROKEN,
    OSError: Outcome.BROKEN,  # the scheduler cannot be reached
    TimeoutError: Outcome.BROKEN,
}


def dask_outcome(exc: BaseException) -> Outcome | None:
    """What ``exc`` means, from ``DASK_ERRORS``; ``None`` for an error that is not Dask's."""
    for cls in type(exc).__mro__:
        outcome = DASK_ERRORS.get(cls)
        if outcome is not None:
            return outcome
    return None


def translate(
    exc: BaseException,
    during: str,
    chunk: Chunk | None = None,
    lost: Callable[[], WorkerLost] | None = None,
) -> Event:
    """Dask's error as corepool's: the one place where Dask's errors are mapped.

    Args:
        exc: What Dask raised.
        during: What corepool was doing, for the message (``"running chunk 7"``).
        chunk: The chunk whose task failed, if any.
        lost: Makes the ``WorkerLost`` for a chunk whose worker died.

    Returns:
        ``WorkerLost`` for a dead worker; for an error that is not Dask's (the
        task could not start on the worker: its function or arguments failed
        to unpickle there), ``ChunkFinished`` with that error for every task.

    Raises:
        BackendError: The cluster cannot go on serving the pool.
    """
    outcome = dask_outcome(exc)
    if outcome is Outcome.LOST and lost is not None:
        return lost()
    if outcome is not None:
        raise BackendError(
            f"the Dask cluster failed {during}: {type(exc).__name__}: {exc}. Check that its "
            "scheduler and workers run and can be reached (the Dask dashboard and logs say "
            "more), then create a new Pool."
        ) from exc
    if chunk is None:
        raise exc
    # Not Dask's own error: the task failed before any of the chunk's tasks
    # ran (say, corepool or a module of the function is missing on the worker).
    error = remote_error(exc, ErrorSite.ARGUMENTS)
    return ChunkFinished(
        chunk, Values([None] * len(chunk)), dict.fromkeys(range(len(chunk)), error), 0.0
    )


class DaskBackend:
    """Runs each chunk as one task of a ``dask.distributed`` cluster."""

    REFUSED: ClassVar[Mapping[str, str]] = {
        "task_timeout": "a task on a Dask worker's thread cannot be stopped",
        "max_tasks_per_worker": "the cluster's workers are Dask's: corepool does not replace them",
        "max_memory_per_worker": "Dask's workers have their own limit: dask worker --memory-limit",
        "start_method": "Dask starts its own worker processes",
        "preload": "Dask's workers import modules themselves: dask worker --preload",
        "inner_threads": "BLAS threads are the cluster workers' setting (OMP_NUM_THREADS)",
    }

    def __init__(self, options: PoolOptions) -> None:
        address = options.address or dask.config.get("scheduler-address", None)
        if address is not None and options.workers is not None:
            raise ValueError(
                f"workers={options.workers} sizes the LocalCluster corepool starts, but the pool "
                f"runs on the cluster at {address}, which has the workers it has. Leave workers "
                "unset, or scale the cluster itself."
            )
        self._token = f"corepool-{os.getpid()}-{next(_pools)}-{uuid.uuid4().hex[:8]}"
        self._cluster: distributed.LocalCluster | None = None
        try:
            if address is None:
                # A worker that dies fails its tasks at once (KilledWorker):
                # corepool, not Dask, decides what runs again.
                with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                    self._cluster = distributed.LocalCluster(
                        n_workers=options.resolved_workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                    )
                address = self._cluster.scheduler_address
            self._client = distributed.Client(
                address, set_as_default=False, timeout=CONNECT_TIMEOUT_S
            )
            threads = sum(self._client.nthreads().values())
        except BaseException as exc:
            self._close_cluster()
            translate(exc, f"while connecting to {address or 'a new LocalCluster'}")
        self._address = str(address)
        self._workers = max(1, int(threads))
        self._threshold = options.buffer_threshold_bytes
        self._initializer = (options.initializer, options.initargs)
        self._shared: distributed.Future | None = None
        if options.shared:
            self._shared = self._client.scatter(dict(options.shared), broadcast=True, hash=False)
        self._keys = itertools.count()
        # Chunks the cluster holds, by task key; only the scheduler thread
        # changes these, the client's threads read them.
        self._running: dict[str, tuple[int, Chunk, distributed.Future]] = {}
        self._held: list[int] = [0] * self._workers
        # What was scattered under each key of copies (a job's, or one jobs
        # share): big functions and arguments, sent once.
        self._scattered: dict[int, dict[int, tuple[Any, distributed.Future]]] = {}
        self._worker_ids: dict[str, int] = {}
        # Keys of tasks lost with their worker (Dask may run them again), and
        # how often each lone task was lost and sent again.
        self._lost_keys: set[str] = set()
        self._losses: dict[int, int] = {}
        # When a lost chunk was last cancelled, by chunk id (see _lost_worker).
        self._cancelled_at: dict[int, float] = {}
        # Each worker's process id, learnt from the chunks it returns.
        self._pids: dict[str, int] = {}
        self._outbox: Outbox[tuple[str, Any]] = Outbox()
        self._closed = threading.Event()

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def chunk_seconds(self) -> float:
        return DASK_CHUNK_SECONDS

    def describe(self) -> str:
        return f"backend='dask' address={self._address!r}"

    def start(self) -> None:
        self._client.subscribe_topic("all", self._on_cluster_event)
        self._learn_pids()

    def free_workers(self) -> list[int]:
        free = [(held, slot) for slot, held in enumerate(self._held) if held < CHUNKS_PER_THREAD]
        return [slot for _, slot in sorted(free)]

    def task_budget(self, worker_id: int) -> int | None:
        return None

    def send(self, worker_id: int, chunk: Chunk) -> int:
        # A Dask task says nothing until it ends: its whole chunk is one
        # stride, so if its worker dies each task is run again alone.
        chunk.stride = max(1, len(chunk))
        fn = self._scatter_big(chunk.sharing, chunk.fn)
        items = [self._scatter_arguments(chunk.sharing, chunk.mode, item) for item in chunk.items]
        key = f"{self._token}-{chunk.id}-{next(self._keys)}"
        future = self._client.submit(
            run_on_worker,
            self._token,
            self._shared,
            self._initializer,
            fn,
            chunk.mode,
            items,
            chunk.stride,
            key=key,
            pure=False,
        )
        self._running[key] = (worker_id, chunk, future)
        self._held[worker_id] += 1
        future.add_done_callback(self._on_done)
        return sum(map(_estimate, chunk.items))

    def wait(self, wakeup_fd: int, timeout: float | None) -> tuple[list[Event], bool]:
        reports, woken = self._outbox.wait(wakeup_fd, timeout)
        events: list[Event] = []
        for kind, detail in reports:
            if kind == "done":
                events.extend(self._finished(detail))
            else:
                events.extend(self._lost_worker(*detail))
        return events, woken

    def is_idle(self) -> bool:
        return not self._running

    def release(self, sharing: int) -> None:
        scattered = self._scattered.pop(sharing, {})
        for _, future in scattered.values():
            future.release()

    def stop_task(self, job_id: int, index: int) -> None:
        """A task running on a Dask thread cannot be stopped: it runs on, its result is dropped."""

    def stop_job(self, job_id: int) -> None:
        """As ``stop_task``: the job's running tasks run on, unheard; no new chunk is sent."""

    def shutdown(self, *, graceful: bool) -> None:
        self._closed.set()
        futures = [future for _, _, future in self._running.values()]
        self._running.clear()
        with contextlib.suppress(Exception):
            self._client.unsubscribe_topic("all")
            if futures:
                self._client.cancel(futures, force=not graceful)
            self._client.run(forget_pool, self._token)
        with contextlib.suppress(Exception):
            self._client.close()
        self._close_cluster()
        self._outbox.close()

    # -- what the client's threads report ----------------------------------------

    def _on_done(self, future: distributed.Future) -> None:
        """A chunk's task ended (Dask's callback thread): fetch its result, pass it on."""
        if self._closed.is_set() or future.key not in self._running:
            return
        try:
            outcome: Any = ("result", future.result())
        except BaseException as exc:
            outcome = ("error", exc)
        self._outbox.put(("done", (future.key, *outcome)))

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        """An event of the cluster (the client's event loop): a worker that died matters."""
        _, message = event
        if (
            isinstance(message, dict)
            and message.get("action") == "remove-worker"
            and not message.get("expected", False)
        ):
            keys = set(message.get("processing-tasks", ()))
            self._outbox.put(("lost", (message.get("worker", "?"), keys)))

    # -- turning reports into events (the scheduler thread) ----------------------

    def _finished(self, detail: tuple[str, str, Any]) -> list[Event]:
        key, kind, value = detail
        held = self._forget(key)
        if held is None:
            return []  # already reported lost
        slot, chunk = held
        if kind == "error":
            during = f"running chunk {chunk.id} (key {key})"
            address = getattr(getattr(value, "last_worker", None), "address", None)
            return [
                translate(value, during, chunk, lambda: self._loss(chunk, address, running=False))
            ]
        address, pid, data = value
        self._pids[address] = pid
        message = loads(data)
        if isinstance(message, InitFailed):
            return [InitializerFailed(slot, message.error)]
        done: ChunkDone = message
        busy = done.decode_s + done.compute_s + done.encode_s
        # Dask unpickles a task's arguments before corepool's code runs: how
        # long that took is not known here (decode_s stays None).
        return [
            ChunkFinished(
                chunk,
                Payload(done.results),
                done.errors,
                busy,
                slot,
                None,
                done.compute_s,
                done.encode_s,
            )
        ]

    def _lost_worker(self, address: str, processing: set[str]) -> list[Event]:
        """A worker died holding ``processing`` (every client's tasks).

        Dask says what the worker held, not what it ran. A chunk held with a
        task already lost (which Dask may run again before it hears of the
        cancel) goes out again silently: that task is the likely killer. So
        does a lone task, a few times, before it counts as lost; lost again
        while its worker held nothing else, it is blamed (once alone could be
        a race with a task that Dask ran after all), unless another chunk was
        lost within ``RERUN_WINDOW_S``: Dask may still run that one's task,
        without listing it as held (seen: the task after a killer blamed).
        """
        with_suspect = not processing.isdisjoint(self._lost_keys)
        now = time.monotonic()
        self._cancelled_at = {
            chunk_id: at for chunk_id, at in self._cancelled_at.items() if now - at < RERUN_WINDOW_S
        }
        lost: list[Event] = []
        futures = []
        for key in processing:
            held = self._running.pop(key, None)
            if held is None:
                continue  # not ours, or reported already
            slot, chunk, future = held
            self._held[slot] -= 1
            self._lost_keys.add(key)
            futures.append(future)
            losses = self._losses.get(chunk.id, 0)
            alone = (
                len(processing) == 1
                and losses > 0
                and not any(other != chunk.id for other in self._cancelled_at)
            )
            self._cancelled_at[chunk.id] = now
            if with_suspect or (len(chunk) == 1 and not alone and losses < MAX_QUIET_LOSSES):
                self._losses[chunk.id] = losses + 1
                self.send(slot, chunk)
                continue
            lost.append(self._loss(chunk, address, running=len(chunk) > 1 or alone))
        if futures:
            with contextlib.suppress(Exception):  # stop Dask from running them again
                self._client.cancel(futures)
            self._learn_pids()  # of the replacements, should they die too
        return lost

    def _loss(self, chunk: Chunk, address: str | None, *, running: bool) -> WorkerLost:
        """``chunk`` was lost with the worker at ``address``.

        Dask does not say which task ran when its worker died: a chunk of
        several tasks is one stride, each of its tasks run again alone. A lone
        task that ``running`` is blamed; else it counts a loss with no task
        known to run (blamed after a few of them).
        """
        self._losses.pop(chunk.id, None)
        worker_id = self._worker_ids.setdefault(address or "?", len(self._worker_ids))
        position = 0 if running else None
        return WorkerLost(worker_id, self._pids.get(address or "", 0), None, [chunk], position)

    def _learn_pids(self) -> None:
        with contextlib.suppress(Exception):
            workers = self._client.scheduler_info(n_workers=-1).get("workers", {})
            self._pids.update(
                {address: int(info.get("pid", 0)) for address, info in workers.items()}
            )

    def _forget(self, key: str) -> tuple[int, Chunk] | None:
        held = self._running.pop(key, None)
        if held is None:
            return None
        slot, chunk, _ = held
        self._held[slot] -= 1
        return slot, chunk

    # -- sending big objects once ----------------------------------------------

    def _scatter_big(self, sharing: int, value: Any) -> Any:
        """``value``, or a Dask future of it when it is big.

        Sent to the cluster once per key of copies: its job's, or one that
        several jobs share (see ``_sharing.py``).
        """
        threshold = self._threshold
        if threshold is None:
            return value
        scattered = self._scattered.setdefault(sharing, {})
        known = scattered.get(id(value))
        if known is not None:
            return known[1]
        if _size(value) < threshold:
            return value
        future = self._client.scatter(value, hash=False)
        scattered[id(value)] = (value, future)  # the value kept: its id stays its own
        return future

    def _scatter_arguments(self, sharing: int, mode: CallMode, item: Any) -> Any:
        """A task's arguments, with big buffers among them replaced by futures."""
        if mode is CallMode.ITEM:
            return self._scatter_big(sharing, item) if _is_buffer(item) else item
        if mode is CallMode.STAR:
            return tuple(self._maybe(sharing, arg) for arg in item)
        args, kwargs = item
        return (
            tuple(self._maybe(sharing, arg) for arg in args),
            {name: self._maybe(sharing, arg) for name, arg in kwargs.items()},
        )

    def _maybe(self, sharing: int, arg: Any) -> Any:
        return self._scatter_big(sharing, arg) if _is_buffer(arg) else arg

    def _close_cluster(self) -> None:
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()
            self._cluster = None


def _is_buffer(value: Any) -> bool:
    """A numpy array, ``bytes`` and the like: what may be big enough to scatter."""
    return isinstance(value, (bytes, bytearray, memoryview)) or hasattr(value, "__array__")


def _estimate(value: Any) -> int:
    """A cheap estimate of the bytes ``value`` holds, for the read-ahead budget."""
    nbytes = getattr(value, "nbytes", None) if _is_buffer(value) else None
    return nbytes if isinstance(nbytes, int) else sys.getsizeof(value)


def _size(value: Any) -> int:
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return len(dumps(value))


# -- on the cluster's workers ---------------------------------------------------

# Each pool's worker state (``corepool.worker_state()``) in this worker process.
_states: dict[str, dict[str, Any]] = {}
_states_lock = threading.Lock()


def run_on_worker(
    token: str,
    shared: Mapping[str, Any] | None,
    initializer: tuple[Callable[..., Any] | None, tuple[Any, ...]],
    fn: Callable[..., Any],
    mode: CallMode,
    items: Iterable[Any],
    stride: int,
) -> tuple[str, int, bytes]:
    """Run one chunk on a Dask worker: its address and pid, and its pickled ``ChunkDone``.

    An ``InitFailed`` comes instead when the pool's initializer raised.

    The pool's state in this worker process is made by the first chunk that
    comes: its ``shared`` objects, then its ``initializer``.
    """
    with _states_lock:
        state = _states.get(token)
        if state is None:
            state = dict(shared or {})
            give_thread_state(state)
            function, args = initializer
            if function is not None:
                try:
                    function(*args)
                except BaseException as exc:
                    failed = InitFailed(os.getpid(), remote_error(exc))
                    return _here(), os.getpid(), dumps(failed, for_parent=True)
            _states[token] = state
    give_thread_state(state)
    return _here(), os.getpid(), run_detached_chunk(fn, mode, list(items), stride)


def _here() -> str:
    """The address of the Dask worker running the calling task."""
    return str(distributed.get_worker().address)


def forget_pool(token: str) -> None:
    """Drop a closed pool's state from this worker process (run by ``Client.run``)."""
    with _states_lock:
        _states.pop(token, None)
