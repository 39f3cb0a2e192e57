"""Start, watch and stop worker processes: the parent side of process life.

Runs in the parent (in the scheduler thread). Three ways to start a worker,
none of which imports the caller's ``__main__`` in the child:

* ``forkserver``: ask corepool's fork server (``_forkserver.py``), a
  single-threaded process started once, to fork a worker: milliseconds.
* ``spawn``: a fresh interpreter running the worker loop.
* ``fork``: ``os.fork()`` of the parent itself, for copy-on-write sharing.

Each worker gets one duplex connection, its end of the pool's status board,
and (on Linux) a pidfd that becomes readable when it ends, so the scheduler
can wait on it beside the connections.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

from corepool import _forkserver
from corepool._protocol import THREAD_VARIABLES, Packed, WorkerConfig
from corepool._transport import exit_hooks
from corepool._transport.channel import Channel, recv_exactly
from corepool._transport.pickling import dumps
from corepool._transport.status import forget_shared_board, shared_board
from corepool.errors import PoolError
from corepool.options import StartMethod

__all__ = [
    "PARK_SECONDS",
    "ForkServer",
    "WorkerProcess",
    "WorkerSetup",
    "adopt",
    "forkserver_pids",
    "park",
    "parked_pids",
    "start_worker",
    "worker_environment",
]

logger = logging.getLogger(__name__)

# The folder that holds the corepool package, so that a fresh interpreter can
# import it even when corepool is not installed (run from a source checkout).
_IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# How long the fork server may take to start (a cold interpreter on a busy machine).
_START_TIMEOUT_S = 30.0

# File descriptors that only the parent may hold: a worker made by os.fork()
# closes them at once. Otherwise it would keep, say, another worker's
# parent-side connection open, and that worker would never see EOF when the
# parent dies.
_parent_only_fds: set[int] = set()


def _open_pidfd(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:  # already gone, or a kernel older than 5.3
        return None


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for our child ``pid`` to end, and reap it; ``False`` if it did not.

    Waits on a pidfd (Linux); elsewhere checks every few milliseconds.
    """
    pidfd = _open_pidfd(pid)
    deadline = time.monotonic() + timeout
    try:
        while not _reaped(pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if pidfd is not None:
                select.select([pidfd], [], [], remaining)
            else:
                time.sleep(min(0.005, remaining))
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return True


class WorkerProcess:
    """A started worker: its pid, connection and the means to learn its fate."""

    def __init__(
        self,
        worker_id: int,
        pid: int,
        conn: Channel,
        poll_exitcode: Callable[[], int | None],
        status_fd: int | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.pid = pid
        self.conn = conn
        self.sentinel = _open_pidfd(pid)
        self._poll_exitcode = poll_exitcode
        self._status_fd = status_fd  # forkserver: the server writes the exit status here
        self._exitcode: int | None = None
        self._ended = False
        self.slot = -1  # its slot on the status board, set by the backend
        self.parked_at = 0.0
        _parent_only_fds.add(conn.fileno())

    def exitcode(self, timeout: float = 0.0) -> int | None:
        """The exit code, negative for a signal; ``None`` if unknown within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._ended:
            if self._status_fd is not None:
                self._read_status(deadline)
            else:
                code = self._poll_exitcode()
                if code is not None:
                    self._exitcode, self._ended = code, True
            if self._ended or time.monotonic() >= deadline:
                break
            self._wait_briefly(deadline)
        return self._exitcode

    def _read_status(self, deadline: float) -> None:
        assert self._status_fd is not None
        ready, _, _ = select.select(
            [self._status_fd], [], [], max(0.0, deadline - time.monotonic())
        )
        if ready:
            data = os.read(self._status_fd, _forkserver.EXIT_STATUS.size)
            self._ended = True
            if len(data) == _forkserver.EXIT_STATUS.size:
                self._exitcode = _forkserver.EXIT_STATUS.unpack(data)[0]

    def _wait_briefly(self, deadline: float) -> None:
        remaining = max(0.0, deadline - time.monotonic())
        if self.sentinel is not None:
            select.select([self.sentinel], [], [], remaining)
        else:
            time.sleep(min(0.005, remaining))  # macOS: no pidfd to wait on

    def is_alive(self) -> bool:
        if self._ended:
            return False
        if self.sentinel is not None:  # readable once the process has ended
            ended, _, _ = select.select([self.sentinel], [], [], 0)
            return not ended
        return self.exitcode() is None

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Send ``signum`` unless the process is known to have ended.

        On Linux the signal goes through the pidfd, which names this very
        process: once it is reaped, its pid may belong to another, and a
        signal sent by pid could reach that one.
        """
        if self._ended:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.sentinel is not None:
                signal.pidfd_send_signal(self.sentinel, signum)
            else:
                os.kill(self.pid, signum)

    def hang_up(self) -> None:
        """Close the connection: a waiting worker sees EOF and exits."""
        if not self.conn.closed:
            _parent_only_fds.discard(self.conn.fileno())
            self.conn.close()

    def close(self) -> None:
        """Release the parent's handles; the process itself is not touched. Idempotent."""
        self.hang_up()
        for fd in (self.sentinel, self._status_fd):
            if fd is not None:
                os.close(fd)
        self.sentinel = self._status_fd = None


class WorkerSetup(NamedTuple):
    """What a worker process starts with, before any pool configures it.

    Workers with the same setup are interchangeable: they share a fork
    server, and a parked one can serve any pool that asks for this setup.
    """

    preload: tuple[str, ...] = ()  # modules imported before the worker's first message
    inner_threads: int | None = None  # BLAS/OpenMP threads, set in the environment


def worker_environment(setup: WorkerSetup) -> dict[str, str]:
    """This process's environment, with ``setup``'s thread limit."""
    environment = dict(os.environ)
    if setup.inner_threads is not None:
        environment.update(dict.fromkeys(THREAD_VARIABLES, str(setup.inner_threads)))
    return environment


def start_worker(
    method: StartMethod, worker_id: int, board_fd: int, setup: WorkerSetup | None = None
) -> WorkerProcess:
    """Start one worker process; it waits for its ``WorkerConfig`` on the connection."""
    setup = setup or WorkerSetup()
    parent_sock, child_sock = socket.socketpair()
    try:
        if method == "forkserver":
            server = _forkserver_for(setup)
            pid, status_fd = server.fork_worker(child_sock.fileno(), board_fd)
            child_sock.close()
            return WorkerProcess(
                worker_id,
                pid,
                Channel(parent_sock, blocking=False),
                lambda: None,
                status_fd=status_fd,
            )
        if method == "spawn":
            imports = "".join(f"import {name}; " for name in setup.preload)
            pid = _spawn_python(
                imports + "from corepool._worker import serve_and_exit; serve_and_exit({}, {})",
                [child_sock.fileno(), board_fd],
                worker_environment(setup),
            )
            child_sock.close()
            return WorkerProcess(
                worker_id, pid, Channel(parent_sock, blocking=False), partial(_poll_child, pid)
            )
        return _fork(worker_id, parent_sock, child_sock, board_fd, setup)
    except BaseException:
        parent_sock.close()
        child_sock.close()
        raise


def configure_worker(
    process: WorkerProcess,
    worker_id: int,
    *,
    buffer_threshold: int | None,
    max_memory_bytes: int | None = None,
    initializer: Packed | None = None,
    initializer_fds: Sequence[int] = (),
    shared: Packed | None = None,
    shared_fds: Sequence[int] = (),
    inner_threads: int | None = None,
) -> None:
    """Send a started (or adopted) worker its ``WorkerConfig``: the one way pools and
    ``corepool.Process`` tell a worker who it is. The descriptors are duplicated."""
    config = WorkerConfig(
        worker_id=worker_id,
        slot=process.slot,
        parent_pid=os.getpid(),
        max_memory_bytes=max_memory_bytes,
        sys_path=list(sys.path),
        initializer=initializer,
        buffer_threshold=buffer_threshold,
        shared=shared,
        inner_threads=inner_threads,
        authkey=bytes(multiprocessing.current_process().authkey),
    )
    process.conn.send(dumps(config), [os.dup(fd) for fd in (*shared_fds, *initializer_fds)])


def _fork(
    worker_id: int,
    parent_sock: socket.socket,
    child_sock: socket.socket,
    board_fd: int,
    setup: WorkerSetup,
) -> WorkerProcess:
    from corepool import _worker  # noqa: PLC0415  # the parent itself never needs it

    pid = os.fork()
    if pid == 0:
        parent_sock.close()
        _forget_parent_state()
        # The thread limit is applied by the worker itself (_worker._limit_inner_threads):
        # libraries the parent loaded are running already, so the environment
        # alone would not reach them.
        for name in setup.preload:
            importlib.import_module(name)
        _worker.serve_and_exit(child_sock.detach(), board_fd)
    child_sock.close()
    return WorkerProcess(
        worker_id, pid, Channel(parent_sock, blocking=False), partial(_poll_child, pid)
    )


def _forget_parent_state() -> None:
    """In a worker made by ``os.fork()``: drop what belongs to the parent.

    Its descriptors are closed; the objects that held them are emptied
    without closing anything, so that a descriptor number the child reuses
    is never closed behind its back. No lock is taken: another thread of the
    parent may have held one at the fork, and this child has only one thread.
    """
    for fd in _parent_only_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _parent_only_fds.clear()
    for server in _forkservers.values():
        server.forget()
    for waiting in _parked.values():
        for process in waiting:
            process.conn.detach()
    _forkservers.clear()
    _parked.clear()
    forget_shared_board()


def _reaped(pid: int) -> bool:
    """Whether our child ``pid`` has ended (reaping it now if it has just done so)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped already
    return done != 0


def _poll_child(pid: int) -> int | None:
    """The exit code of our child ``pid`` if it has ended (and reap it), else ``None``."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def _spawn_python(code: str, fds: list[int], environment: dict[str, str]) -> int:
    """Start ``python -c code`` with ``fds`` open in it; ``code`` gets their numbers by format().

    ``posix_spawn`` rather than ``subprocess``: ``subprocess`` waits for the
    child's exec on a pipe, and if another thread of the caller forks at that
    moment (a ``multiprocessing`` pool with ``fork``, say), the forked process
    holds the pipe open and the wait never ends. The descriptors are
    duplicated into the child above every one of them, so no move overwrites
    another.
    """
    first = max(fds) + 1
    targets = list(range(first, first + len(fds)))
    actions = [(os.POSIX_SPAWN_DUP2, fd, first + i) for i, fd in enumerate(fds)]
    source = f"import sys; sys.path.append({_IMPORT_ROOT!r}); " + code.format(*targets)
    return os.posix_spawn(
        sys.executable, [sys.executable, "-c", source], environment, file_actions=actions
    )


class ForkServer:
    """The parent's handle on a running fork server process."""

    def __init__(self, setup: WorkerSetup) -> None:
        parent_sock, child_sock = socket.socketpair()
        self.pid = _spawn_python(
            "from corepool._forkserver import serve; serve({})",
            [child_sock.fileno()],
            worker_environment(setup),
        )
        child_sock.close()
        self._ctrl = parent_sock
        self._lock = threading.Lock()
        self._exitcode: int | None = None
        _parent_only_fds.add(parent_sock.fileno())
        config = dumps((list(sys.path), list(setup.preload)))
        parent_sock.sendall(_forkserver.PID.pack(len(config)) + config)
        parent_sock.settimeout(_START_TIMEOUT_S)
        try:
            ready = parent_sock.recv(1) == b"R"
        except OSError:
            ready = False
        parent_sock.settimeout(None)
        if not ready:
            self.close()
            raise PoolError(
                f"corepool's fork server (pid {self.pid}) failed to start "
                f"(preload {setup.preload}): see its error output above; a module to "
                "preload may fail to import. Or use start_method='spawn'."
            )
        logger.debug("fork server started, pid %d, %s", self.pid, setup)

    def is_alive(self) -> bool:
        if self._exitcode is None:
            self._exitcode = _poll_child(self.pid)
        return self._exitcode is None

    def forget(self) -> None:
        """Drop the socket without closing it (in a forked child: it is the parent's)."""
        self._ctrl.detach()

    def fork_worker(self, conn_fd: int, board_fd: int) -> tuple[int, int]:
        """Have the server fork a worker; return its pid and the exit-status pipe."""
        status_r, status_w = os.pipe()
        try:
            with self._lock:
                socket.send_fds(self._ctrl, [b"F"], [conn_fd, board_fd, status_w])
                reply = recv_exactly(self._ctrl, _forkserver.PID.size)
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        return _forkserver.PID.unpack(reply)[0], status_r

    def close(self) -> None:
        """Hang up; the server exits on its own. Running workers are unaffected."""
        _parent_only_fds.discard(self._ctrl.fileno())
        self._ctrl.close()
        if self._exitcode is None and not _wait_for_exit(self.pid, _START_TIMEOUT_S):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


_forkservers: dict[WorkerSetup, ForkServer] = {}
_forkservers_lock = threading.Lock()


def _forkserver_for(setup: WorkerSetup) -> ForkServer:
    """The running fork server for ``setup``, started (or restarted) when needed."""
    with _forkservers_lock:
        server = _forkservers.get(setup)
        if server is None or not server.is_alive():
            if server is not None:
                server.close()
            server = _forkservers[setup] = ForkServer(setup)
        return server


def forkserver_pids() -> list[int]:
    """Pids of the fork servers this process runs; they live until it exits."""
    with _forkservers_lock:
        return [server.pid for server in _forkservers.values()]


# -- parked workers -------------------------------------------------------------
#
# A pool that closes hands its idle workers here instead of stopping them; the
# next pool started the same way adopts them, so that opening a pool right
# after closing one costs no process start. A parked worker that nobody adopts
# within PARK_SECONDS exits by itself (it waits with that timeout); the parent
# forgets it a little earlier, so that it never adopts one that is leaving.

PARK_SECONDS = 10.0
_ADOPT_WITHIN_S = PARK_SECONDS - 2.0
_LEAVE_S = 1.0  # a parked worker let go exits within this, or is killed

_parked: dict[tuple[str, WorkerSetup], list[WorkerProcess]] = {}
_parked_lock = threading.Lock()


def park(key: tuple[str, WorkerSetup], process: WorkerProcess) -> None:
    """Keep an idle worker (already sent ``Park``) for the next pool with the same key."""
    process.parked_at = time.monotonic()
    with _parked_lock:
        _parked.setdefault(key, []).append(process)


def adopt(key: tuple[str, WorkerSetup]) -> WorkerProcess | None:
    """A parked worker started the same way, or ``None``; stale ones are let go."""
    now = time.monotonic()
    with _parked_lock:
        waiting = _parked.get(key, [])
        while waiting:
            process = waiting.pop()
            if now - process.parked_at < _ADOPT_WITHIN_S and process.is_alive():
                return process
            _let_go(process)
    return None


def _let_go(process: WorkerProcess) -> None:
    """Hang up on a parked worker, which then exits, and reap it.

    One that has not left a second later is killed: it holds no task, and
    something keeps it from exiting (a stdlib ``Queue`` a task filled and
    nobody reads, whose feeder its exit waits for, as the stdlib's own
    processes do); let go as it is, it would run on untracked.
    """
    process.hang_up()
    if process.exitcode(timeout=_LEAVE_S) is None:
        logger.debug("parked worker %d did not exit when let go; killing it", process.pid)
        process.kill()
        process.exitcode(timeout=_LEAVE_S)
    process.close()
    shared_board().release(process.slot)


def parked_pids() -> list[int]:
    """Pids of the workers parked for reuse; each exits within PARK_SECONDS unless adopted."""
    with _parked_lock:
        return [p.pid for waiting in _parked.values() for p in waiting]


def _release_parked() -> None:
    with _parked_lock:
        for waiting in _parked.values():
            for process in waiting:
                _let_go(process)
        _parked.clear()


def _stop_forkservers() -> None:
    with _forkservers_lock:
        for server in _forkservers.values():
            server.close()
        _forkservers.clear()


exit_hooks.register(_release_parked, exit_hooks.Stage.PARKED)
exit_hooks.register(_stop_forkservers, exit_hooks.Stage.FORK_SERVERS)
