"""Workers that start anywhere, fast, with their imports and their thread budget.

The REPL and a real IPython kernel (run by nbclient) use a pool with
functions defined there; ``preload`` puts modules in workers before their
first task; ``inner_threads`` limits BLAS threads, as threadpoolctl reports
from inside each worker.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import corepool
import tasks

CORES = corepool.options.default_workers()


def test_the_interactive_interpreter(start_method: str) -> None:
    """``python -i`` reading from a pipe: the REPL, with functions defined in it."""
    session = textwrap.dedent(
        f"""
        import corepool
        def triple(x):
            return 3 * x

        pool = corepool.Pool(2, start_method={start_method!r})
        print("result", pool.map(triple, range(4)), pool.map(lambda x: -x, [5]))
        pool.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-i"],
        input=session,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "result [0, 3, 6, 9] [-5]" in done.stdout


def test_a_notebook_run_by_an_ipython_kernel() -> None:
    nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")
    cells = [
        "import corepool\nTAX = 1.2\ndef with_tax(price):\n    return round(price * TAX, 2)",
        "with corepool.Pool(2) as pool:\n"
        "    print(pool.map(with_tax, [10, 20]), pool.map(lambda x: x * 2, [21]))",
        "p = corepool.Process(with_tax, (100,))\np.start()\nprint(p.result(timeout=30))",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3")
    client.execute()
    outputs = ["".join(o.get("text", "") for o in cell.outputs) for cell in notebook.cells]
    assert outputs[1] == "[12.0, 24.0] [42]\n"
    assert outputs[2] == "120.0\n"


def test_preloaded_modules_are_there_before_the_first_task(start_method: str) -> None:
    assert "wave" not in sys.modules  # a module that nothing here imports
    with corepool.Pool(1, start_method=start_method, preload=("wave",)) as pool:
        assert pool.map(tasks.modules_loaded, [["wave"]]) == [[True]]
    with corepool.Pool(1, start_method=start_method, preload=()) as pool:
        assert pool.map(tasks.modules_loaded, [["wave"]]) == [[False]]


def test_heavy_modules_the_parent_imported_are_preloaded_by_default() -> None:
    pytest.importorskip("numpy", reason="numpy is an optional extra")
    with corepool.Pool(1, start_method="forkserver") as pool:
        assert pool.options.resolved_preload[:1] == ("numpy",)
        assert pool.map(tasks.modules_loaded, [["numpy"]]) == [[True]]


def test_a_module_that_fails_to_preload_says_so(tmp_path: Path, monkeypatch: Any) -> None:
    with pytest.raises(ValueError, match="preload names 'no_such_module_here', which cannot"):
        corepool.Pool(preload=("no_such_module_here",))
    (tmp_path / "breaks_on_import.py").write_text("raise ImportError('no licence file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with (
        pytest.raises(corepool.PoolError, match=r"fork server \(pid \d+\) failed to start "),
        corepool.Pool(1, start_method="forkserver", preload=("breaks_on_import",)) as pool,
    ):
        pool.map(tasks.square, [1])


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_that_die_before_they_are_ready_are_replaced_then_reported(
    tmp_path: Path, monkeypatch: Any, method: str
) -> None:
    # A worker may end before it reads its configuration (the send then
    # fails) or just after: either way the pool starts another, and gives up
    # with the exit code once a few in a row have died.
    (tmp_path / "exits_on_import.py").write_text("import os\nos._exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # a spawned worker imports it first
    with (
        pytest.raises(
            corepool.PoolError,
            match=r"3 workers in a row died before they were ready \(last: pid \d+, exit code 3\)",
        ),
        corepool.Pool(2, start_method=method, preload=("exits_on_import",)) as pool,
    ):
        pool.map(tasks.square, [1])


@pytest.mark.parametrize("workers, threads", [(2, None), (1, 2), (2, 1)])
def test_workers_limit_their_blas_threads(
    start_method: str, workers: int, threads: int | None
) -> None:
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is a dependency")
    pytest.importorskip("numpy", reason="numpy is an optional extra")
    expected = threads if threads is not None else max(1, CORES // workers)
    with corepool.Pool(workers, start_method=start_method, inner_threads=threads) as pool:
        reports = pool.map(tasks.blas_threads, range(workers), chunksize=1)
    for report in reports:
        assert report["OMP_NUM_THREADS"] == str(expected)
        assert report["pools"], "numpy loaded no BLAS library?"
        assert all(count == expected for count in report["pools"]), report


def test_options_are_checked() -> None:
    with pytest.raises(TypeError, match="preload must be a tuple of module names"):
        corepool.Pool(preload=["numpy"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inner_threads must be None or an int >= 1"):
        corepool.Pool(inner_threads=0)


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_workers_load_only_the_worker_side(start_method: str) -> None:
    """Not the pool, the scheduler or the launcher, nor what only they or errors need.

    A fresh interpreter, so that no parked worker of an earlier test serves
    it; ``eval`` (a builtin, sent by reference) lists the worker's modules.
    """
    program = textwrap.dedent(
        f"""
        import corepool
        with corepool.Pool(1, start_method={start_method!r}) as pool:
            listing = "sorted(__import__('sys').modules)"
            print(*pool.submit(eval, listing).result(timeout=30))
        """
    )
    loaded = set(_run_fresh(program).split())
    assert "corepool._worker" in loaded
    parent_side = {
        "corepool.pool",
        "corepool._scheduler",
        "corepool._spawn",
        "corepool._backends",
        "corepool.errors",
        "concurrent.futures.process",
        "dataclasses",
        "logging",
        "traceback",
    }
    assert loaded & parent_side == set()


def test_idle_workers_load_cloudpickle_as_soon_as_a_function_travels_by_value() -> None:
    """Not each on receiving that function, one after the other; not before it is needed.

    A fresh interpreter (no parked worker has loaded it), with ``spawn``
    (no idle fork server has given it to its workers).
    """
    program = textwrap.dedent(
        """
        import functools
        import corepool, tasks

        def both_workers_report(pool):
            counter = corepool.Counter()
            report = functools.partial(tasks.meet_then_report, counter, 1)
            return dict(pool.map(report, [["cloudpickle"]] * 2, chunksize=1))

        with corepool.Pool(2, start_method="spawn") as pool:
            before = both_workers_report(pool)
            assert pool.submit(lambda: 2).result(timeout=30) == 2  # one worker gets it
            after = both_workers_report(pool)
        assert sorted(after) == sorted(before), (before, after)
        print("before", sorted(before.values()), "after", sorted(after.values()))
        """
    )
    output = _run_fresh(program)
    assert "before [[False], [False]] after [[True], [True]]" in output


def test_cloudpickle_is_loaded_when_needed_and_by_an_idle_fork_server() -> None:
    """Nothing pickled by value, no cloudpickle in the parent; later workers find it loaded.

    A fresh interpreter, so that no earlier test has loaded it: the fork
    server loads it once idle (not before its first workers), and a worker
    it forks after that has it before its first task. With one task per
    worker, each task's worker is forked as the one before retires: the
    third is forked after the server has been idle.
    """
    program = textwrap.dedent(
        """
        import sys, time
        import corepool, tasks
        with corepool.Pool(1, max_tasks_per_worker=1) as pool:
            pool.submit(abs, -1).result()
            time.sleep(0.5)
            pool.submit(abs, -1).result()
            later = pool.submit(tasks.modules_loaded, ["cloudpickle"]).result()
            print("parent", "cloudpickle" in sys.modules, "later worker", later)
            print("by value", pool.submit(lambda: 2).result(), "cloudpickle" in sys.modules)
        """
    )
    output = _run_fresh(program)
    assert "parent False later worker [True]" in output
    assert "by value 2 True" in output


def _run_fresh(program: str) -> str:
    """Run ``program`` in a fresh interpreter beside the tests' task modules; its output."""
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(tasks.__file__).parent,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
