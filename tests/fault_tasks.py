"""Task helpers for the fault tests: each one misbehaves in one way, on one item.

Module-level, like ``tasks.py``, so that workers import them by reference
under every start method.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn


def segfault_on(x: int, bad: int = 3) -> int:
    """Crash with SIGSEGV on item ``bad``, without the faulthandler dump a forked worker inherits.

    pytest enables faulthandler; a worker forked from it would print its
    traceback on the terminal, past pytest's capture. The crash is the same
    SIGSEGV either way.
    """
    if x == bad:
        faulthandler.disable()
        ctypes.string_at(0)
    return x


def lock_on(x: int, bad: int = 4) -> Any:
    """Return ``x``, but an unpicklable ``threading.Lock`` for item ``bad``."""
    return threading.Lock() if x == bad else x


class LockedError(Exception):
    """An exception that will not pickle: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_locked_on(x: int, bad: int = 6) -> int:
    if x == bad:
        raise LockedError(f"item {x} holds a lock")
    return x


class TwoArgError(Exception):
    """Pickles, but will not unpickle: pickle rebuilds it as ``TwoArgError(message)``."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b} went wrong")


def raise_two_arg_on(x: int, bad: int = 8) -> int:
    if x == bad:
        raise TwoArgError(x, x + 1)
    return x


def refuse_to_unpickle(label: str) -> NoReturn:
    raise RuntimeError(f"{label} cannot be rebuilt here")


class Unloadable:
    """Pickles in the parent; unpickling it (in a worker) raises ``RuntimeError``."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (refuse_to_unpickle, ("the Unloadable argument",))


def failing_init() -> None:
    raise OSError("no model file at /nonexistent/model.bin")


def numbers_then_fail(count: int = 10) -> Iterator[int]:
    """Yield ``0 .. count - 1``, then raise ``RuntimeError``: a broken input stream."""
    yield from range(count)
    raise RuntimeError(f"the input broke after {count} items")


def hang_on(x: int, bad: int = 3) -> int:
    """Sleep (in C, in a system call) far past any task_timeout on item ``bad``."""
    if x == bad:
        time.sleep(60)
    return x


def spin_in_c_on(x: int, bad: int = 4) -> int:
    """Loop inside C code, holding the GIL and deaf to signals, on item ``bad``."""
    if x == bad:
        sum(range(10**13))
    return x


def always_disconnected_on(x: int, bad: int = 6) -> int:
    if x == bad:
        raise ConnectionError(f"item {x}: connection refused")
    return x


def flaky(marker_dir: str, x: int) -> int:
    """Fail with ConnectionError the first time each item runs, succeed after."""
    marker = Path(marker_dir) / str(x)
    if not marker.exists():
        marker.touch()
        raise ConnectionError(f"item {x}: first attempt fails")
    return x


def die_first_time(marker_dir: str, x: int) -> int:
    """SIGKILL the worker the first time item 5 runs; succeed after."""
    marker = Path(marker_dir) / str(x)
    if x == 5 and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return x


_hoard: list[bytes] = []


def leak(x: int, megabytes: int = 40) -> int:
    """Keep ``megabytes`` of memory for good, as leaky code does; return the worker's pid."""
    _hoard.append(b"\1" * (megabytes * 2**20))
    return os.getpid()


def interrupt_on(x: int, bad: int = 9) -> int:
    """Raise KeyboardInterrupt inside the task, as if the task itself hit Ctrl-C."""
    if x == bad:
        raise KeyboardInterrupt
    return x


def chaos(x: int) -> int:
    """Every 97 items: SIGKILL on the 3rd, raise on the 5th, ``os._exit(3)`` on the 11th."""
    kind = x % 97
    if kind == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == 5:
        raise ValueError(x)
    if kind == 11:
        os._exit(3)
    return x * 2


class Connection:
    """An argument that looks harmless but holds a lock deep inside."""

    def __init__(self) -> None:
        self.settings = {"timeout": 5, "guard": threading.Lock()}


def uses_a_lock_from_its_closure() -> Any:
    """A function that cannot travel: its closure holds a lock."""
    guard = threading.Lock()

    def locked_identity(x: Any) -> Any:
        with guard:
            return x

    return locked_identity
