"""corepool as joblib's parallel backend: Parallel and scikit-learn's n_jobs on corepool workers.

Real pools throughout. The contract checked is joblib's own (its
``_parallel_backends.py``): results equal to a serial run, a task's exception
keeps its type, the first error aborts the work left, a killed worker fails
the call with ``WorkerDied`` naming the joblib task and leaves the backend
usable, and nothing outlives a ``parallel_config`` block but parked workers.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

joblib = pytest.importorskip(
    "joblib", reason="joblib is in the test extra: pip install -e '.[test]'"
)
np = pytest.importorskip("numpy", reason="numpy is in the test extra: pip install -e '.[test]'")

import psutil  # noqa: E402
from joblib import Parallel, delayed, parallel_config  # noqa: E402

import corepool  # noqa: E402
import corepool.joblib  # noqa: E402
from corepool import _spawn  # noqa: E402
from corepool.options import default_workers  # noqa: E402

corepool.joblib.register()


# -- helpers run in the workers -------------------------------------------------------


class Refused(Exception):
    """An exception of the test's own, to check that its type survives."""


def kill_on(x: int, bad: int) -> int:
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def raise_on(x: int, bad: int) -> int:
    if x == bad:
        raise Refused(f"refused {x}")
    return x


def count_then_sleep(x: int, started: corepool.Value, seconds: float) -> int:
    started.add(1)
    if x == 0:
        raise Refused("the first task fails")
    time.sleep(seconds)
    return x


def segment_of(a: Any) -> tuple[int, float]:
    """The inode of the shared-memory segment ``a`` lives in (0: none), and its sum.

    Each copy of an array into shared memory is a file of its own: the same
    inode in every task means one copy.
    """
    address = a.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, _, _, _, inode, *_ = line.split()
            start, end = (int(bound, 16) for bound in span.split("-"))
            if start <= address < end:
                return int(inode), float(a.sum())
    return 0, float(a.sum())


def is_corepool_worker(pid: int) -> bool:
    """``pid`` is a child of one of corepool's fork servers (not of loky, not this process)."""
    return psutil.Process(pid).ppid() in _spawn.forkserver_pids()


# -- Parallel ---------------------------------------------------------------------------


def test_lambdas_and_arrays_give_the_serial_results(start_method: str) -> None:
    arrays = [np.full(300_000, float(i)) for i in range(6)]  # 2.4 MB: through shared memory
    offset = 7
    with parallel_config(backend="corepool", n_jobs=2, start_method=start_method):
        doubled = Parallel()(delayed(lambda a: a * 2 + offset)(a) for a in arrays)
        sums = Parallel()(delayed(np.sum)(a) for a in arrays)
        squares = Parallel(n_jobs=2)(delayed(lambda x: x * x)(x) for x in range(100))
    for got, a in zip(doubled, arrays, strict=True):
        np.testing.assert_array_equal(got, a * 2 + offset)
    assert sums == [np.sum(a) for a in arrays]
    assert squares == [x * x for x in range(100)]


def test_an_array_given_to_every_batch_is_copied_once_per_call() -> None:
    """As loky maps it once; the next call copies it afresh, changes included.

    One batch at a time (``pre_dispatch=1``): each is sent once the one
    before is done, as a job of its own.
    """
    a = np.ones(2_000_000)  # 16 MB: through shared memory
    with parallel_config(backend="corepool", n_jobs=2):
        first = Parallel(batch_size=1, pre_dispatch=1)(delayed(segment_of)(a) for _ in range(8))
        a *= 3
        second = Parallel(batch_size=1, pre_dispatch=1)(delayed(segment_of)(a) for _ in range(4))
    assert {inode for inode, _ in first} != {0}
    assert len({inode for inode, _ in first}) == 1, first
    assert {total for _, total in first} == {2_000_000.0}
    assert {total for _, total in second} == {6_000_000.0}


def test_workers_are_corepool_workers_reused_across_calls() -> None:
    with parallel_config(backend="corepool", n_jobs=2):
        first = set(Parallel()(delayed(os.getpid)() for _ in range(8)))
        second = set(Parallel()(delayed(os.getpid)() for _ in range(8)))
    assert os.getpid() not in first
    assert all(is_corepool_worker(pid) for pid in first)
    # The first call's pool parked its workers when it closed; the second adopted them.
    assert second == first


def test_a_killed_worker_fails_the_call_naming_the_task_and_the_next_call_works(
    start_method: str,
) -> None:
    with parallel_config(backend="corepool", n_jobs=2, start_method=start_method):
        with pytest.raises(corepool.WorkerDied) as caught:
            Parallel(batch_size=1)(delayed(kill_on)(x, 3) for x in range(8))
        assert Parallel()(delayed(abs)(-x) for x in range(5)) == [0, 1, 2, 3, 4]
    assert caught.value.task_index == 3
    assert caught.value.signal == "SIGKILL"
    assert re.match(
        r"worker \d \(pid \d+\) got SIGKILL in task 3 of Parallel\(kill_on\): kill_on\(3, 3\)\. "
        r".* It was replaced\.",
        str(caught.value),
    )


def test_a_killed_worker_in_a_batch_names_the_batch_and_the_way_to_find_the_task() -> None:
    with (
        parallel_config(backend="corepool", n_jobs=2),
        pytest.raises(
            corepool.WorkerDied,
            match=r"during tasks \d+ to \d+ of Parallel\(kill_on\), "
            r"sent as one joblib batch \(pass batch_size=1 to Parallel",
        ),
    ):
        Parallel(batch_size=4)(delayed(kill_on)(x, 5) for x in range(16))


def test_a_managed_parallel_keeps_its_pool_after_a_worker_died() -> None:
    with parallel_config(backend="corepool"), Parallel(n_jobs=2) as parallel:
        with pytest.raises(corepool.WorkerDied, match=r"task 1 of Parallel\(kill_on\)"):
            parallel(delayed(kill_on)(x, 1) for x in range(4))
        assert parallel(delayed(abs)(-x) for x in range(4)) == [0, 1, 2, 3]


def test_a_task_exception_keeps_its_type_and_names_the_task() -> None:
    with parallel_config(backend="corepool", n_jobs=2), pytest.raises(Refused) as caught:
        Parallel(batch_size=1)(delayed(raise_on)(x, 4) for x in range(10))
    assert str(caught.value) == "refused 4"
    assert isinstance(caught.value.__cause__, corepool.RemoteTraceback)
    if sys.version_info >= (3, 11):
        assert caught.value.__notes__ == ["raised by task 4 of Parallel(raise_on): raise_on(4, 4)"]


def test_the_first_error_aborts_the_work_left() -> None:
    started = corepool.Counter()
    begun = time.monotonic()
    # pre_dispatch="all" hands every batch to the pool at once: abort_everything
    # must cancel those queued and stop those running (they would sleep 20 s).
    with parallel_config(backend="corepool", n_jobs=2), pytest.raises(Refused):
        Parallel(batch_size=1, pre_dispatch="all")(
            delayed(count_then_sleep)(x, started, 20.0) for x in range(40)
        )
    assert time.monotonic() - begun < 10.0
    assert started.value <= 6  # the first task, and those the workers had taken


def test_parallel_timeout_stops_the_running_tasks() -> None:
    begun = time.monotonic()
    # joblib raises multiprocessing's TimeoutError, not the built-in one.
    with parallel_config(backend="corepool", n_jobs=2), pytest.raises(multiprocessing.TimeoutError):
        Parallel(timeout=0.5)(delayed(time.sleep)(20.0) for _ in range(4))
    assert time.monotonic() - begun < 10.0


def test_task_timeout_of_the_backend_names_the_task() -> None:
    with (
        parallel_config(backend="corepool", n_jobs=2, task_timeout=0.5),
        pytest.raises(
            corepool.TaskTimeout,
            match=r"task 1 of Parallel\(sleep\): sleep\(20\.0\) passed task_timeout=0\.5s",
        ),
    ):
        Parallel(batch_size=1)(delayed(time.sleep)(t) for t in (0.0, 20.0))


def test_generators_are_supported() -> None:
    with parallel_config(backend="corepool", n_jobs=2):
        ordered = Parallel(return_as="generator")(delayed(abs)(-x) for x in range(6))
        assert list(ordered) == [0, 1, 2, 3, 4, 5]
        unordered = Parallel(return_as="generator_unordered")(delayed(abs)(-x) for x in range(6))
        assert sorted(unordered) == [0, 1, 2, 3, 4, 5]


# -- n_jobs and options -------------------------------------------------------------------


def test_n_jobs_counts_worker_processes() -> None:
    backend = corepool.joblib.CorepoolBackend()
    cores = default_workers()
    assert backend.effective_n_jobs(-1) == cores
    assert backend.effective_n_jobs(-2) == max(cores - 1, 1)
    assert backend.effective_n_jobs(3) == 3
    with pytest.raises(ValueError, match="n_jobs == 0 in Parallel has no meaning"):
        backend.effective_n_jobs(0)
    with parallel_config(backend="corepool"):
        assert joblib.effective_n_jobs(-1) == cores


def test_one_job_runs_in_this_process() -> None:
    with parallel_config(backend="corepool"):  # n_jobs=None: joblib's default, 1
        assert Parallel()(delayed(os.getpid)() for _ in range(2)) == [os.getpid()] * 2


def test_options_the_backend_does_not_take_are_refused() -> None:
    with pytest.raises(ValueError, match="retries must be an int >= 0, got -1"):
        parallel_config(backend="corepool", retries=-1)
    with (
        parallel_config(backend="corepool", n_jobs=2),
        # joblib 1.4's Parallel refuses it itself; 1.5+ passes it to the backend.
        pytest.raises(
            TypeError,
            match=r"does not take idle_worker_timeout|unexpected keyword argument .idle_worker",
        ),
    ):
        Parallel(idle_worker_timeout=10)(delayed(abs)(x) for x in range(2))


def test_import_corepool_does_not_import_joblib() -> None:
    code = (
        "import sys, corepool, corepool.joblib; "
        "assert 'joblib' not in sys.modules, 'joblib was imported'; "
        "corepool.joblib.register(); assert 'joblib' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- scikit-learn ------------------------------------------------------------------------


def pid_scorer(estimator: Any, features: Any, labels: Any) -> float:
    return float(os.getpid())


def test_scikit_learn_cross_val_score_runs_on_corepool() -> None:
    pytest.importorskip("sklearn", reason="scikit-learn is in the test extra")
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    features, labels = make_classification(n_samples=200, n_features=8, random_state=0)
    model = LogisticRegression(max_iter=200)
    serial = cross_val_score(model, features, labels, cv=4)
    with parallel_config(backend="corepool"):
        scores = cross_val_score(model, features, labels, cv=4, n_jobs=2)
        pids = cross_val_score(model, features, labels, cv=4, n_jobs=2, scoring=pid_scorer)
    np.testing.assert_allclose(scores, serial)
    assert all(is_corepool_worker(int(pid)) for pid in pids)
