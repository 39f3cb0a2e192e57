"""How long a pool takes to start its workers, per start method, corepool vs multiprocessing.

Each round opens a pool of 2 workers, waits for one trivial task, and closes
it; the time to the first result is what a user waits before any work gets
done. corepool is measured twice: with its parked workers (the default, a
pool with no initializer) and without them (an initializer disables parking,
so every round starts fresh processes). Rounds are interleaved; medians are
printed with the ratio corepool / multiprocessing for the same start method.

    python benchmarks/bench_start.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from functools import partial

import corepool
from corepool.options import StartMethod

WORKERS = 2


def _noop() -> None:
    """An initializer that does nothing, so that the pool parks no workers."""


def corepool_start(method: StartMethod, *, fresh: bool) -> float:
    start = time.perf_counter()
    initializer = _noop if fresh else None
    with corepool.Pool(WORKERS, start_method=method, initializer=initializer) as pool:
        pool.submit(abs, -1).result()
    return time.perf_counter() - start


def mp_start(method: str) -> float:
    start = time.perf_counter()
    with multiprocessing.get_context(method).Pool(WORKERS) as pool:
        pool.apply(abs, (-1,))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    contenders: dict[str, Callable[[], float]] = {}
    methods: tuple[StartMethod, ...] = ("forkserver", "spawn", "fork")
    for method in methods:
        contenders[f"corepool {method} (parked)"] = partial(corepool_start, method, fresh=False)
        contenders[f"corepool {method} (fresh)"] = partial(corepool_start, method, fresh=True)
        contenders[f"multiprocessing {method}"] = partial(mp_start, method)
    for run in contenders.values():  # warm-up: fork servers, imports
        run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            times[name].append(run())
    print(f"{WORKERS} workers, {rounds} rounds; open + first result + close, median ms")
    for method in ("forkserver", "spawn", "fork"):
        base = statistics.median(times[f"multiprocessing {method}"])
        for name in (f"corepool {method} (parked)", f"corepool {method} (fresh)"):
            median = statistics.median(times[name])
            print(f"  {name:<30} {median * 1e3:7.1f}   corepool/mp {median / base:5.2f}")
        print(f"  {'multiprocessing ' + method:<30} {base * 1e3:7.1f}")


if __name__ == "__main__":
    main()
