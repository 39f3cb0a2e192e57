"""The joblib backend ``"corepool"``: joblib's ``Parallel`` on a corepool ``Pool``.

Runs in the parent (what workers run is in ``_joblib_tasks``). Imports joblib
at its top, so only ``corepool.joblib`` imports this module, lazily; of
corepool it uses the public ``Pool`` (and ``errors``, ``options``).

How joblib drives a backend (its ``_parallel_backends.py`` is the contract):
``configure`` once per ``Parallel`` call (or per ``with Parallel(...)``
block), ``start_call``, then ``submit`` of one ``BatchedCalls`` at a time
with a completion callback (at most ``pre_dispatch`` batches out; each
callback dispatches the next batch), ``retrieve_result_callback`` in that
callback, ``abort_everything`` on the first error, and ``stop_call`` and
``terminate`` at the end. Each ``Parallel`` call gets a pool in
``configure`` and closes it in ``terminate``; closing parks the idle
workers, which the next call's pool adopts, so calls in a row run on the
same processes. ``abort_everything`` terminates the pool: running batches
stop at once.
"""

from __future__ import annotations

import contextlib
import functools
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from joblib.parallel import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
)

from corepool._joblib_tasks import Batch, run_batch
from corepool.errors import TaskTimeout, WorkerDied
from corepool.options import PoolOptions, StartMethod, default_workers
from corepool.pool import Pool

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CorepoolBackend"]

# How corepool names a call of run_batch in its errors (Pool's "submit(fn)").
_SUBMITTED = "submit(run_batch)"

# What every Parallel call passes to configure(): loky's memory-mapping
# settings and multiprocessing context, and the verbosity. corepool moves
# large buffers through shared memory by itself and uses its own start
# method, so these have no use here.
_JOBLIB_SETTINGS = frozenset({"max_nbytes", "temp_folder", "mmap_mode", "verbose", "context"})


def _call_back(callback: Callable[[Any], None], batch: Batch, future: Future[Any]) -> None:
    """Hand joblib's callback what ``retrieve_result_callback`` reads (in the scheduler thread)."""
    callback(_Submitted(future, batch))


class _Submitted:
    """What the completion callback hands to ``retrieve_result_callback``."""

    __slots__ = ("batch", "future")

    def __init__(self, future: Future[Any], batch: Batch) -> None:
        self.future = future
        self.batch = batch


class CorepoolBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's ``Parallel`` on corepool workers; registered as ``"corepool"`` by ``register()``.

    ``n_jobs`` is the number of worker processes: ``-1`` all usable cores
    (the CPU affinity and, on 3.13+, ``os.process_cpu_count()``), ``-2`` all
    but one, and so on; ``1`` (and joblib's default, ``None``) runs the
    tasks in the calling process, as every joblib backend does. Each
    ``Parallel`` call opens a ``corepool.Pool`` and closes it when it ends;
    its idle workers are parked and adopted by the next call's pool, so the
    calls of a ``parallel_config`` block run on the same processes, and
    nothing is left once the block is over but parked workers, which exit
    by themselves within seconds (or with the program).

    A worker that dies fails its call with ``WorkerDied`` naming the joblib
    task, a task's exception keeps its type, and the pool goes on. Large
    numpy arrays travel through shared memory (arriving read-only, as with
    loky's default ``mmap_mode="r"``); lambdas and closures travel by value.
    Nested ``Parallel`` calls in a worker run on threads, as many as the
    worker's share of the cores unless they ask for ``n_jobs``; deeper ones
    run sequentially.

    Args:
        nesting_level: Set by joblib.
        inner_max_num_threads: BLAS/OpenMP threads per worker (joblib's
            name for ``PoolOptions.inner_threads``); ``None``: cores / workers.
        start_method: See ``PoolOptions``.
        task_timeout: See ``PoolOptions``: a task (a joblib batch) running
            longer fails the call with ``TaskTimeout``.
        retries: See ``PoolOptions``.
        max_memory_per_worker: See ``PoolOptions``.
        preload: See ``PoolOptions``.

    Raises:
        ValueError: An option is out of range (raised by ``parallel_config``).

    Example:
        >>> with joblib.parallel_config(backend="corepool", n_jobs=2, task_timeout=60):
        ...     joblib.Parallel()(joblib.delayed(math.sqrt)(x) for x in range(4))
        [0.0, 1.0, 1.4142135623730951, 1.7320508075688772]
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    supports_sharedmem = False
    uses_threads = False
    default_n_jobs = 1

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        *,
        start_method: StartMethod | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        max_memory_per_worker: int | str | None = None,
        preload: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self._pool_options: dict[str, Any] = {
            "start_method": start_method,
            "task_timeout": task_timeout,
            "retries": retries,
            "max_memory_per_worker": max_memory_per_worker,
            "preload": preload,
        }
        PoolOptions(**self._pool_options)  # a bad option fails in parallel_config, not later
        self._pool: Pool | None = None
        self._inner_threads = 1
        self._dispatched = 0
        self._call = contextlib.ExitStack()  # what the Parallel call under way holds

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """The number of workers ``n_jobs`` asks for: ``-1`` all usable cores, ``-2`` one less.

        Raises:
            ValueError: ``n_jobs`` is 0.
        """
        if n_jobs == 0:
            raise ValueError(
                "n_jobs == 0 in Parallel has no meaning: pass the number of worker "
                "processes, -1 for all cores, or 1 to run in this process"
            )
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(default_workers() + 1 + n_jobs, 1)
        return n_jobs

    def configure(
        self,
        n_jobs: int | None = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Open the pool for a ``Parallel`` call; return its number of workers.

        Raises:
            TypeError: ``Parallel`` was given an option this backend does not
                take (loky's ``idle_worker_timeout``, say).
            FallbackToBackend: ``n_jobs`` means one worker: joblib then runs
                the tasks in the calling process.
        """
        unknown = sorted(set(backend_kwargs) - _JOBLIB_SETTINGS)
        if unknown:
            raise TypeError(
                f"the corepool joblib backend does not take {', '.join(unknown)}: corepool's "
                "options go to parallel_config(backend='corepool', ...) (start_method, "
                "task_timeout, retries, max_memory_per_worker, preload)"
            )
        workers = self.effective_n_jobs(n_jobs)
        if workers == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        pool = self._pool
        if pool is not None and pool.workers != workers:
            self.terminate()
            pool = None
        if pool is None:
            self._open(workers)
        return workers

    def _open(self, workers: int) -> None:
        pool = Pool(workers, inner_threads=self.inner_max_num_threads, **self._pool_options)
        self._inner_threads = pool.options.resolved_inner_threads
        self._pool = pool

    def start_call(self) -> None:
        """A ``Parallel`` call starts: its tasks are numbered from 0 in error messages.

        Its batches share one copy of each large argument (an array given to
        every task is copied once per call, not once per batch).
        """
        self._dispatched = 0
        self._call.close()
        if self._pool is not None:
            self._call.enter_context(self._pool._submits.sharing_copies())

    def stop_call(self) -> None:
        """The ``Parallel`` call is over: its copies of arguments go."""
        self._call.close()

    def submit(self, func: Any, callback: Callable[[Any], None] | None = None) -> Future[Any]:
        """Run one joblib batch on a worker; ``callback`` is called once it is done.

        Returns:
            The batch's ``Future`` (a corepool one, with ``stop()``).
        """
        pool = self._pool
        if pool is None:
            raise RuntimeError(
                "the corepool joblib backend got a batch before configure() or after "
                "terminate(): use it through joblib.Parallel, which calls them"
            )
        batch = Batch(func, self._dispatched)
        self._dispatched += len(func)
        future = pool.submit(run_batch, batch)
        if callback is not None:
            future.add_done_callback(functools.partial(_call_back, callback, batch))
        return future

    # joblib before 1.5 calls apply_async; 1.5 renamed it submit.
    apply_async = submit

    def retrieve_result_callback(self, out: _Submitted) -> Any:
        """The batch's list of results, or its error, with corepool's errors naming joblib tasks.

        Raises:
            WorkerDied: The worker died running the batch (it was replaced).
            TaskTimeout: The batch passed ``task_timeout``.
            Exception: What a task raised, as its own type.
        """
        try:
            return out.future.result()
        except WorkerDied as exc:
            alone = len(out.batch.calls) == 1  # WorkerDied says "in task 3 of <job>"
            raise WorkerDied(
                worker_id=exc.worker_id,
                pid=exc.pid,
                exitcode=exc.exitcode,
                task_index=out.batch.first if alone else None,
                job=out.batch.call() if alone else out.batch.describe(),
                replaced=exc.replaced,
                attempts=exc.attempts,
            ) from None
        except TaskTimeout as exc:
            raise TaskTimeout(
                _renamed(str(exc), out.batch),
                task_index=out.batch.first,
                timeout=exc.timeout,
                attempts=exc.attempts,
            ) from None
        except Exception as exc:
            notes = getattr(exc, "__notes__", None)  # 3.11+: corepool's note names the task
            if notes:
                notes[:] = [_renamed(note, out.batch) for note in notes]
            raise

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A task failed: stop every batch now, running or not.

        The pool is terminated (its workers killed: nobody wants their
        results) and, if the ``Parallel`` object goes on (``ensure_ready``),
        a fresh one of the same size opened.
        """
        self._call.close()
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.terminate()
        pool.join()
        if ensure_ready:
            self._open(pool.workers)

    def terminate(self) -> None:
        """The ``Parallel`` call is over: close the pool (idle workers are parked for the next)."""
        self._call.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self.reset_batch_stats()

    def get_nested_backend(self) -> tuple[Any, int | None]:
        """What a ``Parallel`` call inside a task runs on.

        Threads, as many as the worker's share of the cores by default; a
        call nested deeper runs sequentially.
        """
        level = (self.nesting_level or 0) + 1
        if level > 1:
            return SequentialBackend(nesting_level=level), None
        return ThreadingBackend(nesting_level=level), self._inner_threads


def _renamed(text: str, batch: Batch) -> str:
    """``text`` with corepool's name for the batch (and its item's repr) replaced by its tasks."""
    head, found, _ = text.partition(f"task 0 of {_SUBMITTED}, item ")
    if found:  # a note ends with the item's repr, which describe() replaces
        return head + batch.describe()
    head, found, tail = text.partition(f"task 0 of {_SUBMITTED}")
    return head + batch.describe() + tail if found else text
