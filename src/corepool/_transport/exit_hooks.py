"""Work to finish before a worker process ends by ``os._exit`` (which skips ``atexit``).

Runs in workers. A module that keeps work in background threads (a
``Queue``'s backlog) registers here as well as with ``atexit``; a worker
runs the hooks when its loop ends normally, never after a crash.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["register", "run"]

_hooks: list[Callable[[], None]] = []


def register(hook: Callable[[], None]) -> None:
    """Run ``hook`` when this worker ends normally (once, however often registered)."""
    if hook not in _hooks:
        _hooks.append(hook)


def run() -> None:
    """Run every hook, in the order registered."""
    for hook in _hooks:
        hook()
