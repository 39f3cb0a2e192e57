"""``Process``: the standard library's ``multiprocessing.Process``, started by corepool.

Runs in the caller (``Process``, ``_Popen``) and in the child (``_run_child``).
The class is the stdlib's own ``BaseProcess`` (names, ``daemon``, ``authkey``,
``sentinel``, ``exitcode``, ``active_children()``, subclassing with ``run``),
and only its launcher, the ``_Popen`` hook that ``BaseProcess.start`` calls,
is corepool's: the child is a one-task ``corepool.Process`` whose task is the
stdlib's own ``_bootstrap`` of the process object. So the target and its
arguments travel through corepool's transport (corepool's locks, queues and
shared values by handle; lambdas and the script's functions by value), no
``__main__`` guard is needed, and the child ends with its parent.
"""

from __future__ import annotations

import contextlib
import copyreg
import multiprocessing.context as _stdlib_context
import multiprocessing.process as _stdlib_process
import multiprocessing.reduction as _stdlib_reduction
import multiprocessing.util as _stdlib_util
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any, ClassVar, NoReturn

import corepool.process
from corepool._transport import exit_hooks
from corepool._transport.buffers import PassFd
from corepool.multiprocessing import _start

__all__ = ["ForkProcess", "ForkServerProcess", "Process", "SpawnProcess"]

_FD_ROUTE = (
    "a descriptor of a multiprocessing object travels to a corepool.multiprocessing "
    "Process only while it starts; it was pickled some other way."
)


class _SentFd:
    """A descriptor that a stdlib object (a ``Connection``) sends to the child as it starts.

    ``multiprocessing.reduction.DupFd`` asks the launcher for one of these; in
    the child, ``detach()`` gives the child's own descriptor.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def detach(self) -> int:
        """The descriptor, now owned by the caller."""
        return self.fd

    def __reduce__(self) -> tuple[Any, ...]:
        return _SentFd, (PassFd(self.fd, _FD_ROUTE),)


def _open_sentinel(pid: int) -> int:
    """A descriptor that becomes readable when process ``pid`` ends (a pidfd)."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:  # it has ended and been reaped already
        read_end, write_end = os.pipe()
        os.close(write_end)
        return read_end


def _run_child(process: _stdlib_process.BaseProcess) -> NoReturn:
    """In the child: run the process object as the stdlib's own bootstrap does, then end.

    ``_bootstrap`` runs the target, prints an uncaught exception, runs the
    stdlib's finalizers and flushes the standard streams; the process then
    ends with its exit code, as the stdlib's children do, after corepool's
    exit hooks (the items it put on a corepool ``Queue`` are sent first).
    """
    parent = _open_sentinel(process._parent_pid)  # type: ignore[attr-defined]
    code: int = process._bootstrap(parent_sentinel=parent)  # type: ignore[attr-defined]
    exit_hooks.run()
    os._exit(code)


_reducers_lock = threading.Lock()
_installed: dict[type, Any] = {}  # what _stdlib_reducers added to copyreg, while it runs


@contextlib.contextmanager
def _stdlib_reducers(popen: _Popen) -> Iterator[None]:
    """Let the stdlib's own objects among a process's arguments travel, as its spawn does.

    While a process starts, this thread is the stdlib's "spawning popen", so
    an ``AuthenticationString`` or a stdlib ``Lock`` agrees to be pickled, and
    the reducers the stdlib registers with its ``ForkingPickler`` (a stdlib
    ``Connection``, socket, or ``multiprocessing.heap`` arena, whose
    descriptors then travel with corepool's message) are in
    ``copyreg.dispatch_table``, which corepool's pickling reads. Only for
    the moment of the start, one start at a time.
    """
    with _reducers_lock:
        _installed.update(
            (kind, reducer)
            for kind, reducer in _stdlib_reduction.ForkingPickler._extra_reducers.items()  # type: ignore[attr-defined]
            # the stdlib's own: corepool's types pickle themselves for corepool
            if kind not in copyreg.dispatch_table
            and reducer.__module__.startswith("multiprocessing")
        )
        copyreg.dispatch_table.update(_installed)
        _stdlib_context.set_spawning_popen(popen)  # type: ignore[arg-type]
        try:
            yield
        finally:
            _forget_reducers()


def _forget_reducers() -> None:
    for kind in _installed:
        copyreg.dispatch_table.pop(kind, None)
    _installed.clear()
    _stdlib_context.set_spawning_popen(None)


def _after_fork_in_child() -> None:
    """A child forked during a start (with ``fork``, from any thread) starts with none of it."""
    global _reducers_lock
    _forget_reducers()
    _reducers_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Popen:
    """What ``BaseProcess.start`` asks of a launcher, done with a one-task ``corepool.Process``."""

    def __init__(self, process: _stdlib_process.BaseProcess, method: str) -> None:
        self.returncode: int | None = None
        self._task = corepool.process.Process(
            _run_child,
            args=(process,),
            name=process.name,
            start_method=_start.check_method(method),
        )
        with _stdlib_reducers(self):
            self._task.start()
        pid = self._task.pid
        assert pid is not None
        self.pid = pid
        self.sentinel = _open_sentinel(pid)
        self._finalizer = _stdlib_util.Finalize(self, os.close, (self.sentinel,))

    def duplicate_for_child(self, fd: int) -> int:
        """The descriptor to send: the same one (corepool's transport duplicates it)."""
        return fd

    def DupFd(self, fd: int) -> _SentFd:  # noqa: N802 (the stdlib's name)
        """Wrap ``fd`` to travel with the process object."""
        return _SentFd(fd)

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        """The exit code, or ``None`` while the child runs (waits for the end without WNOHANG)."""
        return self.wait(0.0 if flag & os.WNOHANG else None)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for the child to end; its exit code, or ``None``."""
        if self.returncode is None:
            self._task.join(timeout)
            self.returncode = self._task.exitcode
        return self.returncode

    def _signal(self, number: signal.Signals) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, number)

    def terminate(self) -> None:
        """Send SIGTERM, unless the child has ended."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL, unless the child has ended."""
        self._signal(signal.SIGKILL)

    def close(self) -> None:
        """Release the sentinel."""
        self._finalizer()


class Process(_stdlib_process.BaseProcess):
    """``multiprocessing.Process``, started by corepool's engine.

    The same constructor (``group``, ``target``, ``name``, ``args``,
    ``kwargs``, ``daemon``), methods and attributes as the stdlib's, and
    subclasses may override ``run``. The start method is the one set with
    ``set_start_method`` (or of the context it came from). Arguments may hold
    corepool's queues, locks and shared values, lambdas and the script's own
    functions, under every start method.

    Example:
        >>> p = Process(target=print, args=("hello",))
        >>> p.start()
        >>> p.join()
    """

    _corepool_method: ClassVar[str | None] = None
    # Read by the stdlib's _bootstrap in the child: None leaves its own default alone.
    _start_method: ClassVar[str | None] = None

    @staticmethod
    def _Popen(process: _stdlib_process.BaseProcess) -> _Popen:  # noqa: N802 (the stdlib's hook)
        method = getattr(process, "_corepool_method", None) or _start.get_start_method()
        return _Popen(process, method)


class ForkProcess(Process):
    """A ``Process`` started with ``fork``."""

    _corepool_method = "fork"


class SpawnProcess(Process):
    """A ``Process`` started with ``spawn``."""

    _corepool_method = "spawn"


class ForkServerProcess(Process):
    """A ``Process`` started by corepool's fork server."""

    _corepool_method = "forkserver"
