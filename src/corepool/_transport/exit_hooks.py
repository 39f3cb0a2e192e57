"""What every corepool process finishes before it ends, in one written order.

Runs in the parent and in workers. Modules register a hook for a stage; the
stages run in the order of ``Stage`` below: in the parent from one ``atexit``
hook, in a worker when its loop ends normally (a worker ends by ``os._exit``,
which skips ``atexit``; after a crash nothing runs).
"""

from __future__ import annotations

import atexit
import enum
from collections.abc import Callable

__all__ = ["Stage", "register", "run"]


class Stage(enum.IntEnum):
    """The order in which exit work is done, and why."""

    HAND_BACK = 0  # queue items this process took in a batch but never used go back first,
    FLUSH = 1  # then every queue backlog is sent (the items handed back included);
    PARKED = 2  # then parked workers are let go (they may still receive items above),
    FORK_SERVERS = 3  # and last the fork servers hang up (workers started from them run on).


_hooks: dict[Stage, list[Callable[[], None]]] = {stage: [] for stage in Stage}
_registered = False


def register(hook: Callable[[], None], stage: Stage) -> None:
    """Run ``hook`` at ``stage`` when this process ends (once, however often registered)."""
    global _registered
    if hook not in _hooks[stage]:
        _hooks[stage].append(hook)
    if not _registered:
        _registered = True
        atexit.register(run)


def run() -> None:
    """Run every hook, stage by stage; each hook once."""
    for stage in Stage:
        hooks, _hooks[stage] = _hooks[stage], []
        for hook in hooks:
            hook()
