"""One task at a time, many pending: ``submit`` throughput against its peers, in the same run.

Cases:
    a  submit N trivial tasks one by one, then collect every result: tasks/s
       end to end, and the parent's peak RSS, at each N of ``--pending``
    b  ``map`` of 50,000 trivial tasks with an explicit ``chunksize=1``, as
       tutorials write it: tasks/s

Each run happens in a fresh interpreter (so that peak RSS is the run's own),
with 2 workers and each library's default start method; the pool is opened
and warmed up (one task) before the clock starts. Rounds are interleaved:
each round runs every contender once, in a shuffled order. A run that has not
finished within ``--timeout`` seconds is stopped and reported as such.

Usage:
    python benchmarks/bench_submit.py [--rounds N] [--cases a,b] [--pending 1000,100000]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _harness import case_parser, fmt, library_versions, print_table, quick_rounds, shuffled

WORKERS = 2
SEED = 20261127
MAP_ITEMS = 50_000
PEERS = ("loky", "pebble")


def noop(x: int) -> int:
    """The trivial task: the cost measured is the pool's own."""
    return x


# -- one run, in a child interpreter -----------------------------------------


def _mp_apply_async(n: int) -> None:
    import multiprocessing

    with multiprocessing.Pool(WORKERS) as pool:
        pool.apply_async(noop, (0,)).get()
        start = time.perf_counter()
        handles = [pool.apply_async(noop, (i,)) for i in range(n)]
        for handle in handles:
            handle.get()
        _report(time.perf_counter() - start)


def _ppe_submit(n: int) -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(WORKERS) as executor:
        executor.submit(noop, 0).result()
        _clock_futures_started(lambda: [executor.submit(noop, i) for i in range(n)])


def _loky_submit(n: int) -> None:
    from loky import get_reusable_executor

    executor = get_reusable_executor(WORKERS)
    executor.submit(noop, 0).result()
    _clock_futures_started(lambda: [executor.submit(noop, i) for i in range(n)])
    executor.shutdown()


def _pebble_schedule(n: int) -> None:
    from pebble import ProcessPool

    with ProcessPool(WORKERS) as pool:
        pool.schedule(noop, (0,)).result()
        _clock_futures_started(lambda: [pool.schedule(noop, (i,)) for i in range(n)])


def _corepool_map1(n: int) -> None:
    import corepool

    _time_map1(corepool.Pool(WORKERS), n)


def _mp_map1(n: int) -> None:
    import multiprocessing

    _time_map1(multiprocessing.Pool(WORKERS), n)


def _time_map1(pool: Any, n: int) -> None:
    """Time ``pool.map(noop, range(n), chunksize=1)`` after a warm-up, then close the pool."""
    with pool:
        pool.map(noop, range(8), chunksize=1)
        start = time.perf_counter()
        pool.map(noop, range(n), chunksize=1)
        _report(time.perf_counter() - start)


def _clock_futures_started(submit_all: Callable[[], list[Any]]) -> None:
    start = time.perf_counter()
    for future in submit_all():
        future.result()
    _report(time.perf_counter() - start)


def _corepool_submit_timed(n: int) -> None:
    import corepool

    with corepool.Pool(WORKERS) as pool:
        pool.submit(noop, 0).result()
        _clock_futures_started(lambda: [pool.submit(noop, i) for i in range(n)])


def _report(seconds: float) -> None:
    import resource

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024}))


RUNS: dict[str, dict[str, Callable[[int], None]]] = {
    "a": {
        "corepool.submit": _corepool_submit_timed,
        "mp.Pool.apply_async": _mp_apply_async,
        "ProcessPoolExecutor.submit": _ppe_submit,
        "loky.submit": _loky_submit,
        "pebble.schedule": _pebble_schedule,
    },
    "b": {
        "corepool.map(chunksize=1)": _corepool_map1,
        "mp.Pool.map(chunksize=1)": _mp_map1,
    },
}


def _child(case: str, contender: str, n: int) -> None:
    RUNS[case][contender](n)


# -- the parent: rounds, timeouts, the table ----------------------------------


def _run_child(case: str, contender: str, n: int, timeout: float) -> dict[str, float] | str:
    command = [sys.executable, __file__, "--child", case, contender, str(n)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout or None, check=False
        )
    except subprocess.TimeoutExpired:
        return f"over {timeout:g} s"
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1:]}"
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _table(case: str, n: int, rounds: int, timeout: float) -> None:
    outcomes: dict[str, list[dict[str, float] | str]] = {name: [] for name in RUNS[case]}
    for number in range(rounds):
        for name in shuffled(list(RUNS[case]), SEED + number):
            outcomes[name].append(_run_child(case, name, n, timeout))
    rows = []
    core_rate = None
    for name, runs in outcomes.items():
        good = [run for run in runs if isinstance(run, dict)]
        if not good:
            rows.append([name, str(runs[0]), "", "", ""])
            continue
        rate = n / statistics.median(run["seconds"] for run in good)
        peak = statistics.median(run["peak_mib"] for run in good)
        core_rate = core_rate or (rate if name.startswith("corepool") else None)
        rows.append([name, f"{rate:,.0f}", fmt(peak, 0), "", f"{len(good)}/{len(runs)}"])
    for row in rows:
        if core_rate and row[1] and row[1][0].isdigit():
            row[3] = fmt(core_rate / float(row[1].replace(",", "")), 2)
    print_table(["contender", "tasks/s", "peak MiB", "corepool/peer", "runs"], rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = case_parser(
        __doc__.splitlines()[0],
        cases="a,b",
        example="a",
        quick_help="1,000 and 10,000 pending, 2 rounds",
        timeout=300,
    )
    parser.add_argument("--pending", default="1000,100000,1000000", help="N for case a")
    args = parser.parse_args()
    rounds = quick_rounds(parser, args.rounds, args.quick)
    pending = [1_000, 10_000] if args.quick else [int(n) for n in args.pending.split(",")]
    print(f"{WORKERS} workers; {library_versions(PEERS)}; {rounds} rounds; medians")
    for case in args.cases.split(","):
        for n in pending if case == "a" else [MAP_ITEMS]:
            what = f"{n:,} submits, then every result" if case == "a" else f"map of {n:,}"
            print(f"\ncase {case}: {what}", flush=True)
            _table(case, n, rounds, args.timeout)


if __name__ == "__main__":
    main()
