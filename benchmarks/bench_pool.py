"""Compare corepool with its peers on seven workloads, in the same run.

Cases:
    a  ``x*x`` over a list of 1.5 million ints
    b  30,000 items of ~100 us pure-Python work
    c  400 items of ~10 ms pure-Python work
    d  heavy-tailed durations: ~1 ms items, 1% of them 100x longer
    e  open a pool, run one trivial task, close it
    f  ``imap`` over a 5-million-item generator, with the parent's peak RSS growth
    g  ``x*x`` over ``range(1_500_000)``: case a's work, its input a range

Every contender uses 2 workers and its library's own default start method.
Rounds are interleaved: each round runs every contender once, in a shuffled
order. For a-d and f each pool is opened and warmed up (one small call, so
lazy worker start-up is excluded) before the timed call; e times the whole
open/run/close.

Usage:
    python benchmarks/bench_pool.py [--rounds N] [--cases a,b,c] [--quick]
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import math
import multiprocessing
import platform
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from _harness import (
    attempt,
    case_parser,
    corepool_method,
    exit_if_abandoned,
    fmt,
    joblib_method,
    library_versions,
    loky_method,
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
SEED = 20240611
WARMUP_ITEMS = 8
# multiprocessing.Pool.imap has no automatic chunk size; this is the one the
# brief asks for with a 5-million-item generator (mpire and loky get it too).
IMAP_CHUNKSIZE = 10_000
# Items in cases a, b, c, d, f.
FULL_SIZES = (1_500_000, 30_000, 400, 1_750, 5_000_000)
QUICK_SIZES = (150_000, 3_000, 40, 200, 500_000)
PEERS = ("joblib", "loky", "mpire", "psutil")

Fn = Callable[[int], int]


# -- work functions: module level, so that every library can pickle them ------


def square(x: int) -> int:
    """Case a and f: as cheap as a task gets."""
    return x * x


def spin(n: int) -> int:
    """Pure-Python busy work: ``n`` iterations of an int-summing loop."""
    total = 0
    for i in range(n):
        total += i
    return total


def calibrate_spin(target_s: float) -> int:
    """The ``n`` for which ``spin(n)`` takes about ``target_s`` here.

    A first guess from one long call, then two corrections from the best of
    several batches of calls at the guessed size (the best, because another
    process may steal the core for a moment).
    """
    n = 1_000
    while _best_mean(n, calls=1) < 0.02:
        n *= 2
    n = max(1, round(target_s * n / _best_mean(n, calls=1)))
    for _ in range(2):
        calls = max(1, round(0.02 / target_s))
        n = max(1, round(n * target_s / _best_mean(n, calls)))
    return n


def _best_mean(n: int, calls: int, batches: int = 7) -> float:
    best = math.inf
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(calls):
            spin(n)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def spin_expected(items: Sequence[int]) -> list[int]:
    """The results of ``spin`` over ``items``, each distinct input run once."""
    known = {n: spin(n) for n in set(items)}
    return [known[n] for n in items]


# -- contenders ----------------------------------------------------------------


class Runner(Protocol):
    """An opened pool, as one benchmark round uses it."""

    def map(self, fn: Fn, items: Sequence[int]) -> list[int]: ...

    def imap(self, fn: Fn, items: Iterable[int]) -> Iterator[int]: ...

    def close(self) -> None: ...

    def terminate(self) -> None: ...


def docs_chunksize(n: int) -> int:
    """multiprocessing.Pool.map's own rule, ceil(n / (4 * workers))."""
    return max(1, math.ceil(n / (4 * WORKERS)))


class SerialRunner:
    def map(self, fn: Fn, items: Sequence[int]) -> list[int]:
        return [fn(x) for x in items]

    def imap(self, fn: Fn, items: Iterable[int]) -> Iterator[int]:
        return (fn(x) for x in items)

    def close(self) -> None:
        pass

    def terminate(self) -> None:
        pass


class CorepoolRunner:
    """Defaults throughout: adaptive chunk sizes, default start method."""

    def __init__(self) -> None:
        import corepool

        self.pool = corepool.Pool(workers=WORKERS)

    def map(self, fn: Fn, items: Sequence[int]) -> list[int]:
        return self.pool.map(fn, items)

    def imap(self, fn: Fn, items: Iterable[int]) -> Iterator[int]:
        return self.pool.imap(fn, items)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def terminate(self) -> None:
        self.pool.terminate()
        self.pool.join(timeout=10)


class MpPoolRunner:
    """multiprocessing.Pool; ``use_imap`` makes ``map`` go through ``imap``."""

    def __init__(self, use_imap: bool = False) -> None:
        self.pool = multiprocessing.Pool(WORKERS)
        self.use_imap = use_imap

    def map(self, fn: Fn, items: Sequence[int]) -> list[int]:
        if self.use_imap:
            return list(self.pool.imap(fn, items, chunksize=docs_chunksize(len(items))))
        return self.pool.map(fn, items)  # chunksize: its own len / (4 * workers)

    def imap(self, fn: Fn, items: Iterable[int]) -> Iterator[int]:
        return self.pool.imap(fn, items, chunksize=IMAP_CHUNKSIZE)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def terminate(self) -> None:
        self.pool.terminate()
        self.pool.join()


class ProcessPoolRunner:
    """concurrent.futures.ProcessPoolExecutor; its map materialises the input."""

    def __init__(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.executor = ProcessPoolExecutor(WORKERS)

    def map(self, fn: Fn, items: Sequence[int]) -> list[int]:
        return list(self.executor.map(fn, items, chunksize=docs_chunksize(len(items))))

    def imap(self, fn: Fn, items: Iterable[int]) -> Iterator[int]:
        return self.executor.map(fn, items, chunksize=IMAP_CHUNKSIZE)

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    def terminate(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class JoblibRunner:
    """joblib.Parallel (loky backend, batch_size="auto"), kept open with ``with``."""

    def __init__(self) -> None:
        from joblib import Parallel, delayed

        self._delayed = delayed
        self.parallel = Parallel(n_jobs=WORKERS)
        self.parallel.__enter__()
        self.generator: Any = None

    def map(self, fn: Fn, items: Sequence[int]) -> list[int]:
        task = self._delayed(fn)
        return list(self.parallel(task(x) for x in items))

    def imap(self, fn: Fn, items: Iterable[int]) -> Iterator[int]:
        from joblib import Parallel

        if self.generator is None:
            self.generator = Parallel(n_jobs=WORKERS, return_as="generator")
        task = self._delayed(fn)
        return iter(self.generator(task(x) for x in items))

    def close(self) -> None:
        self.parallel.__exit__(None, None, None)

    def terminate(self) -> None:
        self.close()


class LokyRunner:
    """loky's reusable executor: left running after the round, as loky intends."""

    def __init__(self) -> None:
        from loky import get_reusable_executor

        self.executor = get_reusable_executor(max_workers=WORKERS)

    def map(self, fn: Fn, items: Sequence[int]) -> list[int]:
        return list(self.executor.map(fn, items, chunksize=docs_chunksize(len(items))))

    def imap(self, fn: Fn, items: Iterable[int]) -> Iterator[int]:
        return self.executor.map(fn, items, chunksize=IMAP_CHUNKSIZE)

    def close(self) -> None:
        pass

    def terminate(self) -> None:
        self.executor.shutdown(wait=True, kill_workers=True)


class MpireRunner:
    """mpire.WorkerPool with keep_alive=True, so the warm-up's workers are reused."""

    def __init__(self) -> None:
        from mpire import WorkerPool

        self.pool = WorkerPool(n_jobs=WORKERS, keep_alive=True)

    def map(self, fn: Fn, items: Sequence[int]) -> list[int]:
        return self.pool.map(fn, items)  # chunk size: its own len / (64 * workers)

    def imap(self, fn: Fn, items: Iterable[int]) -> Iterator[int]:
        return self.pool.imap(fn, items, chunk_size=IMAP_CHUNKSIZE)

    def close(self) -> None:
        self.pool.stop_and_join()

    def terminate(self) -> None:
        self.pool.terminate()


# One trivial task in a pool opened and closed for it (case e).


def once_corepool() -> None:
    import corepool

    with corepool.Pool(workers=WORKERS) as pool:
        pool.submit(square, 3).result()


def once_mp_pool() -> None:
    pool = multiprocessing.Pool(WORKERS)
    try:
        pool.apply(square, (3,))
    finally:
        pool.close()
        pool.join()


def once_process_pool() -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(WORKERS) as executor:
        executor.submit(square, 3).result()


def once_joblib() -> None:
    from joblib import Parallel, delayed

    Parallel(n_jobs=WORKERS)([delayed(square)(3)])


def once_loky() -> None:
    from loky import get_reusable_executor

    get_reusable_executor(max_workers=WORKERS).submit(square, 3).result()


def once_mpire() -> None:
    from mpire import WorkerPool

    with WorkerPool(n_jobs=WORKERS) as pool:
        pool.apply(square, (3,))


@dataclass(frozen=True)
class Contender:
    name: str
    start_method: Callable[[], str]
    open: Callable[[], Runner] | None = None
    once: Callable[[], None] | None = None
    imap: bool = False  # takes part in case f


SERIAL = Contender("serial", lambda: "-", open=SerialRunner)
CONTENDERS: tuple[Contender, ...] = (
    Contender(
        "corepool",
        safe_start_method(partial(corepool_method, WORKERS)),
        CorepoolRunner,
        once_corepool,
        imap=True,
    ),
    Contender("mp.Pool.map", safe_start_method(mp_method), MpPoolRunner, once_mp_pool),
    Contender(
        "mp.Pool.imap", safe_start_method(mp_method), lambda: MpPoolRunner(use_imap=True), imap=True
    ),
    Contender(
        "ProcessPoolExecutor",
        safe_start_method(mp_method),
        ProcessPoolRunner,
        once_process_pool,
        imap=True,
    ),
    Contender("joblib", safe_start_method(joblib_method), JoblibRunner, once_joblib, imap=True),
    Contender("loky", safe_start_method(loky_method), LokyRunner, once_loky, imap=True),
    Contender("mpire", safe_start_method(mpire_method), MpireRunner, once_mpire, imap=True),
)


# -- measuring -----------------------------------------------------------------


class RssSampler:
    """Samples this process's RSS every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self.interval = interval
        self.start_rss = self._process.memory_info().rss
        self.peak_rss = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    def stop(self) -> float:
        """Stop sampling; return the peak increase over the start, in MiB."""
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
        return (self.peak_rss - self.start_rss) / 2**20


@dataclass
class Result:
    contender: Contender
    times: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan


@dataclass(frozen=True)
class Config:
    rounds: int
    timeout: float
    a_items: int
    b_items: int
    c_items: int
    d_items: int
    f_items: int


def run_rounds(
    cfg: Config, contenders: Sequence[Contender], one_run: Callable[[Contender], float]
) -> list[Result]:
    """Run every contender once per round, in a shuffled order; a failure skips the rest."""
    results = {c.name: Result(c) for c in contenders}
    for round_no in range(cfg.rounds):
        for contender in shuffled(contenders, SEED + round_no):
            result = results[contender.name]
            if result.error is not None:
                continue
            gc.collect()
            result.error = attempt(
                contender.name, round_no, cfg.timeout, partial(one_run, contender), result.times
            )
        print(f"  round {round_no + 1}/{cfg.rounds} done", flush=True)
    return [results[c.name] for c in contenders]


def runner_opener(contender: Contender) -> Callable[[], Runner]:
    """The contender's pool opener (it must have one)."""
    assert contender.open is not None
    return contender.open


def time_map(contender: Contender, fn: Fn, items: Sequence[int], expected: list[int]) -> float:
    """Open, warm up, time one ``map`` of ``items``, close; check the results."""
    with opened(runner_opener(contender)) as runner:
        warm = runner.map(fn, items[:WARMUP_ITEMS])
        if warm != expected[:WARMUP_ITEMS]:
            raise AssertionError("wrong results in the warm-up call")
        start = time.perf_counter()
        out = runner.map(fn, items)
        elapsed = time.perf_counter() - start
    if out != expected:
        raise AssertionError("wrong results")
    return elapsed


def time_imap(contender: Contender, n: int, rss: list[float]) -> float:
    """Open, warm up, time an ``imap`` of ``square`` over a generator; record RSS growth."""
    with opened(runner_opener(contender)) as runner:
        warm = list(runner.imap(square, (i for i in range(WARMUP_ITEMS))))
        if warm != [square(i) for i in range(WARMUP_ITEMS)]:
            raise AssertionError("wrong results in the warm-up call")
        gc.collect()
        sampler = RssSampler()
        start = time.perf_counter()
        try:
            last = collections.deque(runner.imap(square, (i for i in range(n))), maxlen=1)
            elapsed = time.perf_counter() - start
        finally:
            peak = sampler.stop()
    if list(last) != [square(n - 1)]:
        raise AssertionError(f"wrong last result {list(last)}")
    rss.append(peak)
    return elapsed


def time_once(contender: Contender) -> float:
    assert contender.once is not None
    start = time.perf_counter()
    contender.once()
    return time.perf_counter() - start


# -- reporting -----------------------------------------------------------------


def report(
    title: str,
    results: list[Result],
    *,
    serial: Result | None = None,
    efficiency: bool = False,
    rss: bool = False,
) -> str:
    """Print one case's table; return its summary line."""
    print(f"\n{title}")
    core = next((r for r in results if r.contender.name == "corepool"), None)
    core_median = core.median if core is not None else math.nan
    headers = ["contender", "start method", "median s", "min s", "corepool/x"]
    if efficiency:
        headers.append("efficiency")
    if rss:
        headers += ["peak RSS MiB (median)", "(max)"]
    rows = []
    for res in ([serial] if serial is not None else []) + results:
        if not res.times:
            rows.append([res.contender.name, "", f"FAILED: {res.error}"])
            continue
        row = [
            res.contender.name,
            res.contender.start_method(),
            fmt(res.median),
            fmt(min(res.times)),
            fmt(core_median / res.median, 2),
        ]
        if efficiency:
            eff = serial.median / (res.median * WORKERS) if serial is not None else math.nan
            row.append("-" if res is serial else fmt(eff, 2))
        if rss:
            row += [fmt(statistics.median(res.rss_mib), 1), fmt(max(res.rss_mib), 1)]
        if res.error is not None:
            row.append(f"(failed later: {res.error})")
        rows.append(row)
    print_table(headers, [[*r, *([""] * (len(headers) - len(r)))] for r in rows])
    label = title.split(maxsplit=1)[0]
    peers = [r for r in results if r.contender.name != "corepool" and r.times]
    if not peers:
        return f"{label} corepool {fmt(core_median)} s, no peer finished"
    best = min(peers, key=lambda r: r.median)
    return (
        f"{label} corepool {fmt(core_median)} s | best peer {best.contender.name} "
        f"{fmt(best.median)} s | corepool/best {fmt(core_median / best.median, 2)}"
    )


# -- cases ---------------------------------------------------------------------


def map_case(
    cfg: Config,
    title: str,
    fn: Fn,
    items: Sequence[int],
    expected: list[int],
    *,
    efficiency: bool,
) -> str:
    """Serial loop and every pool's ``map`` over ``items``, interleaved."""
    everyone = (SERIAL, *CONTENDERS)
    results = run_rounds(cfg, everyone, lambda c: time_map(c, fn, items, expected))
    serial, *pools = results
    if serial.times:
        title += f"; serial mean {serial.median / len(items) * 1e6:.3g} us/item"
    return report(title, pools, serial=serial, efficiency=efficiency)


def case_a(cfg: Config) -> str:
    items = list(range(cfg.a_items))
    expected = [x * x for x in items]
    title = f"(a) square over a list of {cfg.a_items:,} ints"
    return map_case(cfg, title, square, items, expected, efficiency=False)


def case_g(cfg: Config) -> str:
    items = range(cfg.a_items)
    expected = [x * x for x in items]
    title = f"(g) square over range({cfg.a_items:,})"
    return map_case(cfg, title, square, items, expected, efficiency=False)


def case_b(cfg: Config, spin_100us: int) -> str:
    items = [spin_100us] * cfg.b_items
    title = f"(b) {cfg.b_items:,} items of ~100 us (spin {spin_100us:,})"
    return map_case(cfg, title, spin, items, spin_expected(items), efficiency=True)


def case_c(cfg: Config, spin_100us: int) -> str:
    items = [spin_100us * 100] * cfg.c_items
    title = f"(c) {cfg.c_items:,} items of ~10 ms (spin {spin_100us * 100:,})"
    return map_case(cfg, title, spin, items, spin_expected(items), efficiency=True)


def case_d(cfg: Config, spin_100us: int) -> str:
    rng = random.Random(SEED)
    base = spin_100us * 10  # ~1 ms
    items = [base] * cfg.d_items
    heavy = rng.sample(range(cfg.d_items), k=max(1, cfg.d_items // 100))
    for i in heavy:
        items[i] = base * 100
    title = (
        f"(d) heavy tail: {cfg.d_items:,} items of ~1 ms, {len(heavy)} of them ~100 ms "
        f"(seeded positions)"
    )
    return map_case(cfg, title, spin, items, spin_expected(items), efficiency=True)


def case_e(cfg: Config) -> str:
    contenders = [
        dataclasses.replace(c, name=c.name.removesuffix(".map"))
        for c in CONTENDERS
        if c.once is not None
    ]
    results = run_rounds(cfg, contenders, time_once)
    title = (
        "(e) open a pool, run one trivial task, close it "
        "(joblib, loky: reusable executor, kept warm between calls)"
    )
    return report(title, results)


def case_f(cfg: Config) -> str:
    contenders = [c for c in CONTENDERS if c.imap]
    rss: dict[str, list[float]] = {c.name: [] for c in contenders}
    results = run_rounds(cfg, contenders, lambda c: time_imap(c, cfg.f_items, rss[c.name]))
    for res in results:
        res.rss_mib = rss[res.contender.name]
    title = (
        f"(f) imap of square over a {cfg.f_items:,}-item generator, results dropped "
        f"(chunksize {IMAP_CHUNKSIZE:,} for mp.Pool, ProcessPoolExecutor, loky, mpire; "
        f"joblib return_as='generator'; ProcessPoolExecutor and loky materialise the input)"
    )
    return report(title, results, rss=True)


# -- main ----------------------------------------------------------------------


def print_environment() -> None:
    print(f"Python {platform.python_version()} on {platform.platform()}, {WORKERS} workers")
    print(library_versions(("corepool", *PEERS)))


def parse_args(argv: Sequence[str] | None) -> tuple[Config, list[str]]:
    parser = case_parser(
        __doc__.split("\n\n")[0],
        cases="a,b,c,d,e,f,g",
        example="a,b,c",
        quick_help="fewer items and 2 rounds",
        timeout=300,
    )
    args = parser.parse_args(argv)
    cases = split_cases(parser, args.cases, "abcdefg")
    rounds = quick_rounds(parser, args.rounds, args.quick)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    return Config(rounds, args.timeout, *sizes), cases


def main(argv: Sequence[str] | None = None) -> None:
    cfg, cases = parse_args(argv)
    print_environment()
    spin_100us = 0
    if set(cases) & set("bcd"):
        spin_100us = calibrate_spin(100e-6)
        print(f"calibrated: spin({spin_100us:,}) takes ~100 us here")
    print(f"{cfg.rounds} rounds per case, contenders in a shuffled order each round")
    runs: dict[str, Callable[[], str]] = {
        "a": lambda: case_a(cfg),
        "b": lambda: case_b(cfg, spin_100us),
        "c": lambda: case_c(cfg, spin_100us),
        "d": lambda: case_d(cfg, spin_100us),
        "e": lambda: case_e(cfg),
        "f": lambda: case_f(cfg),
        "g": lambda: case_g(cfg),
    }
    summary = []
    for case in cases:
        summary.append(timed_case(case, runs[case]))
    print("\nSummary (corepool/best < 1 means corepool is faster)")
    for line in summary:
        print(line)
    exit_if_abandoned("pool(s) failed and were abandoned; exiting without them.")


if __name__ == "__main__":
    main()
