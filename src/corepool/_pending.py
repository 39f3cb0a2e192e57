"""A pool's unfinished work: what ``shutdown(cancel_futures=True)`` cancels, exit waits for.

Runs in the parent, in callers' threads and, at interpreter exit, in the
thread that runs the exit hooks. Imports ``_calls``.

``concurrent.futures`` promises that "the program will not exit until all
pending futures are done", shut down or not. Each pool's ``PendingWork``
holds its queues of submits (each holds its futures: tracking a million
futures one by one would cost every submit a lock and a callback) and the
futures of its other calls (the futures face's ``map``); one exit hook waits
for those of every pool, after which pools accept no more submits.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import weakref
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from functools import partial
from typing import Any

from corepool._calls import CallQueue

__all__ = ["PendingWork", "is_exiting"]

_lock = threading.Lock()
_futures_everywhere: set[Future[Any]] = set()
_queues_everywhere: weakref.WeakSet[CallQueue] = weakref.WeakSet()
_exiting = False
_hook_registered = False


class PendingWork:
    """One pool's unfinished work: its queues of submits, and other calls' futures."""

    def __init__(self) -> None:
        self._futures: set[Future[Any]] = set()
        self._queues: weakref.WeakSet[CallQueue] = weakref.WeakSet()
        _register_exit_hook()

    def add_queue(self, queue: CallQueue) -> None:
        """Count the futures of ``queue`` (a pool's open queue of submits) as pending."""
        self._queues.add(queue)
        with _lock:
            _queues_everywhere.add(queue)

    def track(self, future: Future[Any]) -> None:
        """Count ``future`` as pending until it is done."""
        with _lock:
            self._futures.add(future)
            _futures_everywhere.add(future)
        future.add_done_callback(partial(_untrack, self._futures))

    def cancel(self) -> None:
        """Cancel the submits no worker has taken, and the tracked futures not running."""
        for queue in list(self._queues):
            queue.cancel_queued()
        with _lock:
            futures = list(self._futures)
        for future in futures:
            future.cancel()


def _untrack(futures: set[Future[Any]], future: Future[Any]) -> None:
    with _lock:
        futures.discard(future)
        _futures_everywhere.discard(future)


def is_exiting() -> bool:
    """Whether the interpreter is exiting: pools then accept no more ``submit`` calls."""
    return _exiting


def _register_exit_hook() -> None:
    """Register, once, the interpreter-exit hook that waits for pending futures.

    A threading exit hook (as ``concurrent.futures`` uses) runs before
    ``atexit`` ones, where a pool's finalizer then stops the pools left open.
    """
    global _hook_registered
    with _lock:
        if _hook_registered:
            return
        _hook_registered = True
    register = getattr(threading, "_register_atexit", atexit.register)
    with contextlib.suppress(RuntimeError):  # the interpreter is exiting already
        register(_wait_for_futures)


def _wait_for_futures() -> None:
    """At interpreter exit, wait until every pending future of every pool is done."""
    global _exiting
    with _lock:
        _exiting = True
        pending = list(_futures_everywhere)
        queues = list(_queues_everywhere)
    wait_for_futures(pending + [future for queue in queues for future in queue.pending_futures()])
