"""What the demo's scenarios share: their config, their rows, and small helpers.

Runs in the parent process, and in workers only as far as ``import_module``
(the warm-up task) goes. Imports nothing of corepool's but its public API.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # a process started for a task imports this module: keep it light
    import socketserver

T = TypeVar("T")


@dataclass(frozen=True)
class DemoConfig:
    """How big to make the data and how many workers to use."""

    scale: float
    workers: int
    progress: bool


@dataclass(frozen=True)
class Row:
    """One way of running one scenario, and how long it took.

    ``baseline`` marks the row others are sped up over (the serial loop);
    ``versus`` names the standard-library row a corepool row is compared with.
    """

    scenario: str
    runner: str
    seconds: float
    note: str = ""
    baseline: bool = False
    versus: str | None = None


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``fn()`` took, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def check_agree(scenario: str, expected: Any, answers: dict[str, Any]) -> None:
    """Raise if any runner's answer differs from the serial loop's.

    Raises:
        RuntimeError: naming the scenario and the runner that disagreed.
    """
    for runner, answer in answers.items():
        if answer != expected:
            raise RuntimeError(
                f"{scenario}: {runner} gave a different answer than the serial loop. "
                "The runs must agree; please report this with the command line you ran."
            )


def import_module(name: str) -> None:
    """Import ``name`` here: a warm-up task, so that workers time tasks, not imports."""
    importlib.import_module(name)


def warm_up(pool: Any, module: str, workers: int, progress: bool) -> None:
    """Start ``pool``'s workers and import ``module`` in them before the clock starts.

    ``multiprocessing.Pool`` forks workers that already hold every module the
    parent imported; corepool's start from a fork server, so the demo lets
    them import the scenario's module first, and times the same work in both.
    """
    pool.map(import_module, [module] * workers, chunksize=1)
    if progress:
        importlib.import_module("tqdm")  # the bar's import (60 ms) is not the pool's time


def scaled(count: int, scale: float, least: int = 1) -> int:
    """``count`` times ``scale``, at least ``least``."""
    return max(least, round(count * scale))


@contextlib.contextmanager
def serving(server: socketserver.BaseServer, name: str) -> Iterator[None]:
    """Run ``server`` on a thread of this process while the block runs; then stop and close it."""
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
