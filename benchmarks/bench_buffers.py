"""Compare corepool with its peers on large-data transfer, in the same run.

Cases:
    a  a 50 MB float64 array sent with each of 40 tasks; each sums its 1/40 slice
    b  40 tasks that each return a fresh 20 MB float64 array; the caller keeps all 40
    c  a 200 MB read-only array needed by 400 tasks of ~5 ms of numpy work each:
       corepool loading it once per worker (``shared=``; pool creation and loading
       are timed), corepool and every peer receiving it as a per-task argument, and
       the ideal (serial time / 2)
    d  this machine's memory bandwidth: ``np.copyto`` of 1 GB (median of at least
       5 copies), the physical limit

Contenders: a serial loop, corepool, multiprocessing.Pool, ProcessPoolExecutor,
joblib.Parallel (loky backend) and mpire.WorkerPool, each with 2 workers and its
library's own default start method. multiprocessing.Pool.map and mpire use their
own chunk sizes; ProcessPoolExecutor.map gets multiprocessing's rule,
ceil(n / (4 * workers)) (its default, 1, would pickle the array once per task);
joblib keeps its defaults, which memory-map arrays over 1 MB into a temporary
folder. mpire unpacks tuple arguments, so each of its items goes in a 1-tuple,
and it gets concatenate_numpy_output=False, so that b's results stay a list.

Rounds are interleaved: each round runs every contender once, in a shuffled
order. Each pool is opened and warmed up (one small call that imports numpy in
the workers) before the timed call, except corepool's load-once contender in
c, whose time runs from creating the pool to the last result. The serial
loop counts as a peer in "faster than the best peer". A contender whose runs
in one case add up to more than ``--cap`` seconds (default 30) gets no more
rounds in that case; its table row says so.

Usage:
    python benchmarks/bench_buffers.py [--rounds N] [--cases a,b,c,d] [--quick]
"""

from __future__ import annotations

import functools
import gc
import math
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from _harness import (
    attempt,
    case_parser,
    corepool_method,
    exit_if_abandoned,
    fmt,
    joblib_method,
    library_versions,
    mp_method,
    mpire_method,
    opened,
    print_table,
    quick_rounds,
    safe_start_method,
    shuffled,
    split_cases,
    timed_case,
)

WORKERS = 2
SEED = 20261125
WARMUP_ITEMS = 4
A_TASKS = 40
B_TASKS = 40
C_TASK_S = 5e-3  # the calibrated duration of one task in case c
C_PASSES = 4  # np.sqrt passes over its slice per task in case c
PEERS = ("numpy", "joblib", "loky", "mpire")
MB = 1_000_000

Array = npt.NDArray[np.float64]
Fn = Callable[[Any], Any]


@dataclass(frozen=True)
class Sizes:
    a_elems: int  # float64 elements of case a's array
    b_elems: int  # float64 elements of each result in case b
    c_elems: int  # float64 elements of case c's object
    c_tasks: int
    d_elems: int  # float64 elements copied in case d


FULL_SIZES = Sizes(6_250_000, 2_500_000, 25_000_000, 400, 125_000_000)
QUICK_SIZES = Sizes(625_000, 250_000, 2_500_000, 40, 12_500_000)


# -- work functions: module level, so that every library can pickle them ------


def touch_numpy(i: int) -> float:
    """The warm-up task: makes the worker import numpy."""
    return float(np.float64(i) * 2)


def slice_sum(arg: tuple[Array, int]) -> float:
    """Case a: the sum of the ``i``-th of ``A_TASKS`` slices of the array."""
    array, i = arg
    n = len(array)
    return float(array[i * n // A_TASKS : (i + 1) * n // A_TASKS].sum())


def fresh_array(i: int, *, elems: int) -> Array:
    """Case b: a new array of ``elems`` copies of ``i``."""
    return np.full(elems, i, dtype=np.float64)


def _c_start(i: int, total: int, length: int) -> int:
    return (i * length) % (total - length + 1)


def sqrt_work(array: Array, i: int, length: int, passes: int) -> float:
    """Case c's task: ``passes`` of np.sqrt over the ``i``-th slice of ``length`` elements.

    The slices walk over the whole array (wrapping), so the tasks read all of it.
    """
    start = _c_start(i, len(array), length)
    part = array[start : start + length]
    out = np.empty(length, dtype=np.float64)
    for _ in range(passes):
        np.sqrt(part, out=out)
    return float(out[0]) + float(out[-1])


def sqrt_task(arg: tuple[Array, int], *, length: int, passes: int) -> float:
    """Case c, the object sent with every task."""
    array, i = arg
    return sqrt_work(array, i, length, passes)


def sqrt_shared_task(i: int, *, length: int, passes: int) -> float:
    """Case c, the object loaded once per worker with ``corepool.Pool(shared=...)``."""
    import corepool

    array: Array = corepool.worker_state()["obj"]
    return sqrt_work(array, i, length, passes)


def sqrt_expected(array: Array, tasks: int, length: int) -> list[float]:
    """What ``sqrt_work`` returns for each task (sqrt is correctly rounded: exact)."""
    out = []
    for i in range(tasks):
        start = _c_start(i, len(array), length)
        out.append(math.sqrt(array[start]) + math.sqrt(array[start + length - 1]))
    return out


def calibrate_sqrt(array: Array, target_s: float, passes: int) -> int:
    """The slice length for which ``sqrt_work`` takes about ``target_s`` here.

    A first guess from growing lengths, then two corrections from the best of
    several calls (the best, because another process may steal the core).
    """
    length = 10_000
    while length < len(array) and _best_time(array, length, passes) < target_s / 4:
        length *= 2
    for _ in range(3):
        length = round(length * target_s / _best_time(array, length, passes))
        length = max(1_000, min(length, len(array)))
    return length


def _best_time(array: Array, length: int, passes: int, calls: int = 7) -> float:
    best = math.inf
    for i in range(calls):
        start = time.perf_counter()
        sqrt_work(array, i, length, passes)
        best = min(best, time.perf_counter() - start)
    return best


# -- contenders ----------------------------------------------------------------


class Runner(Protocol):
    """An opened pool, as one benchmark round uses it."""

    def map(self, fn: Fn, items: list[Any]) -> list[Any]: ...

    def close(self) -> None: ...

    def terminate(self) -> None: ...


def docs_chunksize(n: int) -> int:
    """multiprocessing.Pool.map's own rule, ceil(n / (4 * workers))."""
    return max(1, math.ceil(n / (4 * WORKERS)))


class SerialRunner:
    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        return [fn(x) for x in items]

    def close(self) -> None:
        pass

    def terminate(self) -> None:
        pass


class CorepoolRunner:
    """Defaults throughout (buffers of 1 MiB or more through shared memory)."""

    def __init__(self, shared: dict[str, Any] | None = None) -> None:
        import corepool

        self.pool = corepool.Pool(WORKERS, shared=shared)

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        return self.pool.map(fn, items)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def terminate(self) -> None:
        self.pool.terminate()
        self.pool.join(timeout=10)


class MpPoolRunner:
    def __init__(self) -> None:
        self.pool = multiprocessing.Pool(WORKERS)

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        return self.pool.map(fn, items)  # chunksize: its own len / (4 * workers)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def terminate(self) -> None:
        self.pool.terminate()
        self.pool.join()


class ProcessPoolRunner:
    def __init__(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.executor = ProcessPoolExecutor(WORKERS)

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        return list(self.executor.map(fn, items, chunksize=docs_chunksize(len(items))))

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    def terminate(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class JoblibRunner:
    """joblib.Parallel (loky backend, its defaults), kept open with ``with``."""

    def __init__(self) -> None:
        from joblib import Parallel, delayed

        self._delayed = delayed
        self.parallel = Parallel(n_jobs=WORKERS)
        self.parallel.__enter__()

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        task = self._delayed(fn)
        return list(self.parallel(task(x) for x in items))

    def close(self) -> None:
        self.parallel.__exit__(None, None, None)

    def terminate(self) -> None:
        self.close()


class MpireRunner:
    """mpire.WorkerPool with keep_alive=True, so the warm-up's workers are reused."""

    def __init__(self) -> None:
        from mpire import WorkerPool

        self.pool = WorkerPool(n_jobs=WORKERS, keep_alive=True)

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        # mpire calls fn(*item) on a tuple: wrap each item so fn gets it whole;
        # and it would concatenate numpy results into one array: keep a list.
        # Chunk size: its own, len / (64 * workers).
        return self.pool.map(fn, [(x,) for x in items], concatenate_numpy_output=False)

    def close(self) -> None:
        self.pool.stop_and_join()

    def terminate(self) -> None:
        self.pool.terminate()


@dataclass(frozen=True)
class Contender:
    name: str
    start_method: Callable[[], str]
    open: Callable[[], Runner]
    corepool: bool = False


SERIAL = Contender("serial", lambda: "-", SerialRunner)
COREPOOL = Contender(
    "corepool",
    safe_start_method(functools.partial(corepool_method, WORKERS)),
    CorepoolRunner,
    corepool=True,
)
PEER_POOLS: tuple[Contender, ...] = (
    Contender("mp.Pool", safe_start_method(mp_method), MpPoolRunner),
    Contender("ProcessPoolExecutor", safe_start_method(mp_method), ProcessPoolRunner),
    Contender("joblib", safe_start_method(joblib_method), JoblibRunner),
    Contender("mpire", safe_start_method(mpire_method), MpireRunner),
)


# -- measuring -----------------------------------------------------------------


@dataclass
class Result:
    contender: Contender
    times: list[float] = field(default_factory=list)
    wall: float = 0.0  # seconds of all its runs, opening and closing included
    capped: bool = False
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan


@dataclass(frozen=True)
class Config:
    rounds: int
    timeout: float
    cap: float
    sizes: Sizes


def run_rounds(
    cfg: Config, contenders: Sequence[Contender], one_run: Callable[[Contender], float]
) -> list[Result]:
    """Run every contender once per round, in a shuffled order.

    A failure skips the contender's later rounds; so does passing ``cfg.cap``
    seconds of runs (after at least one round).
    """
    results = {c.name: Result(c) for c in contenders}
    for round_no in range(cfg.rounds):
        for contender in shuffled(contenders, SEED + round_no):
            result = results[contender.name]
            if result.error is not None or result.capped:
                continue
            gc.collect()
            start = time.perf_counter()
            result.error = attempt(
                contender.name,
                round_no,
                cfg.timeout,
                functools.partial(one_run, contender),
                result.times,
                show_traceback=True,
            )
            result.wall += time.perf_counter() - start
            if cfg.cap > 0 and result.wall > cfg.cap and round_no + 1 < cfg.rounds:
                result.capped = True
        print(f"  round {round_no + 1}/{cfg.rounds} done", flush=True)
    return [results[c.name] for c in contenders]


@dataclass(frozen=True)
class Timing:
    call: float  # the timed call alone
    total: float  # opening the pool, the warm-up and the timed call


def time_map(
    open_pool: Callable[[], Runner],
    fn: Fn,
    items: list[Any],
    check: Callable[[list[Any]], None],
    probe: Callable[[list[Any]], object] | None = None,
) -> Timing:
    """Open, warm up, time one ``map`` (and ``probe`` of its results), close; ``check``."""
    start = time.perf_counter()
    with opened(open_pool) as runner:
        warm = runner.map(touch_numpy, list(range(WARMUP_ITEMS)))
        if warm != [touch_numpy(i) for i in range(WARMUP_ITEMS)]:
            raise AssertionError(f"wrong results in the warm-up call: {warm}")
        call_start = time.perf_counter()
        out = runner.map(fn, items)
        if probe is not None:
            probe(out)
        end = time.perf_counter()
    check(out)
    return Timing(call=end - call_start, total=end - start)


# -- reporting -----------------------------------------------------------------


def report(title: str, results: list[Result], core: Result, cfg: Config) -> None:
    """Print one case's table: median and min seconds, corepool's median / each median."""
    print(f"\n{title}")
    headers = ["contender", "start method", "median s", "min s", "corepool/x", "note"]
    rows = []
    for res in results:
        if not res.times:
            rows.append([res.contender.name, "", "FAILED", "", "", res.error or ""])
            continue
        notes = []
        if res.capped:
            notes.append(f"capped: {len(res.times)} of {cfg.rounds} rounds (over {cfg.cap:g} s)")
        if res.error is not None:
            notes.append(f"failed later: {res.error}")
        rows.append(
            [
                res.contender.name,
                res.contender.start_method(),
                fmt(res.median),
                fmt(min(res.times)),
                fmt(core.median / res.median, 2),
                "; ".join(notes),
            ]
        )
    print_table(headers, rows)


def best_peer(results: list[Result]) -> Result | None:
    peers = [r for r in results if not r.contender.corepool and r.times]
    return min(peers, key=lambda r: r.median) if peers else None


def target_line(label: str, met: bool | None, detail: str) -> str:
    verdict = "n/a" if met is None else ("met" if met else "NOT met")
    return f"{label}: {verdict} ({detail})"


def beats_best_peer(label: str, core: Result, results: list[Result]) -> str:
    """The target line "faster than the best peer" (the serial loop counts as a peer)."""
    best = best_peer(results)
    if best is None or not core.times:
        return target_line(f"{label} corepool faster than the best peer", None, "no data")
    detail = (
        f"corepool {fmt(core.median)} s vs {best.contender.name} {fmt(best.median)} s, "
        f"corepool/best {fmt(core.median / best.median, 2)}"
    )
    if best.contender is SERIAL:
        pool = best_peer([r for r in results if r.contender is not SERIAL])
        if pool is not None:
            detail += (
                f"; best pool {pool.contender.name} {fmt(pool.median)} s, "
                f"corepool/{pool.contender.name} {fmt(core.median / pool.median, 2)}"
            )
    return target_line(
        f"{label} corepool faster than the best peer", core.median < best.median, detail
    )


# -- cases ---------------------------------------------------------------------


def case_a(cfg: Config) -> list[str]:
    array = (np.arange(cfg.sizes.a_elems) % 1000).astype(np.float64)  # exact sums
    items = [(array, i) for i in range(A_TASKS)]
    expected = [slice_sum(item) for item in items]

    def check(out: list[Any]) -> None:
        if out != expected:
            raise AssertionError("wrong results")

    contenders = (SERIAL, COREPOOL, *PEER_POOLS)
    results = run_rounds(cfg, contenders, lambda c: time_map(c.open, slice_sum, items, check).call)
    title = (
        f"(a) a {array.nbytes / MB:g} MB float64 array sent with each of {A_TASKS} tasks, "
        f"each sums its 1/{A_TASKS} slice"
    )
    core = results[1]
    report(title, results, core, cfg)
    mp = next(r for r in results if r.contender.name == "mp.Pool")
    speedup = mp.median / core.median
    return [
        target_line(
            "(a) corepool >= 20x faster than mp.Pool",
            None if math.isnan(speedup) else speedup >= 20,
            f"mp.Pool {fmt(mp.median)} s / corepool {fmt(core.median)} s = {fmt(speedup, 1)}x",
        ),
        beats_best_peer("(a)", core, results),
    ]


def case_b(cfg: Config) -> list[str]:
    elems = cfg.sizes.b_elems
    fn = functools.partial(fresh_array, elems=elems)
    items = list(range(B_TASKS))

    def probe(out: list[Any]) -> object:
        if out[-1][elems // 2] != B_TASKS - 1:
            raise AssertionError(f"wrong value {out[-1][elems // 2]}")
        return None

    def check(out: list[Any]) -> None:
        if len(out) != B_TASKS:
            raise AssertionError(f"{len(out)} results")
        for i, arr in enumerate(out):
            if arr.shape != (elems,) or arr[0] != i or arr[-1] != i:
                raise AssertionError(f"wrong result {i}")

    contenders = (SERIAL, COREPOOL, *PEER_POOLS)
    results = run_rounds(cfg, contenders, lambda c: time_map(c.open, fn, items, check, probe).call)
    title = (
        f"(b) {B_TASKS} tasks each return a fresh {elems * 8 / MB:g} MB float64 array; "
        f"the caller keeps all {B_TASKS} and reads one value"
    )
    core = results[1]
    report(title, results, core, cfg)
    serial = results[0]
    return [
        target_line(
            "(b) corepool faster than the serial loop",
            None if not (core.times and serial.times) else core.median < serial.median,
            f"corepool {fmt(core.median)} s vs serial {fmt(serial.median)} s, "
            f"corepool/serial {fmt(core.median / serial.median, 2)}",
        ),
        beats_best_peer("(b)", core, results),
    ]


def case_c(cfg: Config) -> list[str]:
    tasks = cfg.sizes.c_tasks
    obj = np.arange(cfg.sizes.c_elems, dtype=np.float64)
    length = calibrate_sqrt(obj, C_TASK_S, C_PASSES)
    print(
        f"calibrated: {C_PASSES} np.sqrt passes over {length:,} elements take "
        f"~{C_TASK_S * 1e3:g} ms here"
    )
    per_task_fn = functools.partial(sqrt_task, length=length, passes=C_PASSES)
    shared_fn = functools.partial(sqrt_shared_task, length=length, passes=C_PASSES)
    per_task_items = [(obj, i) for i in range(tasks)]
    expected = sqrt_expected(obj, tasks, length)

    def check(out: list[Any]) -> None:
        if out != expected:
            raise AssertionError("wrong results")

    load_once = Contender(
        "corepool load-once",
        COREPOOL.start_method,
        lambda: CorepoolRunner(shared={"obj": obj}),
        corepool=True,
    )
    per_task = Contender("corepool per-task", COREPOOL.start_method, CorepoolRunner, True)
    load_once_calls: list[float] = []

    def one_run(contender: Contender) -> float:
        if contender is load_once:
            timing = time_map(contender.open, shared_fn, list(range(tasks)), check)
            load_once_calls.append(timing.call)
            return timing.total
        return time_map(contender.open, per_task_fn, per_task_items, check).call

    contenders = (SERIAL, load_once, per_task, *PEER_POOLS)
    results = run_rounds(cfg, contenders, one_run)
    serial, core = results[0], results[1]
    call_only = Result(
        Contender("  (its map call alone)", COREPOOL.start_method, CorepoolRunner, True),
        load_once_calls,
    )
    ideal = Result(Contender("ideal (serial / 2)", lambda: "-", SerialRunner), [])
    ideal_s = serial.median / WORKERS
    ideal.times = [ideal_s] if serial.times else []
    title = (
        f"(c) a {obj.nbytes / MB:g} MB read-only array needed by {tasks} tasks of "
        f"~{C_TASK_S * 1e3:g} ms; corepool/x is load-once (pool creation, loading, "
        f"warm-up and call) / x"
    )
    report(title, [serial, core, call_only, *results[2:], ideal], core, cfg)
    ratio = core.median / ideal_s
    print(f"corepool load-once / ideal: {fmt(ratio, 2)}")
    return [
        target_line(
            "(c) corepool load-once within 15% of ideal",
            None if math.isnan(ratio) else ratio <= 1.15,
            f"load-once {fmt(core.median)} s vs ideal {fmt(ideal_s)} s, ratio {fmt(ratio, 2)}",
        ),
        beats_best_peer("(c)", core, [serial, *results[3:]]),
    ]


def case_d(cfg: Config) -> list[str]:
    src = np.ones(cfg.sizes.d_elems, dtype=np.float64)
    dst = np.zeros_like(src)  # zeros_like may not touch the pages: copy once first
    np.copyto(dst, src)
    times = []
    for _ in range(max(cfg.rounds, 5)):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    nbytes = src.nbytes
    median = statistics.median(times)
    print(f"\n(d) memory bandwidth: np.copyto of {nbytes / MB:g} MB into a preallocated array")
    print_table(
        ["copy", "", "median s", "min s", "GB/s (median)", "GB/s (best)"],
        [
            [
                f"{nbytes / MB:g} MB",
                f"{len(times)} rounds",
                fmt(median),
                fmt(min(times)),
                fmt(nbytes / median / 1e9, 1),
                fmt(nbytes / min(times) / 1e9, 1),
            ]
        ],
    )
    rate = nbytes / median
    sizes = cfg.sizes
    floors = [
        ("(a) one copy of the array", sizes.a_elems * 8),
        ("(b) one copy of all results", sizes.b_elems * 8 * B_TASKS),
        ("(c) one copy of the object", sizes.c_elems * 8),
    ]
    print("at this rate (bytes copied, each read once and written once):")
    for label, size in floors:
        print(f"  {label} ({size / MB:g} MB): {fmt(size / rate)} s")
    return [f"(d) memory bandwidth (copy): {fmt(rate / 1e9, 1)} GB/s, the physical limit"]


# -- main ----------------------------------------------------------------------


def print_environment() -> None:
    print(
        f"Python {platform.python_version()} on {platform.platform()}, "
        f"{os.cpu_count()} cores, {WORKERS} workers"
    )
    print(library_versions(("corepool", *PEERS)))


def parse_args(argv: Sequence[str] | None) -> tuple[Config, list[str]]:
    parser = case_parser(
        __doc__.split("\n\n")[0],
        cases="a,b,c,d",
        example="a,c",
        quick_help="smaller sizes and 2 rounds",
        timeout=300,
    )
    parser.add_argument(
        "--cap",
        type=float,
        default=30,
        help="seconds of runs after which a contender stops early in a case (0: never)",
    )
    args = parser.parse_args(argv)
    cases = split_cases(parser, args.cases, "abcd")
    rounds = quick_rounds(parser, args.rounds, args.quick)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    return Config(rounds, args.timeout, args.cap, sizes), cases


def main(argv: Sequence[str] | None = None) -> None:
    cfg, cases = parse_args(argv)
    print_environment()
    print(f"{cfg.rounds} rounds per case, contenders in a shuffled order each round")
    runs: dict[str, Callable[[Config], list[str]]] = {
        "a": case_a,
        "b": case_b,
        "c": case_c,
        "d": case_d,
    }
    summary = []
    for case in cases:
        summary += timed_case(case, functools.partial(runs[case], cfg))
    print("\nTargets (corepool/x < 1 means corepool is faster)")
    for line in summary:
        print(line)
    exit_if_abandoned("pool(s) failed and were abandoned; exiting without them.")


if __name__ == "__main__":
    main()
