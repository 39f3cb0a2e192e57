"""``Pool.stats()``, per-call stats and their advice, on real pools."""

from __future__ import annotations

import dataclasses
import functools
import time

import pytest

import corepool
import stats_tasks
import tasks
from corepool.options import default_workers


def _advice(stats: corepool.PoolStats | corepool.CallStats, start: str) -> str:
    lines = [line for line in stats.advice if line.startswith(start) or f": {start}" in line]
    assert lines, f"no advice {start!r} in:\n{stats}"
    return lines[0]


def _replaced(pool: corepool.Pool, expected: int) -> corepool.PoolStats:
    """The pool's stats once ``expected`` replacements are ready (they start in the background)."""
    deadline = time.monotonic() + 30
    stats = pool.stats()
    while stats.workers_replaced != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = pool.stats()
    return stats


def test_tiny_tasks_are_too_small_for_a_pool() -> None:
    # Each task returns its 100-byte input: shipping it costs several times
    # the call, however loaded the machine (squares of ints were too close
    # to call on a busy one). Distinct strings: one string repeated pickles
    # as a reference to its first copy (efficiency 0.07-0.55 over runs,
    # against 0.03-0.06 for distinct ones).
    with corepool.Pool(2) as pool:
        pool.map(tasks.identity, [f"{i:0100d}" for i in range(100_000)])
        call = pool.last_call_stats()
    assert call is not None and call.tasks_done == 100_000 and call.tasks_failed == 0
    line = _advice(call, "tasks too small for a pool")
    assert "us of compute each" in line and "plain loop" in line
    assert call.efficiency is not None and call.efficiency < 0.5
    assert call.time.compute_s is not None and call.time.transfer_s is not None


def test_one_slow_task_among_quick_ones_is_unequal() -> None:
    with corepool.Pool(2) as pool:
        pool.map(stats_tasks.nap, [0.8] + [0.01] * 20, chunksize=1)
        call = pool.last_call_stats()
        stats = pool.stats()
    assert call is not None
    line = _advice(call, "tasks too unequal")
    assert "one chunk ran 0.8" in line and "sort the input" in line
    assert call.time.waiting_s is not None and call.time.waiting_s > 0.4
    # The pool's figures blur calls together: it names the call that showed it.
    assert any(a.startswith("map(nap): tasks too unequal") for a in stats.advice), stats


def test_large_results_are_too_heavy_to_ship() -> None:
    with corepool.Pool(2) as pool:
        it = pool.imap(stats_tasks.blob, [4 << 20] * 16)
        assert all(len(result) == 4 << 20 for result in it)
        call = it.stats()  # type: ignore[attr-defined]
    line = _advice(call, "tasks too heavy to ship")
    assert "KiB moved per task" in line and "shared memory" in line
    assert call.moved.received_inline_bytes >= 16 * (4 << 20)
    assert call.moved.sent_shared_bytes == 0


def test_numpy_results_go_through_shared_memory() -> None:
    np = pytest.importorskip("numpy")
    with corepool.Pool(2) as pool:
        pool.map(np.ones, [1 << 18] * 4)  # 2 MiB arrays: out of band
        call = pool.last_call_stats()
    assert call is not None and call.moved.received_shared_bytes is not None
    assert call.moved.received_shared_bytes >= 4 * (2 << 20)
    assert call.moved.received_inline_bytes < 1 << 20


def test_more_blas_threads_than_cores_is_oversubscribed() -> None:
    cores = default_workers()
    inner = max(2, cores)  # 2 workers x `cores` threads: twice the cores, on any machine
    with corepool.Pool(2, inner_threads=inner) as pool:
        assert pool.map(stats_tasks.omp_threads, range(2)) == [str(inner)] * 2
        stats = pool.stats()
    line = _advice(stats, "oversubscribed")
    assert f"2 workers x {inner} BLAS/OpenMP threads on {cores} cores" in line
    with corepool.Pool(2) as pool:
        pool.map(tasks.square, range(4))
        assert not [a for a in pool.stats().advice if "oversubscribed" in a]


def test_a_pool_for_a_few_quick_tasks_is_dominated_by_start_up() -> None:
    # Real start-ups: spawn, and an initializer, so that no parked worker is adopted.
    with corepool.Pool(
        2, start_method="spawn", initializer=tasks.set_state, initargs=("k", 1)
    ) as pool:
        pool.map(tasks.square, range(4))
        stats = pool.stats()
    assert stats.time.startup_s is not None and stats.time.startup_s > 0.05
    line = _advice(stats, "start-up dominates")
    assert "Keep one Pool open" in line
    assert stats.workers_replaced == 0


def test_counts_are_exact_done_failed_retried_and_deaths() -> None:
    with corepool.Pool(2, retries=1) as pool:
        results = pool.map(tasks.fail_on, range(30), return_exceptions=True)
        assert sum(isinstance(r, ValueError) for r in results) == 1
        first = pool.last_call_stats()
        # The task kills its worker on both attempts: one retry, two deaths.
        kill = functools.partial(stats_tasks.sigkill_on, bad=3)
        results = pool.map(kill, range(10), return_exceptions=True, chunksize=1)
        assert isinstance(results[3], corepool.WorkerDied)
        second = pool.last_call_stats()
        stats = _replaced(pool, 2)
    assert first is not None and second is not None
    assert (first.tasks_done, first.tasks_failed, first.tasks_retried) == (29, 1, 0)
    assert (second.tasks_done, second.tasks_failed, second.tasks_retried) == (9, 1, 1)
    assert first.worker_deaths == 0 and second.worker_deaths == 2
    assert (stats.tasks_done, stats.tasks_failed, stats.tasks_retried) == (38, 2, 1)
    assert stats.worker_deaths == 2 and stats.workers_replaced == 2
    assert "2 died, 2 replaced" in str(stats)


def test_a_timeout_counts_as_a_death_and_a_failure() -> None:
    with corepool.Pool(2, task_timeout=0.5) as pool:
        hang = functools.partial(stats_tasks.hang_on, bad=1)
        results = pool.map(hang, range(4), return_exceptions=True, chunksize=1)
        assert isinstance(results[1], corepool.TaskTimeout)
        stats = _replaced(pool, 1)
    assert (stats.tasks_done, stats.tasks_failed, stats.worker_deaths) == (3, 1, 1)


def test_call_stats_are_each_calls_own() -> None:
    with corepool.Pool(2) as pool:
        pool.map(tasks.square, range(100))
        first = pool.last_call_stats()
        it = pool.imap(tasks.square, range(250))
        during = it.stats()  # type: ignore[attr-defined]
        assert sum(1 for _ in it) == 250
        after = it.stats()  # type: ignore[attr-defined]
        last = pool.last_call_stats()
        pool.submit(tasks.square, 3).result()
        stats = pool.stats()
    assert first is not None and first.name == "map(square)" and first.tasks_done == 100
    assert first.is_finished
    assert during.tasks_done <= 250 and after.tasks_done == 250 and after.name == "imap(square)"
    assert last is not None and last.tasks_done == 250  # submits are not calls of their own
    assert stats.tasks_done == 351
    # Two calls compare side by side.
    assert first.wall_s > 0 and after.wall_s > 0 and first.tasks_per_s > 0


def test_last_call_stats_is_per_thread_and_none_before_any_call() -> None:
    with corepool.Pool(2) as pool:
        assert pool.last_call_stats() is None
        pool.map(tasks.square, range(10))
        assert pool.last_call_stats() is not None


def test_report_and_summary() -> None:
    with corepool.Pool(2) as pool:
        pool.map(tasks.square, range(1000))
        stats = pool.stats()
    report = str(stats)
    lines = report.splitlines()
    assert lines[0] == "pool stats: 2 process workers"
    for part in ("tasks", "efficiency", "busy share", "compute", "waiting for input", "idle",
                 "start-up", "bytes", "workers"):  # fmt: skip
        assert part in report, report
    assert lines[-1].startswith("  advice: ")
    assert len(stats.busy_share) == 2 and all(0 <= s <= 1 for s in stats.busy_share)
    summary = stats.summary()
    assert "\n" not in summary
    assert summary.startswith("pool (2 process workers): 1000 done in ")
    assert "tasks/s), efficiency " in summary
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.tasks_done = 0  # type: ignore[misc]
    # Stopped pools stop their clock.
    assert stats.wall_s <= pool.stats().wall_s == pool.stats().wall_s


def test_progress_ends_with_the_summary_line(capfd: pytest.CaptureFixture[str]) -> None:
    with corepool.Pool(2) as pool:
        pool.map(tasks.square, range(500), progress=True)
    err = capfd.readouterr().err
    assert "map(square): 500 done in " in err and "efficiency" in err


def test_stats_on_the_thread_backend() -> None:
    with corepool.Pool(2, backend="thread") as pool:
        pool.map(stats_tasks.nap, [0.01] * 20)
        stats = pool.stats()
        call = pool.last_call_stats()
    assert stats.backend == "thread" and stats.tasks_done == 20
    assert stats.time.compute_s is not None and stats.time.compute_s >= 0.2
    assert stats.time.decode_s == 0.0 and stats.time.encode_s == 0.0  # nothing is pickled
    assert stats.moved.total_bytes == 0
    assert stats.time.startup_s is None and stats.workers_replaced is None  # unknown, not 0
    assert "start-up                          unknown" in str(stats)
    assert stats.efficiency is not None and stats.efficiency > 0
    assert call is not None and call.tasks_done == 20 and call.efficiency is not None
    assert call.efficiency > 0.5


def test_stats_on_the_dask_backend_say_unknown_where_dask_does_not_tell(
    local_cluster: str,
) -> None:
    with corepool.Pool(backend="dask", address=local_cluster) as pool:
        assert pool.map(stats_tasks.nap, [0.01] * 10) == [0.01] * 10
        stats = pool.stats()
    assert stats.backend == "dask" and stats.tasks_done == 10
    assert stats.time.compute_s is not None and stats.time.compute_s >= 0.1
    assert stats.time.decode_s is None and stats.time.transfer_s is None
    assert stats.moved.sent_inline_bytes is None and stats.moved.total_bytes is None
    assert stats.moved.received_inline_bytes is not None and stats.moved.received_inline_bytes > 0
    assert stats.time.startup_s is None and stats.workers_replaced is None
    assert "unpickle arguments (workers)      unknown" in str(stats)
