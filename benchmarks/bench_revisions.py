"""corepool at two git revisions, on the map workloads of ``bench_pool.py``, interleaved.

A change to the engine must not cost throughput: this checks it. Each
revision is checked out in a temporary worktree; each round times every
case once per revision, in a shuffled order, each in a fresh interpreter
whose ``corepool`` is that revision's. The pool (2 workers, default start
method) is opened and warmed up before the timed ``map``.

Usage:
    python benchmarks/bench_revisions.py BEFORE [AFTER] [--rounds N] [--cases a,b,c,d]

AFTER defaults to the working tree as it is (uncommitted changes included).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Each case as (title, the items expression, the function) over bench_pool's workloads.
CASES = {
    "a": ("(a) square over 1,500,000 ints", "list(range(1_500_000))", "square"),
    "b": ("(b) 30,000 items of ~100 us", "[SPIN] * 30_000", "spin"),
    "c": ("(c) 400 items of ~10 ms", "[SPIN * 100] * 400", "spin"),
    "d": ("(d) 1,750 items of ~1 ms, 1% x100", "heavy_tail(SPIN * 10, 1_750)", "spin"),
}

CHILD = """
import random, sys, time
sys.path.insert(0, {benchmarks!r})
import corepool
from bench_pool import SEED, spin, square

SPIN = {spin}

def heavy_tail(base, count):
    items = [base] * count
    for i in random.Random(SEED).sample(range(count), k=max(1, count // 100)):
        items[i] = base * 100
    return items

items = {items}
with corepool.Pool(2) as pool:
    pool.map({fn}, items[:8])
    start = time.perf_counter()
    pool.map({fn}, items)
    print(time.perf_counter() - start)
"""


def _checkout(revision: str, into: Path) -> Path:
    """The ``src`` folder of ``revision``, checked out under ``into``."""
    if revision == "WORKTREE":
        return ROOT / "src"
    target = into / revision.replace("/", "_")
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(target), revision],
        check=True,
    )
    return target / "src"


def _time_case(src: Path, case: str, spin: int) -> float:
    _, items, fn = CASES[case]
    code = CHILD.format(benchmarks=str(HERE), spin=spin, items=items, fn=fn)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="a git revision (a commit, a tag, HEAD~3)")
    parser.add_argument("after", nargs="?", default="WORKTREE", help="default: the working tree")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default="a,b,c,d")
    args = parser.parse_args()
    cases = args.cases.split(",")
    sys.path.insert(0, str(HERE))
    from bench_pool import calibrate_spin

    spin = calibrate_spin(100e-6)
    revisions = (args.before, args.after)
    times: dict[tuple[str, str], list[float]] = {(r, c): [] for r in revisions for c in cases}
    with tempfile.TemporaryDirectory(prefix="corepool-revisions-") as folder:
        sources = {revision: _checkout(revision, Path(folder)) for revision in revisions}
        try:
            for number in range(args.rounds):
                order = [(r, c) for r in revisions for c in cases]
                random.shuffle(order)
                for revision, case in order:
                    times[revision, case].append(_time_case(sources[revision], case, spin))
                print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)
    print(f"| case | {revisions[0]} (s) | {revisions[1]} (s) | after / before |")
    print("|---|---|---|---|")
    for case in cases:
        before = statistics.median(times[revisions[0], case])
        after = statistics.median(times[revisions[1], case])
        title = CASES[case][0]
        print(f"| {title} | {before:.3f} | {after:.3f} | {after / before:.3f} |")


if __name__ == "__main__":
    main()
