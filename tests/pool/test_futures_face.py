"""The concurrent.futures face, and the Executor contract of the native Pool, on real workers.

CPython's own tests run in tests/stdlib/test_cpython_futures.py; these cover
what they do not: map's laziness, time-out and errors on retrieval,
``buffersize``, ``shutdown(cancel_futures=True)`` with tasks running,
``cancel()`` and ``stop()``, a killed worker failing only its own future,
and the wait for pending futures at interpreter exit.
"""

from __future__ import annotations

import concurrent.futures
import gc
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

import corepool
import tasks
from corepool.futures import ProcessPoolExecutor

TESTS = Path(__file__).resolve().parents[1]


# -- helpers run in the workers -------------------------------------------------------


class Payload:
    """A value the workers make; the test checks that the parent lets go of it."""


def make_payload(_: Any) -> Payload:
    return Payload()


def kill_self_on(x: int, bad: int) -> int:
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return x


def exit_in_task() -> None:
    sys.exit(3)


def _exit_on_load() -> None:
    raise SystemExit(4)


class ExitsWhenUnpickled:
    """A result whose unpickling (in the parent) raises SystemExit."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_exit_on_load, ())


def return_exits_when_unpickled() -> ExitsWhenUnpickled:
    return ExitsWhenUnpickled()


class Service:
    @classmethod
    def fail(cls) -> None:
        raise RuntimeError("from a classmethod")  # the source line travels back


def failing_initializer() -> None:
    raise ValueError("error in initializer")


def wait_until_running(future: concurrent.futures.Future[Any], seconds: float = 0.3) -> None:
    """Until a worker runs the task: ``running()``, then a little longer, as it may be queued."""
    deadline = time.monotonic() + 30
    while not future.running():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.01)
    time.sleep(seconds)


@pytest.fixture
def executor(start_method: str) -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(start_method)) as ex:
        yield ex


# -- map -----------------------------------------------------------------------------


def test_map_runs_every_task_without_being_consumed(executor: ProcessPoolExecutor) -> None:
    consumed = iter(range(20))
    results = executor.map(tasks.square, consumed)
    assert next(consumed, None) is None  # the input was read at call time
    executor.shutdown(wait=True)  # the tasks ran although nobody asked for a result
    assert list(results) == [x * x for x in range(20)]


def test_map_raises_a_task_error_on_retrieval(executor: ProcessPoolExecutor) -> None:
    results = executor.map(tasks.fail_on, range(8))  # task 5 raises; not at call time
    assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="bad item 5") as caught:
        next(results)
    assert isinstance(caught.value.__cause__, corepool.RemoteTraceback)
    assert list(results) == []  # the iterator is over after an error
    assert list(executor.map(tasks.square, [3])) == [9]


def test_map_timeout_counts_from_the_call_and_gives_partial_results(
    executor: ProcessPoolExecutor,
) -> None:
    results = executor.map(tasks.sleep_then, [0.0, 0.0, 3.0], ["a", "b", "c"], timeout=1.0)
    time.sleep(0.5)
    started = time.monotonic()
    assert [next(results), next(results)] == ["a", "b"]
    with pytest.raises(concurrent.futures.TimeoutError, match=r"map\(sleep_then\) did not finish"):
        next(results)
    assert time.monotonic() - started < 1.0  # 1 s after the call, not after the first next()


def test_map_lets_go_of_each_result_once_handed_over(executor: ProcessPoolExecutor) -> None:
    for payload in executor.map(make_payload, range(10)):
        ref = weakref.ref(payload)
        del payload
        gc.collect()
        assert ref() is None


def test_closing_map_cancels_the_tasks_not_started(tmp_path: Path) -> None:
    with ProcessPoolExecutor(1) as executor:
        results = executor.map(tasks.sleep_then, [0.2] * 50, range(50))
        assert next(results) == 0
        started = time.monotonic()
        results.close()
        executor.shutdown(wait=True)
    # 49 tasks left of 0.2 s would take 10 s; only those a worker held still run.
    assert time.monotonic() - started < 3.0


def test_map_checks_its_arguments_at_call_time(executor: ProcessPoolExecutor) -> None:
    with pytest.raises(ValueError, match="chunksize must be >= 1, got 0"):
        executor.map(tasks.square, range(3), chunksize=0)
    with pytest.raises(ValueError, match="buffersize must be None or > 0, got 0"):
        executor.map(tasks.square, range(3), buffersize=0)
    with pytest.raises(TypeError, match="buffersize must be an integer or None"):
        executor.map(tasks.square, range(3), buffersize=2.5)  # type: ignore[arg-type]
    assert list(executor.map(tasks.add, range(40), range(40), chunksize=7)) == [
        2 * x for x in range(40)
    ]


def test_buffersize_reads_the_input_lazily_and_stays_bounded() -> None:
    pulled = itertools.count()

    def endless() -> Iterator[int]:
        for i in itertools.count():
            next(pulled)
            yield i

    with ProcessPoolExecutor(2) as executor:
        results = executor.map(tasks.square, endless(), chunksize=2, buffersize=3)
        assert [next(results) for _ in range(50)] == [x * x for x in range(50)]
        time.sleep(0.3)
        ahead = next(pulled) - 50
        results.close()
    # At most 3 chunks of 2 tasks beyond what was consumed (plus the run in hand).
    assert ahead <= 3 * 2 + 2


# -- submit, cancel, stop, shutdown --------------------------------------------------


def test_cancel_follows_the_standard_and_stop_ends_a_running_task(start_method: str) -> None:
    with corepool.Pool(1, start_method=start_method) as pool:
        running = pool.submit(tasks.sleep_then, 0.5, "ran")
        queued = pool.submit(tasks.square, 2)  # the worker holds it too: it counts as running
        waiting = pool.submit(tasks.square, 3)
        wait_until_running(running, 0.0)
        assert running.cancel() is False  # running: the standard says no
        assert waiting.cancel() is True
        assert running.result(timeout=30) == "ran"
        assert queued.result(timeout=30) == 4
        assert waiting.cancelled()

        endless = pool.submit(tasks.sleep_then, 60, "never")
        wait_until_running(endless)
        started = time.monotonic()
        assert endless.stop() is True
        assert endless.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            endless.result(timeout=0)
        assert pool.submit(tasks.square, 4).result(timeout=30) == 16  # a fresh worker
        assert time.monotonic() - started < 10
        done = pool.submit(tasks.square, 5)
        assert done.result(timeout=30) == 25
        assert done.stop() is False  # finished first: the result stands


def test_stopped_futures_are_done_for_wait_and_none_of_their_tasks_runs_later() -> None:
    with corepool.Pool(2) as pool:
        futures = [pool.submit(tasks.sleep_then, 30, n) for n in range(6)]
        wait_until_running(futures[0])
        assert all(f.stop() for f in futures)
        done, not_done = concurrent.futures.wait(futures, timeout=10)
        assert len(done) == 6 and not not_done
        started = time.monotonic()
    # The calls queued behind the killed ones were dropped, not run again.
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("face", ["native", "futures"])
def test_shutdown_cancel_futures_cancels_pending_and_lets_running_finish(face: str) -> None:
    pool: concurrent.futures.Executor = (
        corepool.Pool(1) if face == "native" else ProcessPoolExecutor(1)
    )
    running = pool.submit(tasks.sleep_then, 0.5, "ran")
    wait_until_running(running)
    pending = [pool.submit(tasks.square, i) for i in range(10)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=0) == "ran"
    # The worker may hold the first one already, queued behind the running task.
    assert pending[0].cancelled() or pending[0].result(timeout=0) == 0
    assert all(f.cancelled() for f in pending[1:])
    with pytest.raises(RuntimeError, match="the pool was closed"):
        pool.submit(tasks.square, 1)


@pytest.mark.parametrize("face", ["native", "futures"])
def test_shutdown_cancel_futures_at_once_still_runs_what_workers_take(face: str) -> None:
    """As the stdlib's executor: the calls its workers can take at once are not cancelled."""
    pool: concurrent.futures.Executor = (
        corepool.Pool(2) if face == "native" else ProcessPoolExecutor(2)
    )
    futures = [pool.submit(tasks.sleep_then, 0.1, n) for n in range(50)]
    pool.shutdown(wait=True, cancel_futures=True)
    ran = [f for f in futures if not f.cancelled()]
    assert 1 <= len(ran) <= 8
    assert [f.result(timeout=0) for f in ran] == [futures.index(f) for f in ran]


def test_shutdown_cancel_futures_ends_map_at_the_first_task_not_started() -> None:
    executor = ProcessPoolExecutor(1)
    results = executor.map(tasks.sleep_then, [0.3] * 30, range(30))
    time.sleep(1.0)
    executor.shutdown(wait=True, cancel_futures=True)
    got = []
    with pytest.raises(concurrent.futures.CancelledError, match="shutdown"):
        for value in results:
            got.append(value)
    assert 1 <= len(got) < 30
    assert got == list(range(len(got)))


# -- failures ------------------------------------------------------------------------


def test_a_killed_worker_fails_only_its_own_future(start_method: str) -> None:
    context = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(2, mp_context=context) as executor:
        futures = [executor.submit(kill_self_on, i, 3) for i in range(8)]
        errors = [f.exception(timeout=60) for f in futures]
        assert isinstance(errors[3], corepool.WorkerDied)
        assert isinstance(errors[3], BrokenProcessPool)
        assert "got SIGKILL in task 0 of submit(kill_self_on)" in str(errors[3])
        assert [e for i, e in enumerate(errors) if i != 3] == [None] * 7
        assert [f.result() for i, f in enumerate(futures) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
        assert executor.submit(tasks.square, 6).result(timeout=30) == 36
        results = executor.map(kill_self_on, range(6), [4] * 6)
        assert [next(results) for _ in range(4)] == [0, 1, 2, 3]
        with pytest.raises(corepool.WorkerDied, match="got SIGKILL"):
            next(results)


def test_a_task_system_exit_reaches_the_caller(executor: ProcessPoolExecutor) -> None:
    with pytest.raises(SystemExit) as caught:
        executor.submit(exit_in_task).result(timeout=30)
    assert caught.value.code == 3
    assert executor.submit(tasks.square, 2).result(timeout=30) == 4


@pytest.mark.parametrize("face", ["native", "futures"])
def test_system_exit_while_a_result_unpickles_fails_that_future_only(face: str) -> None:
    pool: concurrent.futures.Executor = (
        corepool.Pool(1) if face == "native" else ProcessPoolExecutor(1)
    )
    with pool:
        future = pool.submit(return_exits_when_unpickled)
        with pytest.raises(corepool.SerializationError, match="could not be unpickled") as caught:
            future.result(timeout=30)
        assert isinstance(caught.value.__cause__, SystemExit)
        assert pool.submit(tasks.square, 3).result(timeout=30) == 9


def test_a_failing_initializer_breaks_the_executor(capfd: pytest.CaptureFixture[str]) -> None:
    # spawn: the worker's stderr is the one capfd holds now, not a fork server's.
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(1, mp_context=context, initializer=failing_initializer)
    try:
        with pytest.raises(concurrent.futures.BrokenExecutor, match="error in initializer"):
            executor.submit(tasks.square, 2).result(timeout=30)
        assert "error in initializer" in str(executor._broken)
        with pytest.raises(concurrent.futures.BrokenExecutor):
            executor.submit(tasks.square, 2)
    finally:
        executor.shutdown()
    assert "Exception in initializer:" in capfd.readouterr().err


def test_remote_traceback_of_a_classmethod_keeps_its_source_line(
    executor: ProcessPoolExecutor,
) -> None:
    with pytest.raises(RuntimeError, match="from a classmethod") as caught:
        executor.submit(Service.fail).result(timeout=30)
    cause = caught.value.__cause__
    assert isinstance(cause, corepool.RemoteTraceback)
    assert "# the source line travels back" in cause.traceback_text


# -- construction --------------------------------------------------------------------


def test_mp_context_is_read_by_its_start_method() -> None:
    class Context:
        def get_start_method(self) -> str:
            return "spawn"

    with ProcessPoolExecutor(1, mp_context=Context()) as executor:
        assert "start_method='spawn'" in repr(executor)
        assert executor.submit(tasks.square, 3).result(timeout=60) == 9

    import corepool.multiprocessing

    context = corepool.multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context) as executor:
        assert "start_method='forkserver'" in repr(executor)
        assert executor.submit(tasks.square, 4).result(timeout=60) == 16

    class Odd:
        def get_start_method(self) -> str:
            return "threads"

    with pytest.raises(ValueError, match="start method 'threads'"):
        ProcessPoolExecutor(1, mp_context=Odd())
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        ProcessPoolExecutor(0)
    with pytest.raises(ValueError, match="incompatible with the 'fork'"):
        ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("fork"), max_tasks_per_child=1
        )


def test_max_tasks_per_child_replaces_the_worker() -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=2) as executor:
        pids = [executor.submit(os.getpid).result(timeout=60) for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3]


# -- interpreter exit ----------------------------------------------------------------


_EXIT_SCRIPT = """
import atexit, sys, time
sys.path.insert(0, {tests!r})
import tasks
{imports}

def print_after(seconds, text):
    time.sleep(seconds)
    sys.stdout.write(text + "\\n")  # one write: two workers print at once
    sys.stdout.flush()

@atexit.register
def submit_too_late():
    try:
        pool.submit(tasks.square, 2)
    except RuntimeError as exc:
        print(type(exc).__name__, "at exit:", exc, flush=True)

pool = {constructor}
pool.submit(print_after, 1.0, "apple")
{constructor}.submit(print_after, 1.0, "dropped")  # its pool is dropped at once
pool.map(print_after, [1.0], ["mapped"])  # lazy on the futures face: never consumed
"""


@pytest.mark.parametrize(
    ("imports", "constructor", "too_late"),
    [
        (
            "import corepool",
            "corepool.Pool(2)",
            "PoolClosed at exit: cannot start submit(square): the interpreter is exiting",
        ),
        (
            "from corepool.futures import ProcessPoolExecutor",
            "ProcessPoolExecutor(2)",
            "RuntimeError at exit: cannot schedule new futures after interpreter shutdown",
        ),
    ],
    ids=["native", "futures"],
)
def test_the_program_waits_for_pending_futures_at_exit(
    imports: str, constructor: str, too_late: str
) -> None:
    script = _EXIT_SCRIPT.format(tests=str(TESTS), imports=imports, constructor=constructor)
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert sorted(lines[:3]) == ["apple", "dropped", "mapped"]
    assert lines[3].startswith(too_late)
    assert completed.stderr == ""
