"""How fast a caller hears of a crashed task, per start method; and that the pool goes on.

For each fault (SIGKILL, segfault, os._exit, sys.exit, a plain exception, a
hang past task_timeout), submit one faulty task to a warm 2-worker pool,
time until its future holds the error (for the hang: from its deadline),
then check the pool still maps correctly. Prints median ms.

    python benchmarks/bench_faults.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable

import corepool
from corepool.options import StartMethod


def sigkill(_: int) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def segfault(_: int) -> None:
    faulthandler.disable()  # a real SIGSEGV, without a dump on the terminal
    ctypes.string_at(0)


def hard_exit(_: int) -> None:
    os._exit(13)


def soft_exit(_: int) -> None:
    sys.exit(4)


def raises(_: int) -> None:
    raise ValueError("bad item")


def hangs(_: int) -> None:
    time.sleep(60)


TASK_TIMEOUT_S = 0.5


FAULTS: dict[str, Callable[[int], None]] = {
    "SIGKILL": sigkill,
    "segfault": segfault,
    "os._exit": hard_exit,
    "sys.exit": soft_exit,
    "raise": raises,
    "hang": hangs,  # past task_timeout: the figure is the time after the deadline
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    methods: tuple[StartMethod, ...] = ("forkserver", "spawn", "fork")
    print(f"median ms from submit to the error, {rounds} rounds, 2 workers")
    for method in methods:
        with corepool.Pool(2, start_method=method, task_timeout=TASK_TIMEOUT_S) as pool:
            pool.map(abs, range(10))
            for name, fault in FAULTS.items():
                latencies = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    error = pool.submit(fault, 0).exception()
                    late = TASK_TIMEOUT_S if fault is hangs else 0.0
                    latencies.append(time.perf_counter() - start - late)
                    assert error is not None
                    assert pool.map(abs, range(-20, 0)) == list(range(20, 0, -1))
                median_ms = statistics.median(latencies) * 1e3
                print(
                    f"  {method:<10} {name:<9} {median_ms:6.1f} ms  "
                    f"{type(error).__name__}; pool usable after"
                )


if __name__ == "__main__":
    main()
