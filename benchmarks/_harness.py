"""Harness code shared by the benchmark scripts in this folder.

The scripts run as ``python benchmarks/bench_x.py``, which puts this folder on
``sys.path``, so they import it as ``from _harness import ...``. Its top level
imports only the standard library: workers that import a script again (spawn,
forkserver) get nothing heavy from it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import math
import multiprocessing
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import FrameType
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

# -- start methods: what each library uses by default ---------------------------


def safe_start_method(get: Callable[[], str]) -> Callable[[], str]:
    """``get``, but returning ``"?"`` where it raises (say, the library is missing)."""

    def safe() -> str:
        try:
            return get()
        except Exception:
            return "?"

    return safe


def corepool_method(workers: int) -> str:
    """The start method a default ``corepool.Pool`` of ``workers`` workers resolves to."""
    from corepool.options import PoolOptions

    return PoolOptions(workers=workers).resolved_start_method


def loky_method() -> str:
    """loky's default start method."""
    from loky.backend.context import get_context

    return str(get_context().get_start_method())


def joblib_method() -> str:
    """The start method of joblib's vendored loky."""
    from joblib.externals.loky.backend.context import get_context

    return str(get_context().get_start_method())


def mpire_method() -> str:
    """mpire's default start method."""
    from mpire.context import DEFAULT_START_METHOD

    return str(DEFAULT_START_METHOD)


def mp_method() -> str:
    """multiprocessing's default start method."""
    return str(multiprocessing.get_start_method())


# -- measuring -----------------------------------------------------------------


class RunTimeoutError(Exception):
    """One contender's run took longer than ``--timeout``."""


class deadline:  # noqa: N801  # used like a function: ``with deadline(60):``
    """Raise ``RunTimeoutError`` in the main thread after ``seconds`` (0: never)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        if self.seconds > 0:
            signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        if self.seconds > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        raise RunTimeoutError(f"no result after {self.seconds:g} s")


def shuffled(items: Sequence[T], seed: int) -> list[T]:
    """A copy of ``items`` in an order shuffled by ``random.Random(seed)``."""
    order = list(items)
    random.Random(seed).shuffle(order)
    return order


def attempt(
    name: str,
    round_no: int,
    timeout: float,
    run: Callable[[], T],
    into: list[T],
    *,
    show_traceback: bool = False,
) -> str | None:
    """Append ``run()``'s value to ``into``, under ``deadline(timeout)``.

    On an exception: print a line (and the traceback, if asked) and return
    ``"Type: message"``; else ``None``. ``round_no`` counts from 0.
    """
    try:
        with deadline(timeout):
            into.append(run())
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        print(f"  ! {name} failed in round {round_no + 1}: {error}")
        if show_traceback:
            traceback.print_exc()
        return error
    return None


class Pool(Protocol):
    """What ``opened`` needs of a pool."""

    def close(self) -> None: ...

    def terminate(self) -> None: ...


P = TypeVar("P", bound=Pool)

# Pools (or children) whose run failed: kept alive, since the finalizer of a
# stuck pool may block; if any, ``exit_if_abandoned`` ends the script with
# os._exit instead of waiting for them.
ABANDONED: list[Any] = []


@contextlib.contextmanager
def opened(open_pool: Callable[[], P]) -> Iterator[P]:
    """An opened pool: closed after a good run, terminated (and kept) after a failure."""
    runner = open_pool()
    try:
        yield runner
        runner.close()
    except BaseException:
        ABANDONED.append(runner)
        with contextlib.suppress(Exception), deadline(30):
            runner.terminate()
        raise


def exit_if_abandoned(what: str) -> None:
    """Flush; if anything is in ``ABANDONED``, print ``"\\n<count> <what>"`` and ``os._exit(1)``."""
    sys.stdout.flush()
    if ABANDONED:
        print(f"\n{len(ABANDONED)} {what}")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


# -- reporting -----------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a plain table: first two columns left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    print(line(headers))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def fmt(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, or ``"n/a"`` for NaN."""
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def library_versions(names: Iterable[str]) -> str:
    """``"name version; ..."`` for each library, or why it cannot be imported."""
    versions = []
    for name in names:
        try:
            importlib.import_module(name)
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except Exception as exc:
            versions.append(f"{name} unavailable ({type(exc).__name__})")
    return "; ".join(versions)


# -- command line and main loop ------------------------------------------------


def split_cases(parser: argparse.ArgumentParser, text: str, known: Iterable[str]) -> list[str]:
    """The comma-separated case letters in ``text``; a parser error for unknown ones."""
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(known))
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    return cases


def quick_rounds(parser: argparse.ArgumentParser, rounds: int | None, quick: bool) -> int:
    """``--rounds``, else 2 with ``--quick`` and 5 without; a parser error below 1."""
    rounds = rounds or (2 if quick else 5)
    if rounds < 1:
        parser.error("--rounds must be >= 1")
    return rounds


def timed_case(case: str, run: Callable[[], T]) -> T:
    """Run one case between a ``case x ...`` line and a ``(case x took N s)`` line."""
    start = time.perf_counter()
    print(f"\ncase {case} ...", flush=True)
    out = run()
    print(f"(case {case} took {time.perf_counter() - start:.0f} s)", flush=True)
    return out


def case_parser(
    description: str, *, cases: str, example: str, quick_help: str, timeout: float
) -> argparse.ArgumentParser:
    """A parser with ``--rounds``, ``--cases``, ``--quick`` and ``--timeout``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, help="rounds per case (default 5, --quick 2)")
    parser.add_argument("--cases", default=cases, help=f"comma-separated, e.g. {example}")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--timeout", type=float, default=timeout, help="seconds one run may take (0: no limit)"
    )
    return parser
