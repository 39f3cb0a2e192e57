"""A cold start, as a script pays it: import, start a pool, one task, stop; corepool and peers.

Each run is a fresh interpreter that times, from before its import to after
the pool has stopped, ``import``, opening a pool of 2 workers, one trivial
task and closing the pool (nothing is warm: no fork server, no parked
worker; modules load from bytecode caches, as an installed package's do,
written by one untimed run of each program). Interpreter start-up itself
is not counted. Rounds are interleaved, in a shuffled order; medians are
printed with the ratio corepool / peer against ``multiprocessing.Pool``
with ``fork``.

    python benchmarks/bench_cold_start.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from _harness import print_table, shuffled

SEED = 20261127

PROGRAMS = {
    "corepool (forkserver, default)": (
        "import corepool\nwith corepool.Pool(2) as pool:\n    pool.submit(abs, -1).result()\n"
    ),
    "corepool spawn": (
        "import corepool\n"
        "with corepool.Pool(2, start_method='spawn') as pool:\n"
        "    pool.submit(abs, -1).result()\n"
    ),
    "corepool fork": (
        "import corepool\n"
        "with corepool.Pool(2, start_method='fork') as pool:\n"
        "    pool.submit(abs, -1).result()\n"
    ),
    "corepool.map": "import corepool\ncorepool.map(abs, [-1], workers=2)\n",
    "mp.Pool fork": (
        "import multiprocessing\n"
        "with multiprocessing.get_context('fork').Pool(2) as pool:\n"
        "    pool.apply(abs, (-1,))\n"
    ),
    "mp.Pool forkserver": (
        "import multiprocessing\n"
        "with multiprocessing.get_context('forkserver').Pool(2) as pool:\n"
        "    pool.apply(abs, (-1,))\n"
    ),
    "mp.Pool spawn": (
        "import multiprocessing\n"
        "with multiprocessing.get_context('spawn').Pool(2) as pool:\n"
        "    pool.apply(abs, (-1,))\n"
    ),
    "ProcessPoolExecutor": (
        "from concurrent.futures import ProcessPoolExecutor\n"
        "with ProcessPoolExecutor(2) as executor:\n"
        "    executor.submit(abs, -1).result()\n"
    ),
    "loky": (
        "from loky import get_reusable_executor\n"
        "executor = get_reusable_executor(2)\n"
        "executor.submit(abs, -1).result()\n"
        "executor.shutdown()\n"
    ),
    "pebble": (
        "from pebble import ProcessPool\n"
        "with ProcessPool(2) as pool:\n"
        "    pool.schedule(abs, (-1,)).result()\n"
    ),
}
BASELINE = "mp.Pool fork"


def _run(program: str) -> float:
    code = (
        "import time\nstart = time.perf_counter()\n"
        + program
        + "print(time.perf_counter() - start)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=_WITH_BYTECODE_CACHE,
    )
    return float(done.stdout.strip().splitlines()[-1])


# As an installed package runs: modules load from their cached bytecode. With
# PYTHONDONTWRITEBYTECODE set (some shells and CI images set it), a source
# checkout compiles every module of corepool at each start (~40 ms here),
# while the standard library's come precompiled.
_WITH_BYTECODE_CACHE = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    rounds = parser.parse_args().rounds
    times: dict[str, list[float]] = {name: [] for name in PROGRAMS}
    for program in PROGRAMS.values():  # untimed: writes the bytecode caches
        _run(program)
    for number in range(rounds):
        for name in shuffled(list(PROGRAMS), SEED + number):
            times[name].append(_run(PROGRAMS[name]))
    base = statistics.median(times[BASELINE])
    rows = []
    for name, runs in times.items():
        median = statistics.median(runs)
        rows.append([name, f"{median * 1e3:.1f}", f"{median / base:.2f}"])
    print(f"2 workers, {rounds} rounds, medians; import + start + one task + stop")
    print_table(["contender", "ms", f"/ {BASELINE}"], rows)


if __name__ == "__main__":
    main()
