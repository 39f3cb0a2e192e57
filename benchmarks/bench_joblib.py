"""joblib's Parallel on the corepool backend against loky, joblib's default, in the same run.

Cases:
    a  many small tasks: 20,000 calls of a ~50 us pure-Python function
    b  large arguments: 40 calls, each given the same 20 MB numpy array (its sum)

Both contenders run ``Parallel(n_jobs=2)`` (batch_size="auto") inside
``parallel_config(backend=...)``, with their own default start method. Each
timed call follows a one-task warm-up call of the same contender, so loky's
reusable executor is warm and corepool's parked workers are ready: the time
is that of a ``Parallel`` call in a program that makes several. A serial loop
is timed too. Rounds are interleaved: every contender once per round, in a
shuffled order. ``corepool/x`` is the corepool median over x's (< 1:
corepool is faster).

Usage:
    python benchmarks/bench_joblib.py [--rounds N] [--cases a,b] [--quick]
"""

from __future__ import annotations

import gc
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from _harness import (
    attempt,
    case_parser,
    corepool_method,
    exit_if_abandoned,
    fmt,
    joblib_method,
    library_versions,
    print_table,
    quick_rounds,
    shuffled,
    split_cases,
    timed_case,
)
from bench_pool import SEED, calibrate_spin, spin

WORKERS = 2
FULL_SIZES = (20_000, 40)  # calls in cases a and b
QUICK_SIZES = (4_000, 10)
ARRAY_BYTES = 20_000_000


def array_sum(a: Any) -> float:
    """Case b's task: touches every byte of its argument."""
    return float(a.sum())


@dataclass(frozen=True)
class Contender:
    name: str
    backend: str | None  # None: the serial loop
    start_method: Callable[[], str]


CONTENDERS = (
    Contender("serial loop", None, lambda: "-"),
    Contender("corepool", "corepool", lambda: corepool_method(WORKERS)),
    Contender("loky", "loky", joblib_method),
)


@dataclass
class Result:
    contender: Contender
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan


def time_call(contender: Contender, fn: Callable[..., Any], args: Sequence[Any]) -> float:
    """Time one ``Parallel`` call of ``fn`` over ``args`` (after a warm-up call); check it."""
    from joblib import Parallel, delayed, parallel_config

    expected = [fn(args[0])]
    if contender.backend is None:
        start = time.perf_counter()
        out = [fn(a) for a in args]
        return time.perf_counter() - start
    with parallel_config(backend=contender.backend, n_jobs=WORKERS):
        if Parallel()([delayed(fn)(args[0])]) != expected:
            raise AssertionError("wrong result in the warm-up call")
        start = time.perf_counter()
        out = Parallel()(delayed(fn)(a) for a in args)
        elapsed = time.perf_counter() - start
    if len(out) != len(args) or out[0] != expected[0]:
        raise AssertionError("wrong results")
    return elapsed


def run_case(
    title: str, rounds: int, timeout: float, fn: Callable[..., Any], args: list[Any]
) -> str:
    """Every contender once per round, shuffled; print the table, return the summary line."""
    results = {c.name: Result(c) for c in CONTENDERS}
    for round_no in range(rounds):
        for contender in shuffled(CONTENDERS, SEED + round_no):
            result = results[contender.name]
            if result.error is None:
                gc.collect()
                run = partial(time_call, contender, fn, args)
                result.error = attempt(contender.name, round_no, timeout, run, result.times)
        print(f"  round {round_no + 1}/{rounds} done", flush=True)
    return report(title, [results[c.name] for c in CONTENDERS])


def report(title: str, results: list[Result]) -> str:
    print(f"\n{title}")
    core = next(r for r in results if r.contender.name == "corepool").median
    rows = []
    for res in results:
        if not res.times:
            rows.append([res.contender.name, "", f"FAILED: {res.error}", "", ""])
            continue
        rows.append(
            [
                res.contender.name,
                res.contender.start_method(),
                fmt(res.median),
                fmt(min(res.times)),
                fmt(core / res.median, 2),
            ]
        )
    print_table(["contender", "start method", "median s", "min s", "corepool/x"], rows)
    loky = next(r for r in results if r.contender.name == "loky").median
    label = title.split(maxsplit=1)[0]
    return (
        f"{label} corepool {fmt(core)} s | loky {fmt(loky)} s | corepool/loky {fmt(core / loky, 2)}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = case_parser(
        __doc__.split("\n\n")[0],
        cases="a,b",
        example="a",
        quick_help="fewer calls and 2 rounds",
        timeout=300,
    )
    args = parser.parse_args(argv)
    cases = split_cases(parser, args.cases, "ab")
    rounds = quick_rounds(parser, args.rounds, args.quick)
    small, large = QUICK_SIZES if args.quick else FULL_SIZES

    import corepool.joblib

    corepool.joblib.register()
    print(f"Python {platform.python_version()} on {platform.platform()}, {WORKERS} workers")
    print(library_versions(("corepool", "joblib", "numpy")))
    print(f"{rounds} rounds per case, contenders in a shuffled order each round")
    summary = []
    if "a" in cases:
        n = calibrate_spin(50e-6)
        print(f"calibrated: spin({n:,}) takes ~50 us here")
        title = f"(a) {small:,} calls of ~50 us (spin {n:,})"
        summary.append(
            timed_case("a", lambda: run_case(title, rounds, args.timeout, spin, [n] * small))
        )
    if "b" in cases:
        import numpy as np

        array = np.random.default_rng(SEED).random(ARRAY_BYTES // 8)
        title = f"(b) {large} calls, each given the same {ARRAY_BYTES / 1e6:.0f} MB array (its sum)"
        summary.append(
            timed_case(
                "b", lambda: run_case(title, rounds, args.timeout, array_sum, [array] * large)
            )
        )
    print("\nSummary (corepool/loky < 1 means corepool is faster)")
    for line in summary:
        print(line)
    exit_if_abandoned("pool(s) failed and were abandoned; exiting without them.")


if __name__ == "__main__":
    main()
