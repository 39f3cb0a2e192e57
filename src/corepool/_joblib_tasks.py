"""What a worker runs for joblib's ``Parallel``: a batch of its calls, and how to name it.

Runs in workers (``run_batch``) and in the parent (the names in errors).
Imports nothing of corepool's, so a worker that unpickles a batch loads only
this module (and joblib, which the batch itself needs).
"""

from __future__ import annotations

import functools
import reprlib
from typing import Any

__all__ = ["Batch", "run_batch"]

_short_repr = reprlib.Repr()
_short_repr.maxstring = 40
_short_repr.maxother = 40


def run_batch(batch: Batch) -> list[Any]:
    """Run one joblib batch in a worker: the function every batch is submitted with.

    One importable function, so that consecutive batches of a call travel to
    workers together and the function goes by reference.
    """
    return batch.calls()  # type: ignore[no-any-return]


class Batch:
    """A joblib ``BatchedCalls`` and the place of its first task in its ``Parallel`` call."""

    __slots__ = ("calls", "first")

    def __init__(self, calls: Any, first: int) -> None:
        self.calls = calls
        self.first = first

    def _items(self) -> list[tuple[Any, tuple[Any, ...], dict[str, Any]]]:
        return list(getattr(self.calls, "items", []))

    def call(self) -> str:
        """``Parallel(f): f(3)`` for a batch of one task, else ``Parallel(f)``."""
        items = self._items()
        name = f"Parallel({_name(items[0][0]) if items else '?'})"
        return f"{name}: {_call_repr(*items[0])}" if len(items) == 1 else name

    def describe(self) -> str:
        """``task 3 of Parallel(f): f(3)``, or the range of tasks of a larger batch."""
        size = len(self._items())
        if size == 1:
            return f"task {self.first} of {self.call()}"
        return (
            f"tasks {self.first} to {self.first + size - 1} of {self.call()}, sent as one "
            "joblib batch (pass batch_size=1 to Parallel to learn which one)"
        )

    def __repr__(self) -> str:
        items = self._items()
        if len(items) == 1:
            return _call_repr(*items[0])
        first = _call_repr(*items[0]) if items else "?"
        return f"<{len(items)} joblib tasks from {self.first}: {first}, ...>"


def _name(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def _call_repr(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    shown = [_short_repr.repr(a) for a in args]
    shown += [f"{key}={_short_repr.repr(value)}" for key, value in kwargs.items()]
    return f"{_name(fn)}({', '.join(shown)})"
