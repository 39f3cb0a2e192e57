"""The ``corepool`` command: ``corepool demo`` shows what the library does on this machine."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import corepool
from corepool._demo import SCENARIOS, DemoConfig, parse_scale, run_demo, select
from corepool._run import add_run_command, run_command
from corepool.options import default_workers

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    try:
        scale = parse_scale(args.scale)
        scenarios = select(args.only)
    except ValueError as error:
        print(f"corepool demo: {error}", file=sys.stderr)
        return 2
    workers = args.workers or default_workers()
    print(f"corepool {corepool.__version__} demo: {workers} workers; each pool is started "
          "before its clock starts", flush=True)  # fmt: skip
    config = DemoConfig(scale=scale, workers=workers, progress=not args.no_progress)
    run_demo(config, scenarios, args.chart, out=lambda line: print(line, flush=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``corepool`` command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="corepool", description=corepool.__doc__)
    parser.add_argument("--version", action="version", version=corepool.__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run the seed's scenarios: serial, standard library, corepool"
    )
    demo.add_argument("--workers", type=int, default=None, help="worker processes (all cores)")
    demo.add_argument(
        "--scale", default="default", help="input size: small, default, large or a factor (1.0)"
    )
    demo.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SCENARIO",
        help=f"run only these (repeat or comma list): {', '.join(s.name for s in SCENARIOS)}",
    )
    demo.add_argument(
        "--chart",
        type=Path,
        default=Path("corepool-demo.png"),
        metavar="PATH",
        help="where to draw the speedups as a PNG (corepool-demo.png)",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_run_command(commands)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "run":
        return run_command(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
