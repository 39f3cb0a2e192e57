"""corepool's fork server: a small single-threaded process that forks workers.

Runs in its own process, started once per parent (see ``_spawn.ForkServer``).
It imports the worker code and any preloaded modules once, then forks a
worker per request in a millisecond or two; once idle, it also loads
cloudpickle for the workers it forks later. Being single-threaded, it can
fork safely, which the parent (running the scheduler thread) cannot. It never
imports the parent's ``__main__``.

Requests arrive on a Unix socket, each with three file descriptors: the
worker's connection, the status board and a pipe on which the server writes
the worker's exit status once it has reaped it. The server exits when the
parent closes the socket (or dies).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import socket
import struct
import sys
from typing import NoReturn

from corepool._transport.channel import recv_exactly
from corepool._transport.pickling import BY_VALUE_MODULE, loads

__all__ = ["EXIT_STATUS", "PID", "serve"]

PID = struct.Struct("q")
EXIT_STATUS = struct.Struct("i")
_IDLE_S = 0.05  # no request for this long: the server is idle


def serve(ctrl_fd: int) -> None:
    """Serve fork requests on ``ctrl_fd`` until the parent hangs up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The worker's code, once, before any fork (the parent imports this
    # module for its constants only, and so not the worker's code).
    importlib.import_module("corepool._worker")

    ctrl = socket.socket(fileno=ctrl_fd)
    size = PID.unpack(recv_exactly(ctrl, PID.size))[0]
    sys_path, preload = loads(recv_exactly(ctrl, size))
    sys.path[:] = sys_path + [p for p in sys.path if p not in sys_path]
    for name in preload:
        importlib.import_module(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    ctrl.sendall(b"R")
    status_pipes: dict[int, int] = {}
    # Loaded once the server is idle, so that it never delays the first
    # workers: a later worker that must unpickle a function sent by value
    # then finds cloudpickle loaded (by_value imports it).
    warm_up = [BY_VALUE_MODULE]
    while True:
        readable, _, _ = select.select(
            [ctrl.fileno(), wake_r], [], [], _IDLE_S if warm_up else None
        )
        if not readable:
            importlib.import_module(warm_up.pop())
            continue
        if wake_r in readable:
            os.read(wake_r, 4096)
            _reap(status_pipes)
        if ctrl.fileno() in readable:
            message, fds, _, _ = socket.recv_fds(ctrl, 1, 3)
            if not message:
                return  # the parent closed the socket or died
            pid = os.fork()
            if pid == 0:
                _become_worker(fds, [ctrl.fileno(), wake_r, wake_w, *status_pipes.values()])
            conn_fd, board_fd, status_fd = fds
            os.close(conn_fd)
            os.close(board_fd)
            status_pipes[pid] = status_fd
            ctrl.sendall(PID.pack(pid))


def _become_worker(fds: list[int], inherited: list[int]) -> NoReturn:
    from corepool import _worker  # noqa: PLC0415  # imported by serve() already

    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in inherited:
        os.close(fd)
    conn_fd, board_fd, status_fd = fds
    os.close(status_fd)
    _worker.serve_and_exit(conn_fd, board_fd)


def _reap(status_pipes: dict[int, int]) -> None:
    while status_pipes:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status_pipes.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):  # the parent may no longer listen
                os.write(fd, EXIT_STATUS.pack(os.waitstatus_to_exitcode(status)))
            os.close(fd)
