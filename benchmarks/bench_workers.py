"""Worker start-up with numpy, and BLAS threads per worker: corepool vs multiprocessing.

Cases:
    a  a fresh 1-worker pool: open it, run one task that uses numpy, close it;
       the time to the first result (and with the close), per start method and
       preload setting. Also corepool's replacement worker: in an open 1-worker
       pool, after a warmed-up numpy task, a task calls ``os._exit(1)`` (the
       caller gets ``corepool.WorkerDied``); then the time until the next numpy
       task returns, which is the replacement worker's start.
    b  2 workers, 32 tasks that each multiply two 1000 x 1000 float64 matrices
       (made in the task from a seed): corepool with its BLAS/OpenMP thread
       limit (``inner_threads=None``: cores // workers per worker) and without
       it (``inner_threads=2``), vs ``multiprocessing.Pool(2)`` (fork, no
       limit), and a serial loop in the parent for reference; with what
       threadpoolctl reports from inside a worker of each.

The parent imports numpy before any pool starts, in ``main()``: the script's
top level imports only the standard library, so that workers of
multiprocessing's spawn and forkserver, which import the script again, get
neither numpy nor corepool from it. Tasks import numpy themselves, which costs
nothing where the worker has it already. corepool's default ``preload=None``
then preloads numpy (the parent has it).

Every corepool pool in case a gets a trivial initializer: a pool with one does
not park its workers on close, so each run starts a fresh process (the
replacement too). Before the timed rounds every contender runs once, untimed
(fork servers start, caches warm up). Rounds are interleaved: each round runs
every contender once, in a shuffled order. Tables give medians, minimums and
corepool/x (< 1: corepool is faster).

multiprocessing runs one fork server per process, and
``set_forkserver_preload`` only reaches a server not yet started; so the
contender "mp forkserver, preload numpy" gets a second ``ForkServer``,
swapped into ``multiprocessing.forkserver``'s module-level names while it runs
(CPython internals, as of 3.10-3.13).

Usage:
    python benchmarks/bench_workers.py [--rounds N] [--cases a,b] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import importlib.metadata
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from _harness import print_table, shuffled, split_cases, timed_case

if TYPE_CHECKING:
    from corepool.options import StartMethod

SEED = 20261125
MATRIX_N = 1000
MATMUL_TASKS = 32
B_WORKERS = 2
ROUNDS = {"a": 10, "b": 5}
QUICK_ROUNDS = {"a": 3, "b": 2}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# -- tasks: module level, with nothing heavy in their globals ------------------


def _noop() -> None:
    """An initializer that does nothing, so that the pool parks no workers."""


def numpy_task() -> float:
    """A task that needs numpy: 3.0."""
    import numpy as np

    return float(np.ones(3).sum())


def crash() -> None:
    """End the worker without a word."""
    os._exit(1)


def matmul_task(seed: int) -> float:
    """The sum of ``a @ b`` for two random ``MATRIX_N`` x ``MATRIX_N`` float64 matrices."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.random((MATRIX_N, MATRIX_N))
    b = rng.random((MATRIX_N, MATRIX_N))
    return float((a @ b).sum())


def blas_report() -> str:
    """What threadpoolctl reports for this process's BLAS, and the thread variables."""
    import numpy  # noqa: F401  # loads BLAS, if not loaded yet
    import threadpoolctl

    pools = [
        f"{info['internal_api']} num_threads={info['num_threads']}"
        for info in threadpoolctl.threadpool_info()
        if info["user_api"] == "blas"
    ]
    variables = ", ".join(f"{name}={os.environ.get(name, '-')}" for name in THREAD_VARIABLES)
    return f"{', '.join(pools) or 'no BLAS found'} ({variables})"


def check(result: float, expected: float) -> None:
    if not math.isclose(result, expected, rel_tol=1e-9):
        raise AssertionError(f"wrong result {result!r}, expected {expected!r}")


# -- case a: contenders --------------------------------------------------------


def corepool_fresh(
    method: StartMethod | None, preload: tuple[str, ...] | None, timeout: float
) -> tuple[float, float]:
    """Open a fresh 1-worker pool, run ``numpy_task``, close: (to the result, to closed)."""
    import corepool

    start = time.perf_counter()
    with corepool.Pool(1, start_method=method, preload=preload, initializer=_noop) as pool:
        result = pool.submit(numpy_task).result(timeout=timeout)
        first = time.perf_counter() - start
    total = time.perf_counter() - start
    check(result, 3.0)
    return first, total


def corepool_replacement(
    method: StartMethod | None, preload: tuple[str, ...] | None, timeout: float
) -> tuple[float, float]:
    """In an open, warm 1-worker pool: (crash -> WorkerDied, WorkerDied -> next result)."""
    import corepool

    with corepool.Pool(1, start_method=method, preload=preload, initializer=_noop) as pool:
        check(pool.submit(numpy_task).result(timeout=timeout), 3.0)
        start = time.perf_counter()
        try:
            pool.submit(crash).result(timeout=timeout)
        except corepool.WorkerDied:
            pass
        else:
            raise AssertionError("the task that calls os._exit(1) returned")
        died = time.perf_counter()
        result = pool.submit(numpy_task).result(timeout=timeout)
        back = time.perf_counter()
    check(result, 3.0)
    return died - start, back - died


def mp_fresh(method: str, timeout: float) -> tuple[float, float]:
    """The same as ``corepool_fresh`` with ``multiprocessing.get_context(method).Pool(1)``."""
    start = time.perf_counter()
    pool = multiprocessing.get_context(method).Pool(1)
    try:
        result = pool.apply_async(numpy_task).get(timeout)
        first = time.perf_counter() - start
        pool.close()
        pool.join()
    except BaseException:
        pool.terminate()
        raise
    total = time.perf_counter() - start
    check(result, 3.0)
    return first, total


class SecondForkServer:
    """A multiprocessing fork server of its own, started with other preloaded modules.

    ``multiprocessing.forkserver`` keeps one ``ForkServer`` and binds its
    methods to module-level names, which ``popen_forkserver`` calls; ``active()``
    points those names at this one for a while.
    """

    NAMES = ("ensure_running", "get_inherited_fds", "connect_to_new_process")

    def __init__(self, modules: list[str]) -> None:
        from multiprocessing import forkserver

        self.server = forkserver.ForkServer()
        self.server.set_forkserver_preload(modules)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        from multiprocessing import forkserver

        saved = {name: getattr(forkserver, name) for name in ("_forkserver", *self.NAMES)}
        forkserver._forkserver = self.server
        for name in self.NAMES:
            setattr(forkserver, name, getattr(self.server, name))
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(forkserver, name, value)


def mp_fresh_preloaded(server: SecondForkServer, timeout: float) -> tuple[float, float]:
    with server.active():
        return mp_fresh("forkserver", timeout)


@dataclass(frozen=True)
class Contender:
    name: str
    note: str  # case a: where the worker's numpy comes from
    run: Callable[[float], tuple[float, float]]


@dataclass
class Result:
    contender: Contender
    first: list[float] = field(default_factory=list)
    second: list[float] = field(default_factory=list)


def run_rounds(rounds: int, contenders: Sequence[Contender], timeout: float) -> list[Result]:
    """One untimed run of each, then ``rounds`` interleaved rounds in a shuffled order.

    A run that takes longer than ``timeout`` seconds dumps every thread's
    traceback and ends the script.
    """
    results = {c.name: Result(c) for c in contenders}
    for round_no in range(-1, rounds):
        for contender in shuffled(contenders, SEED + round_no):
            gc.collect()
            faulthandler.dump_traceback_later(timeout, exit=True)
            try:
                first, second = contender.run(timeout)
            finally:
                faulthandler.cancel_dump_traceback_later()
            if round_no >= 0:
                results[contender.name].first.append(first)
                results[contender.name].second.append(second)
        label = "warm-up" if round_no < 0 else f"round {round_no + 1}/{rounds}"
        print(f"  {label} done", flush=True)
    return [results[c.name] for c in contenders]


# -- reporting -----------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


CORE_FORKSERVER = "corepool forkserver, preload auto (default)"
CORE_FORKSERVER_BARE = "corepool forkserver, preload=()"
CORE_SPAWN = "corepool spawn, preload auto"
CORE_FORK = "corepool fork, preload auto"
MP_FORK = "mp fork"
MP_FORKSERVER = "mp forkserver"
MP_FORKSERVER_NUMPY = 'mp forkserver, set_forkserver_preload(["numpy"])'
MP_SPAWN = "mp spawn"


def case_a(rounds: int, timeout: float) -> list[str]:
    fresh: list[Contender] = []
    replacements: list[Contender] = []
    corepool_setups: list[tuple[str, str, StartMethod, tuple[str, ...] | None]] = [
        (CORE_FORKSERVER, "fork server", "forkserver", None),
        (CORE_FORKSERVER_BARE, "the task's import", "forkserver", ()),
        (CORE_SPAWN, "import at worker start", "spawn", None),
        (CORE_FORK, "the parent (fork)", "fork", None),
    ]
    for name, numpy_from, method, preload in corepool_setups:
        fresh.append(Contender(name, numpy_from, partial(corepool_fresh, method, preload)))
        replacements.append(
            Contender(
                name + " [replacement]",
                numpy_from,
                partial(corepool_replacement, method, preload),
            )
        )
    second_server = SecondForkServer(["numpy"])
    fresh += [
        Contender(MP_FORK, "the parent (fork)", partial(mp_fresh, "fork")),
        Contender(MP_FORKSERVER, "the task's import", partial(mp_fresh, "forkserver")),
        Contender(MP_FORKSERVER_NUMPY, "fork server", partial(mp_fresh_preloaded, second_server)),
        Contender(MP_SPAWN, "the task's import", partial(mp_fresh, "spawn")),
    ]
    results = run_rounds(rounds, fresh + replacements, timeout)
    by_name = {r.contender.name: r for r in results}

    print(f"\n(a) fresh 1-worker pool, one numpy task; {rounds} rounds, milliseconds")
    base = statistics.median(by_name[fresh[0].name].first)
    rows = []
    for c in fresh:
        res = by_name[c.name]
        median = statistics.median(res.first)
        rows.append(
            [
                c.name,
                c.note,
                ms(median),
                ms(min(res.first)),
                f"{base / median:.2f}",
                ms(statistics.median(res.second)),
            ]
        )
    headers = ["contender", "numpy from", "median ms", "min ms", "corepool/x", "with close ms"]
    print_table(headers, rows)

    def median_of(name: str) -> float:
        return statistics.median(by_name[name].first)

    pairs = [
        ("fork", CORE_FORK, MP_FORK),
        ("spawn", CORE_SPAWN, MP_SPAWN),
        ("forkserver, numpy preloaded", CORE_FORKSERVER, MP_FORKSERVER_NUMPY),
        ("forkserver, numpy imported by the task", CORE_FORKSERVER_BARE, MP_FORKSERVER),
    ]
    print("\ncorepool/mp, same start method (to the first result):")
    summary = []
    for label, core, mp in pairs:
        ratio = median_of(core) / median_of(mp)
        line = f"{label}: {ms(median_of(core))} vs {ms(median_of(mp))} ms, {ratio:.2f}"
        print(f"  {line}")
        summary.append(f"(a) {line}")

    print(
        f"\n(a) corepool replacement worker, 1-worker pool; {rounds} rounds, milliseconds:"
        "\n    crash: submit a task calling os._exit(1) -> WorkerDied;"
        "\n    replace: WorkerDied -> the next numpy task's result"
    )
    rows = []
    for c, twin in zip(replacements, fresh[: len(replacements)], strict=True):
        res = by_name[c.name]
        replace = statistics.median(res.second)
        rows.append(
            [
                c.name.removesuffix(" [replacement]"),
                c.note,
                ms(statistics.median(res.first)),
                ms(replace),
                ms(min(res.second)),
                f"{replace / median_of(twin.name):.2f}",
            ]
        )
    headers = [
        "contender",
        "numpy from",
        "crash ms",
        "replace ms",
        "replace min ms",
        "replace/fresh",
    ]
    print_table(headers, rows)
    res = by_name[replacements[0].name]
    summary.append(
        f"(a) corepool default replacement worker: {ms(statistics.median(res.second))} ms "
        f"after WorkerDied ({ms(statistics.median(res.first))} ms crash -> WorkerDied)"
    )
    return summary


# -- case b --------------------------------------------------------------------


def timed_map(run_map: Callable[[list[int]], list[float]], expected: list[float]) -> float:
    check_all(run_map([0, 1]), expected[:2])  # warm-up: numpy and BLAS loaded
    start = time.perf_counter()
    out = run_map(list(range(MATMUL_TASKS)))
    elapsed = time.perf_counter() - start
    check_all(out, expected)
    return elapsed


def check_all(results: list[float], expected: list[float]) -> None:
    if len(results) != len(expected):
        raise AssertionError(f"{len(results)} results, expected {len(expected)}")
    for result, want in zip(results, expected, strict=True):
        check(result, want)


CORE_DEFAULT = "corepool, inner_threads=None (default)"
CORE_TWO = "corepool, inner_threads=2"
MP_POOL = "mp.Pool(2), fork"
SERIAL = "serial loop in the parent"


def case_b(rounds: int, timeout: float) -> list[str]:
    import corepool

    expected = [matmul_task(seed) for seed in range(MATMUL_TASKS)]
    reports: dict[str, str] = {}  # contender -> blas_report() from one of its workers

    def serial(timeout: float) -> tuple[float, float]:
        reports.setdefault(SERIAL, blas_report())
        return timed_map(lambda seeds: [matmul_task(s) for s in seeds], expected), 0.0

    def with_corepool(name: str, inner_threads: int | None, timeout: float) -> tuple[float, float]:
        with corepool.Pool(B_WORKERS, inner_threads=inner_threads) as pool:
            if name not in reports:
                reports[name] = pool.submit(blas_report).result(timeout=timeout)
            elapsed = timed_map(lambda seeds: pool.map(matmul_task, seeds, chunksize=1), expected)
        return elapsed, 0.0

    def with_mp(timeout: float) -> tuple[float, float]:
        pool = multiprocessing.get_context("fork").Pool(B_WORKERS)
        try:
            if MP_POOL not in reports:
                reports[MP_POOL] = pool.apply_async(blas_report).get(timeout)
            elapsed = timed_map(
                lambda seeds: pool.map_async(matmul_task, seeds, chunksize=1).get(timeout),
                expected,
            )
            pool.close()
            pool.join()
        except BaseException:
            pool.terminate()
            raise
        return elapsed, 0.0

    contenders = [
        Contender(CORE_DEFAULT, "", lambda t: with_corepool(CORE_DEFAULT, None, t)),
        Contender(CORE_TWO, "", lambda t: with_corepool(CORE_TWO, 2, t)),
        Contender(MP_POOL, "", with_mp),
        Contender(SERIAL, "", serial),
    ]
    results = run_rounds(rounds, contenders, timeout)

    print(
        f"\n(b) {MATMUL_TASKS} tasks of a {MATRIX_N}x{MATRIX_N} float64 matrix product, "
        f"{B_WORKERS} workers, chunksize 1; {rounds} rounds, seconds"
    )
    medians = {r.contender.name: statistics.median(r.first) for r in results}
    rows = [
        [
            res.contender.name,
            reports[res.contender.name],
            f"{medians[res.contender.name]:.3f}",
            f"{min(res.first):.3f}",
            f"{medians[CORE_DEFAULT] / medians[res.contender.name]:.2f}",
        ]
        for res in results
    ]
    headers = ["contender", "BLAS in a worker (threadpoolctl)", "median s", "min s", "corepool/x"]
    print_table(headers, rows)
    return [
        f"(b) corepool default {medians[CORE_DEFAULT]:.3f} s | inner_threads=2 "
        f"{medians[CORE_TWO]:.3f} s ({medians[CORE_DEFAULT] / medians[CORE_TWO]:.2f}) | "
        f"mp.Pool {medians[MP_POOL]:.3f} s ({medians[CORE_DEFAULT] / medians[MP_POOL]:.2f}) | "
        f"serial {medians[SERIAL]:.3f} s"
    ]


# -- main ----------------------------------------------------------------------


def print_environment() -> None:
    print(f"Python {platform.python_version()} on {platform.platform()}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{cores} usable cores, load average {load}")
    versions = [
        f"{n} {importlib.metadata.version(n)}" for n in ("corepool", "numpy", "threadpoolctl")
    ]
    print("; ".join(versions))


def parse_args(argv: Sequence[str] | None) -> tuple[dict[str, int], list[str], float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, help="rounds per case (default a 10, b 5; --quick 3 and 2)"
    )
    parser.add_argument("--cases", default="a,b", help="comma-separated, e.g. a")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (3 and 2)")
    parser.add_argument(
        "--timeout", type=float, default=120, help="seconds one run may take, else abort"
    )
    args = parser.parse_args(argv)
    cases = split_cases(parser, args.cases, ROUNDS)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    defaults = QUICK_ROUNDS if args.quick else ROUNDS
    rounds = {case: args.rounds or defaults[case] for case in ROUNDS}
    return rounds, cases, args.timeout


def main(argv: Sequence[str] | None = None) -> None:
    rounds, cases, timeout = parse_args(argv)
    import numpy  # noqa: F401  # the parent has numpy, as the cases assume

    import corepool

    print_environment()
    preload = corepool.PoolOptions(workers=1).resolved_preload
    print(f"corepool preload=None resolves to {preload} here; parent BLAS: {blas_report()}")
    runs: dict[str, Callable[[], list[str]]] = {
        "a": lambda: case_a(rounds["a"], timeout),
        "b": lambda: case_b(rounds["b"], timeout),
    }
    summary = []
    for case in cases:
        summary += timed_case(case, runs[case])
    print("\nSummary (corepool/x < 1 means corepool is faster)")
    for line in summary:
        print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
