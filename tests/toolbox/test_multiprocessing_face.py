"""``corepool.multiprocessing``: code written for ``multiprocessing`` runs unchanged on corepool.

The tutorial's programs (the four of examples/, in their standard-library
form) run as scripts with only their ``import multiprocessing`` rebound; the
stdlib's ``Pool`` idioms (positional ``chunksize``, callbacks, ``get(timeout)``)
keep their meaning; and a killed worker fails one result instead of hanging
the pool. Real processes only; ``no_leaks`` (tests/conftest.py) checks that
none is left behind. CPython's own tests of the same names are in
tests/stdlib/test_cpython_multiprocessing.py.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import corepool
import corepool.multiprocessing as corepool_mp
import tasks

# The tutorial's programs, as a multiprocessing user writes them (examples/
# has the same four written with corepool's native API).
TUTORIAL = {
    "square_map": (
        """
        import multiprocessing

        def square(x):
            return x * x

        if __name__ == "__main__":
            with multiprocessing.Pool() as pool:
                print(pool.map(square, range(10)))
        """,
        "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n",
    ),
    "task_queues": (
        """
        import multiprocessing

        def worker(tasks, results):
            for number in iter(tasks.get, None):
                results.put((number, number * number))

        if __name__ == "__main__":
            tasks, results = multiprocessing.Queue(), multiprocessing.Queue()
            workers = [multiprocessing.Process(target=worker, args=(tasks, results))
                       for _ in range(3)]
            for process in workers:
                process.start()
            for number in range(20):
                tasks.put(number)
            for _ in workers:
                tasks.put(None)
            collected = sorted(results.get(timeout=30) for _ in range(20))
            for process in workers:
                process.join()
            print(sum(square for _, square in collected), [p.exitcode for p in workers])
        """,
        "2470 [0, 0, 0]\n",
    ),
    "pipe_exchange": (
        """
        from multiprocessing import Pipe, Process

        def child(conn):
            while (message := conn.recv()) != "goodbye":
                conn.send(f"child got: {message}")
            conn.close()

        if __name__ == "__main__":
            parent_end, child_end = Pipe()
            process = Process(target=child, args=(child_end,))
            process.start()
            for greeting in ["hello", [1, 2, 3]]:
                parent_end.send(greeting)
                print(parent_end.recv())
            parent_end.send("goodbye")
            process.join()
        """,
        "child got: hello\nchild got: [1, 2, 3]\n",
    ),
    "shared_counter": (
        """
        import multiprocessing

        def increment(counter, times):
            for _ in range(times):
                with counter.get_lock():
                    counter.value += 1

        if __name__ == "__main__":
            counter = multiprocessing.Value("i", 0)
            workers = [multiprocessing.Process(target=increment, args=(counter, 2000))
                       for _ in range(4)]
            for process in workers:
                process.start()
            for process in workers:
                process.join()
            print(counter.value)
        """,
        "8000\n",
    ),
}

_IMPORT = re.compile(r"^(\s*)(import multiprocessing|from multiprocessing import)", re.MULTILINE)


def _rebind(source: str) -> str:
    """The script with its ``multiprocessing`` imports taken from ``corepool.multiprocessing``."""
    return _IMPORT.sub(
        lambda m: (
            m.group(1)
            + (
                "import corepool.multiprocessing as multiprocessing"
                if m.group(2).startswith("import")
                else "from corepool.multiprocessing import"
            )
        ),
        source,
    )


def _run_script(source: str, tmp_path: Path, start_method: str | None = None) -> str:
    script = tmp_path / "tutorial.py"
    prelude = (
        ""
        if start_method is None
        else f"import corepool.multiprocessing\n"
        f"corepool.multiprocessing.set_start_method({start_method!r})\n"
    )
    script.write_text(prelude + source)
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.mark.parametrize("name", sorted(TUTORIAL))
def test_tutorial_runs_unchanged_on_the_stdlib_and_on_corepool(
    name: str, start_method: str, tmp_path: Path
) -> None:
    source, expected = TUTORIAL[name]
    source = textwrap.dedent(source)
    assert _run_script(_rebind(source), tmp_path, start_method) == expected
    if start_method == "fork":  # the control, once: the stdlib prints the same
        assert _run_script(source, tmp_path) == expected


def test_no_main_guard_is_needed(start_method: str, tmp_path: Path) -> None:
    source = """
        import multiprocessing

        def square(x):
            return x * x

        pool = multiprocessing.Pool(2)
        print(pool.map(square, range(5)))
        pool.close()
        pool.join()
    """
    assert _run_script(_rebind(textwrap.dedent(source)), tmp_path, start_method) == (
        "[0, 1, 4, 9, 16]\n"
    )


def test_the_stdlib_names_are_all_there() -> None:
    missing = [name for name in multiprocessing.__all__ if not hasattr(corepool_mp, name)]
    assert missing == []
    assert corepool_mp.TimeoutError is multiprocessing.TimeoutError
    assert set(corepool_mp.get_all_start_methods()) == {"fork", "forkserver", "spawn"}


# -- the Pool's idioms -------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"no threes: {x}")
    return x


def kill_self_on(x: int, victim: int) -> int:
    if x == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def add_to(counter: Any, lock: Any, times: int) -> None:
    for _ in range(times):
        with lock:
            counter.value += 1


def test_map_takes_chunksize_positionally(start_method: str) -> None:
    with corepool_mp.get_context(start_method).Pool(2) as pool:
        assert pool.map(square, range(100), 10) == [x * x for x in range(100)]
        assert list(pool.imap(square, range(30), 7)) == [x * x for x in range(30)]
        assert pool.starmap(pow, [(2, 3), (3, 2)], 1) == [8, 9]


def test_apply_async_runs_callbacks_before_get_returns(start_method: str) -> None:
    results: list[Any] = []
    errors: list[BaseException] = []
    with corepool_mp.get_context(start_method).Pool(2) as pool:
        good = pool.apply_async(square, (7,), callback=results.append)
        bad = pool.apply_async(fail_on_three, (3,), error_callback=errors.append)
        mapped = pool.map_async(square, [1, 2], callback=results.append)
        assert good.get(timeout=30) == 49
        with pytest.raises(ValueError, match="no threes: 3"):
            bad.get(timeout=30)
        assert mapped.get(timeout=30) == [1, 4]
        assert good.successful() and not bad.successful()
    assert sorted(results, key=str) == [49, [1, 4]]
    assert [type(error) for error in errors] == [ValueError]
    cause = errors[0].__cause__
    assert isinstance(cause, multiprocessing.pool.RemoteTraceback)
    assert "no threes" in str(cause)


def test_a_killed_worker_fails_one_result_and_the_pool_goes_on(start_method: str) -> None:
    with corepool_mp.get_context(start_method).Pool(2) as pool:
        results = [pool.apply_async(kill_self_on, (x, 2)) for x in range(5)]
        outcomes: list[Any] = []
        for result in results:
            try:
                outcomes.append(result.get(timeout=60))
            except corepool.WorkerDied as died:
                outcomes.append(died)
        assert [x for x in outcomes if not isinstance(x, BaseException)] == [0, 1, 3, 4]
        died = outcomes[2]
        assert isinstance(died, multiprocessing.pool.MaybeEncodingError) is False
        assert died.signal == "SIGKILL"
        assert "got SIGKILL in task 0" in str(died)
        assert pool.map(square, range(4)) == [0, 1, 4, 9]  # still usable


def test_get_with_timeout_raises_the_stdlib_timeout_error(start_method: str) -> None:
    with corepool_mp.get_context(start_method).Pool(1) as pool:
        slow = pool.apply_async(time.sleep, (5,))
        started = time.monotonic()
        with pytest.raises(multiprocessing.TimeoutError):
            slow.get(timeout=0.2)
        assert time.monotonic() - started < 3
        assert not slow.ready()
        with pytest.raises(ValueError, match="not ready"):
            slow.successful()
        iterator = pool.imap(time.sleep, [5])
        with pytest.raises(multiprocessing.TimeoutError):
            iterator.next(timeout=0.2)


def test_imap_goes_on_after_a_failed_task(start_method: str) -> None:
    with corepool_mp.get_context(start_method).Pool(2) as pool:
        iterator = pool.imap(fail_on_three, range(6))
        assert [next(iterator) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="no threes"):
            next(iterator)
        assert list(iterator) == [4, 5]


def test_a_closed_pool_refuses_work_as_the_stdlib_does() -> None:
    pool = corepool_mp.Pool(1)
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [1])
    pool.join()


# -- primitives travel to pool tasks ----------------------------------------------


def test_value_and_lock_reach_pool_tasks(start_method: str) -> None:
    context = corepool_mp.get_context(start_method)
    counter = context.Value("i", 0)
    lock = context.Lock()
    with context.Pool(2) as pool:
        pool.starmap(add_to, [(counter, lock, 500)] * 4, 1)
    assert counter.value == 2000


def test_array_and_queue_reach_pool_tasks(start_method: str) -> None:
    context = corepool_mp.get_context(start_method)
    array = context.Array("d", 4)
    results = context.Queue()
    with context.Pool(2) as pool:
        pool.starmap(_fill, [(array, results, i) for i in range(4)], 1)
    assert array[:] == [0.0, 0.5, 1.0, 1.5]
    assert sorted(results.get(timeout=10) for _ in range(4)) == [0, 1, 2, 3]


def _fill(array: Any, results: Any, index: int) -> None:
    array[index] = index / 2
    results.put(index)


def _store(mapping: Any, key: int) -> None:
    mapping[key] = key * 2


_shared: dict[str, Any] = {}


def _keep(lock: Any, counter: Any) -> None:
    _shared.update(lock=lock, counter=counter)


def _bump(_: int) -> None:
    with _shared["lock"]:
        _shared["counter"].value += 1


def test_a_manager_dict_is_filled_by_pool_tasks(start_method: str) -> None:
    context = corepool_mp.get_context(start_method)
    with context.Manager() as manager:
        mapping = manager.dict()
        with context.Pool(2) as pool:
            pool.starmap(_store, [(mapping, key) for key in range(4)])
        assert dict(mapping) == {0: 0, 1: 2, 2: 4, 3: 6}


def test_a_lock_and_a_value_travel_in_initargs(start_method: str) -> None:
    context = corepool_mp.get_context(start_method)
    lock, counter = context.Lock(), context.Value("i", 0)
    with context.Pool(2, _keep, (lock, counter)) as pool:
        pool.map(_bump, range(50))
    assert counter.value == 50


def _announce(queue: Any, lock: Any) -> None:
    with lock:
        queue.put(os.getpid())


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_the_stdlibs_own_queue_and_lock_travel_in_initargs(method: str) -> None:
    """As the stdlib spawns a pool's workers with them: a ``multiprocessing.Queue`` and ``Lock``."""
    context = multiprocessing.get_context(method)
    queue, lock = context.Queue(), context.Lock()
    with corepool.Pool(
        2, start_method=method, initializer=_announce, initargs=(queue, lock)
    ) as pool:
        pids = set(pool.map(tasks.pid_of, range(20), chunksize=1))
        announced = {queue.get(timeout=10) for _ in range(2)}
    assert announced == pids


def _answer_over(conn: Any, queue: Any, lock: Any) -> str:
    with lock:
        queue.put(conn.recv())
    conn.send("answered")
    return "done"


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_the_stdlibs_own_pipe_queue_and_lock_travel_to_a_corepool_process(method: str) -> None:
    """As the stdlib starts a process with them (plain pickle copied a Connection's fd number)."""
    context = multiprocessing.get_context(method)
    here, there = context.Pipe()
    queue, lock = context.Queue(), context.Lock()
    process = corepool.Process(_answer_over, (there, queue, lock), start_method=method)
    process.start()
    here.send("asked")
    assert here.poll(10)
    assert here.recv() == "answered"
    assert queue.get(timeout=10) == "asked"
    assert process.result(timeout=10) == "done"


def _reply_over(conn: Any) -> str:
    asked = conn.recv()
    conn.send(f"answered {asked}")
    return "done"


def test_the_stdlibs_own_pipe_end_travels_in_a_pool_tasks_arguments(start_method: str) -> None:
    """Its descriptor rides with the task, as a corepool.Pipe end's does."""
    here, there = multiprocessing.Pipe()
    with corepool.Pool(1, start_method=start_method) as pool:
        future = pool.submit(_reply_over, there)
        here.send("ping")
        assert here.poll(10)
        assert here.recv() == "answered ping"
        assert future.result(timeout=10) == "done"


def test_the_stdlibs_own_pipe_end_pickles_as_before_outside_corepool() -> None:
    _here, there = multiprocessing.Pipe()
    copy = pickle.loads(pickle.dumps(there))
    assert type(copy) is type(there)
    assert copy.fileno() == there.fileno()  # plain pickle: the same number, as ever
    copy._handle = None  # not its own descriptor: it must not close it


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the stdlib refuses a fork-context lock from 3.11 on"
)
def test_a_lock_of_the_stdlibs_fork_context_is_refused_as_the_stdlib_refuses_it() -> None:
    context = multiprocessing.get_context("fork")
    with pytest.raises(RuntimeError, match="A SemLock created in a fork context"):
        corepool.Pool(2, initializer=_announce, initargs=(context.Queue(), context.Lock()))


# -- Process ------------------------------------------------------------------------


class _Exiting(corepool_mp.Process):
    def run(self) -> None:
        sys.exit(int(self.name.rsplit("-", 1)[1]))


def _raise() -> None:
    raise RuntimeError("from the child")


def test_process_exit_codes_are_the_stdlibs(start_method: str) -> None:
    context = corepool_mp.get_context(start_method)
    exiting = _Exiting(name="exit-3")
    raising = context.Process(target=_raise)
    quiet = context.Process(target=print, args=("",), daemon=True)
    for process in (exiting, raising, quiet):
        process.start()
    for process in (exiting, raising, quiet):
        process.join(30)
    assert [exiting.exitcode, raising.exitcode, quiet.exitcode] == [3, 1, 0]
    assert quiet.daemon and not quiet.is_alive()
    assert corepool_mp.active_children() == []
