"""The ``corepool`` command: ``corepool demo`` shows what the library does on this machine."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import corepool
from corepool._demo import Timing, run_workload, workloads
from corepool.options import default_workers

__all__ = ["main"]


def _table(timings: list[Timing]) -> str:
    serial = {t.workload: t.seconds for t in timings if t.runner == "serial loop"}
    width = max(len(t.workload) for t in timings)
    lines = [f"{'workload':<{width}}  {'runner':<20}  {'seconds':>8}  {'speedup':>8}"]
    for timing in timings:
        speedup = serial[timing.workload] / timing.seconds if timing.seconds > 0 else float("inf")
        lines.append(
            f"{timing.workload:<{width}}  {timing.runner:<20}  "
            f"{timing.seconds:>8.3f}  {speedup:>7.2f}x"
        )
    return "\n".join(lines)


def _advice(timings: list[Timing]) -> str:
    serial = {t.workload: t.seconds for t in timings if t.runner == "serial loop"}
    slow = sorted({t.workload for t in timings if t.seconds > serial[t.workload]})
    if not slow:
        return "\nEvery pool beat the serial loop."
    return (
        f"\nSlower than the serial loop: {', '.join(slow)}. Such tasks take well under "
        "a microsecond each: sending each number to a worker and its result back costs "
        "more than computing it, in any pool. Give each task more work (a range of "
        "numbers rather than one) and the cores pay off, as the prime count shows."
    )


def _demo(args: argparse.Namespace) -> int:
    workers = args.workers or default_workers()
    print(f"corepool {corepool.__version__} demo: {workers} workers, speedup over the serial loop")
    timings: list[Timing] = []
    for work in workloads(args.scale):
        print(f"\n{work.title}: serial, then multiprocessing.Pool, then corepool ...", flush=True)
        timings.extend(run_workload(work, workers, progress=not args.no_progress))
    print()
    print(_table(timings))
    print(_advice(timings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``corepool`` command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="corepool", description=corepool.__doc__)
    parser.add_argument("--version", action="version", version=corepool.__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="time the seed's examples: serial, stdlib, corepool")
    demo.add_argument("--workers", type=int, default=None, help="worker processes (all cores)")
    demo.add_argument("--scale", type=float, default=1.0, help="input size factor (1.0)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
