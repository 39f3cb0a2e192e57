"""The standard library's own process objects, pickled the way its spawn pickles them.

Runs in the parent (``sent_as_when_spawning``) and in workers (``_SentFd``
rebuilds there). A ``multiprocessing.Queue``, ``Lock`` or ``Connection``
agrees to be pickled only while a process is being spawned ("should only be
shared between processes through inheritance"), and its descriptors then
travel with the new process. While corepool sends what a new worker or
process needs (a ``Process``'s target, a pool's initializer and its
arguments), ``sent_as_when_spawning`` makes the calling thread the stdlib's
"spawning popen": those objects pickle, their descriptors ride with
corepool's message, and the stdlib's ``ForkingPickler`` reducers are in
``copyreg.dispatch_table``, which corepool's pickling reads.

A lock created in a ``fork`` context still refuses (the stdlib's own rule:
it cannot reach a process that was not forked from its owner).

A stdlib ``Connection`` (a ``multiprocessing.Pipe`` end) anywhere else that
corepool pickles, say in a pool task's arguments, travels as corepool's own
objects do: its descriptor rides with the message. Pickled plainly it would
keep its descriptor's number, which means nothing in another process.
Pickled by anything but corepool, it pickles exactly as before.
"""

from __future__ import annotations

import contextlib
import copyreg
import multiprocessing.connection as _stdlib_connection
import multiprocessing.context as _stdlib_context
import multiprocessing.reduction as _stdlib_reduction
import os
import threading
from collections.abc import Iterator
from typing import Any

from corepool._transport.buffers import PassFd, packing

__all__ = ["sent_as_when_spawning"]

_FD_ROUTE = (
    "a descriptor of a multiprocessing object travels to a corepool worker or process "
    "only while it starts; it was pickled some other way."
)


class _SentFd:
    """A descriptor that a stdlib object (a ``Connection``) sends to the child as it starts.

    ``multiprocessing.reduction.DupFd`` asks the spawning popen for one of
    these; in the child, ``detach()`` gives the child's own descriptor.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def detach(self) -> int:
        """The descriptor, now owned by the caller."""
        return self.fd

    def __reduce__(self) -> tuple[Any, ...]:
        return _SentFd, (PassFd(self.fd, _FD_ROUTE),)


class _Spawning:
    """What the stdlib asks of the "spawning popen" while its objects pickle."""

    def duplicate_for_child(self, fd: int) -> int:
        """The descriptor to send: the same one (corepool's transport duplicates it)."""
        return fd

    def DupFd(self, fd: int) -> _SentFd:  # noqa: N802 (the stdlib's name)
        """Wrap ``fd`` to travel with the message."""
        return _SentFd(fd)


_lock = threading.RLock()
_installed: dict[type, Any] = {}  # what sent_as_when_spawning added to copyreg, while it runs


@contextlib.contextmanager
def sent_as_when_spawning() -> Iterator[None]:
    """While this runs, the stdlib's process objects pickle as for a process being spawned.

    One thread at a time: the spawning popen is the stdlib's thread-local, but
    ``copyreg.dispatch_table`` is global. Reentrant: an inner use changes nothing.
    """
    with _lock:
        if _stdlib_context.get_spawning_popen() is not None:  # this thread's outer use
            yield
            return
        _installed.update(
            (kind, reducer)
            for kind, reducer in _stdlib_reduction.ForkingPickler._extra_reducers.items()  # type: ignore[attr-defined]
            # the stdlib's own: corepool's types pickle themselves for corepool
            if kind not in copyreg.dispatch_table
            and reducer.__module__.startswith("multiprocessing")
        )
        copyreg.dispatch_table.update(_installed)
        _stdlib_context.set_spawning_popen(_Spawning())  # type: ignore[arg-type]
        try:
            yield
        finally:
            _forget()


def _forget() -> None:
    for kind in _installed:
        copyreg.dispatch_table.pop(kind, None)
    _installed.clear()
    _stdlib_context.set_spawning_popen(None)


def _after_fork_in_child() -> None:
    """A child forked while objects were being sent (``fork``, from any thread) has none of it."""
    global _lock
    _forget()
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _reduce_connection(conn: _stdlib_connection.Connection) -> tuple[Any, ...]:
    """A stdlib ``Connection``: by descriptor when corepool sends it, else as plain pickle does."""
    if not packing():
        plain = object.__reduce_ex__(conn, 4)
        assert isinstance(plain, tuple)
        return plain
    route = PassFd(conn.fileno(), _FD_ROUTE)
    return _stdlib_connection.Connection, (route, conn.readable, conn.writable)


# Only the exact type: the stdlib's ForkingPickler puts its own reducer first,
# and corepool.multiprocessing's Connection pickles itself.
copyreg.pickle(_stdlib_connection.Connection, _reduce_connection)
