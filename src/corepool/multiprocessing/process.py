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

import multiprocessing.process as _stdlib_process
import multiprocessing.util as _stdlib_util
import os
from typing import ClassVar, NoReturn

import corepool.process
from corepool._transport import exit_hooks
from corepool.multiprocessing import _start

__all__ = ["ForkProcess", "ForkServerProcess", "Process", "SpawnProcess"]


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
        self._task.start()  # its stdlib objects travel as when spawning (see Process.start)
        pid = self._task.pid
        assert pid is not None
        self.pid = pid
        self.sentinel = _open_sentinel(pid)
        self._finalizer = _stdlib_util.Finalize(self, os.close, (self.sentinel,))

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        """The exit code, or ``None`` while the child runs (waits for the end without WNOHANG)."""
        return self.wait(0.0 if flag & os.WNOHANG else None)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for the child to end; its exit code, or ``None``."""
        if self.returncode is None:
            self._task.join(timeout)
            self.returncode = self._task.exitcode
        return self.returncode

    def terminate(self) -> None:
        """Send SIGTERM, unless the child has ended."""
        if self.returncode is None:
            self._task.terminate()

    def kill(self) -> None:
        """Send SIGKILL, unless the child has ended."""
        if self.returncode is None:
            self._task.kill()

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
