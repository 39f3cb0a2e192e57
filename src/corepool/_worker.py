"""The worker loop: receive a chunk, run its tasks, send the results back.

Runs in every worker process, whatever started it (fork, the fork server or
a fresh interpreter). It imports only ``_protocol``, ``_transport`` and
``errors`` so that a worker starts fast and cannot reach parent-side state.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import itertools
import multiprocessing
import os
import resource
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from corepool._protocol import (
    STATUS_CHUNK,
    STATUS_FIELDS,
    STATUS_IDLE,
    STATUS_POSITION,
    STATUS_STARTED,
    THREAD_VARIABLES,
    CallMode,
    ChunkDone,
    ErrorSite,
    InitFailed,
    Park,
    Preload,
    Ready,
    RemoteError,
    RunChunk,
    Stop,
    WorkerConfig,
)
from corepool._transport import exit_hooks
from corepool._transport.buffers import open_segments, pack, split_fds
from corepool._transport.channel import Channel
from corepool._transport.pickling import (
    describe_unpicklable,
    dumps,
    format_exception,
    in_process_error,
    loads,
    new_main_module,
    qualified_type_name,
    remote_error,
)
from corepool._transport.status import StatusBoard

__all__ = [
    "Outcome",
    "give_thread_state",
    "run_detached_chunk",
    "run_tasks",
    "serve",
    "serve_and_exit",
    "worker_state",
]

_state: dict[str, Any] = {}
_thread_state = threading.local()


def worker_state() -> dict[str, Any]:
    """A dict that lives as long as the worker running the current task.

    Fill it in the pool's ``initializer`` (a loaded model, a database
    connection) and read it from tasks: it is never sent anywhere. In the
    parent process, outside any worker, it is a dict of the parent's own.
    """
    state: dict[str, Any] | None = getattr(_thread_state, "state", None)
    return _state if state is None else state


def give_thread_state(state: dict[str, Any]) -> None:
    """Make ``state`` what ``worker_state()`` returns in the calling thread (a thread worker)."""
    _thread_state.state = state


def serve_and_exit(conn_fd: int, board_fd: int) -> NoReturn:
    """Run ``serve`` in a forked child and end the process, never returning into the caller."""
    code = 1
    try:
        code = serve(conn_fd, board_fd)
        exit_hooks.run()
    except SystemExit as exc:  # a task called sys.exit(): keep its code, as Python would
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        sys.stderr.write(format_exception(exc))
    finally:
        for stream in (sys.stdout, sys.stderr):  # a task may have replaced or closed them
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.flush()
        os._exit(code)


def serve(conn_fd: int, board_fd: int) -> int:
    """Run a worker until the parent says stop or goes away; return the exit code.

    Args:
        conn_fd: This worker's end of its duplex connection to the parent.
        board_fd: The file descriptor of the parent's status board.
    """
    # Whatever started it (a fork of the parent included), the worker's script
    # namespace starts empty and is filled by what the parent sends: a class
    # of the script then has one identity in the worker, whichever function
    # or argument brought it.
    new_main_module()
    conn = Channel(socket.socket(fileno=conn_fd), blocking=True)
    # Only the parent decides what Ctrl-C means: a terminal sends SIGINT to the
    # whole process group, and a worker dying of it would look like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    message = conn.recv()
    assert message is not None
    config: WorkerConfig = loads(message.payload)
    board = StatusBoard(config.slot + 1, fd=board_fd)
    threading.Thread(
        target=_exit_with_parent,
        args=(config.parent_pid,),
        name="corepool-parent-watch",
        daemon=True,
    ).start()
    exit_hooks.register(_flush_stdlib_queues, exit_hooks.Stage.FLUSH)
    if not _configure(conn, config, message.fds):
        return 1
    return _loop(conn, board.slot(config.slot))


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the parent process ends, even in the middle of a task.

    The main thread may be deep in a task that never reads the connection
    again; this thread waits on a pidfd of the parent (Linux), or checks
    once a second elsewhere, and ends the process.
    """
    try:
        parent = os.pidfd_open(parent_pid)
    except (AttributeError, OSError):
        while _is_running(parent_pid):
            time.sleep(_PARENT_CHECK_S)
    else:
        select.select([parent], [], [])
    os._exit(0)


_PARENT_CHECK_S = 1.0


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _configure(conn: Channel, config: WorkerConfig, fds: list[int]) -> bool:
    """Apply a pool's configuration and run its initializer; tell the parent how it went."""
    global _memory_limit, _buffer_threshold
    _memory_limit = config.max_memory_bytes
    _buffer_threshold = config.buffer_threshold
    if config.inner_threads is not None:
        _limit_inner_threads(config.inner_threads)
    sys.path[:] = config.sys_path + [p for p in sys.path if p not in config.sys_path]
    multiprocessing.current_process().authkey = config.authkey
    shared_fds, initializer_fds = split_fds(config.shared, fds)
    try:
        if config.shared is not None:
            _state.update(open_segments(config.shared, shared_fds, writable_copies=False).load())
        if config.initializer is not None:
            setup = open_segments(config.initializer, initializer_fds, writable_copies=False)
            initializer, initargs = setup.load()
            initializer(*initargs)
    except BaseException as exc:
        error = remote_error(exc)
        # What the initializer logged to a stdlib Queue reaches it before the
        # parent, told of the failure, stops this worker.
        _flush_stdlib_queues()
        _tell(conn, InitFailed(os.getpid(), error))
        return False
    return _tell(conn, Ready(os.getpid()))


def _tell(conn: Channel, message: Ready | InitFailed) -> bool:
    """Send ``message``; ``False`` if the parent has hung up (its pool stopped as this started)."""
    try:
        conn.send(dumps(message))
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _flush_stdlib_queues() -> None:
    """Send what this process put on the stdlib's own queues, as its processes do at exit.

    The stdlib's finalizers join each queue's feeder thread once its buffer
    is sent; each runs only in the process that registered it, so those a
    forked worker inherited from the parent do nothing here.
    """
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util._run_finalizers(0)
        util._run_finalizers()


# Modules that load BLAS or OpenMP thread pools.
_THREADED_MODULES = ("numpy", "scipy", "torch", "sklearn")


def _limit_inner_threads(threads: int) -> None:
    """Let BLAS and OpenMP use ``threads`` threads in this worker.

    The environment tells libraries that load from now on. Those already
    loaded (a fork of a parent that imported numpy, an adopted worker of
    another setup) are limited with threadpoolctl, unless the environment
    already said the same when this process started.
    """
    wanted = str(threads)
    already = all(os.environ.get(name) == wanted for name in THREAD_VARIABLES)
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, wanted))
    if already or not any(name in sys.modules for name in _THREADED_MODULES):
        return
    threadpoolctl = importlib.import_module("threadpoolctl")  # a dependency, loaded only here
    threadpoolctl.threadpool_limits(limits=threads)


def _loop(conn: Channel, status: memoryview) -> int:
    functions: dict[int, Callable[..., Any]] = {}
    while True:
        try:
            received = conn.recv()
        except (EOFError, OSError):
            return 0  # the parent is gone: nobody is left to read results
        assert received is not None
        started = time.perf_counter()
        message = loads(received.payload)
        if isinstance(message, RunChunk):
            for fn_id in message.forget:
                functions.pop(fn_id, None)
            done, fds = _run_chunk(message, received.fds, functions, status, started)
            conn.send(done, fds)
        elif isinstance(message, Preload):
            for name in message.modules:
                with contextlib.suppress(ImportError):  # the message that needs it will say so
                    importlib.import_module(name)
        elif isinstance(message, Park):
            functions.clear()
            _state.clear()
            new_main_module()
            try:
                adoption = conn.recv(message.timeout_s)
                if adoption is None:
                    return 0  # nobody adopted this worker: end quietly
                config = loads(adoption.payload)
            except (EOFError, OSError):
                return 0
            if not (isinstance(config, WorkerConfig) and _configure(conn, config, adoption.fds)):
                return 1
        else:
            assert isinstance(message, Stop)
            return 0


def _run_chunk(
    message: RunChunk,
    fds: list[int],
    functions: dict[int, Callable[..., Any]],
    status: memoryview,
    started: float,
) -> tuple[bytes, list[int]]:
    """Run a chunk; return its pickled ``ChunkDone`` and the descriptors to send with it."""
    count = message.tasks
    item_fds, fn_fds = split_fds(message.items, fds)
    try:
        payload = open_segments(message.items, item_fds, writable_copies=False)
        fn = functions.get(message.fn_id)
        if fn is None:
            assert message.fn is not None, "the parent sends each function once per worker"
            function = open_segments(message.fn, fn_fds, writable_copies=False)
            fn = functions[message.fn_id] = function.load()
        items = payload.load()
    except Exception as exc:
        error = remote_error(exc, ErrorSite.ARGUMENTS)
        return _encode_done(message.chunk_id, [None] * count, dict.fromkeys(range(count), error))
    decoded = time.perf_counter()
    catching = BaseException if message.exits_are_errors else Exception
    if message.timed:  # before the chunk id: the parent must never see a stale start time
        status[STATUS_STARTED] = time.monotonic_ns()
    status[STATUS_CHUNK] = message.chunk_id
    if message.timed:
        results, errors = _call_each_timed(fn, message.mode, items, status, catching)
    else:
        results, errors = run_tasks(fn, message.mode, items, message.stride, status, catching)
    status[STATUS_CHUNK] = STATUS_IDLE
    computed = time.perf_counter()
    return _encode_done(
        message.chunk_id,
        results,
        errors,
        catching=catching,
        decode_s=decoded - started,
        compute_s=computed - decoded,
        computed_at=computed,
    )


Outcome = tuple[list[Any], dict[int, RemoteError] | None]


def run_tasks(
    fn: Callable[..., Any],
    mode: CallMode,
    items: Sequence[Any],
    stride: int,
    status: memoryview,
    catching: type[BaseException],
    *,
    in_process: bool = False,
) -> Outcome:
    """Run every task of a chunk: each one tracked in ``status``, or a stride at a time.

    Each result is in its task's place; an error leaves ``None`` there and
    its ``RemoteError`` in the dict, by position. Thread and cluster
    backends run their chunks through this too; ``in_process`` (threads)
    keeps each exception itself in its ``RemoteError`` instead of a pickle.
    """
    record = _record_live if in_process else _record
    if stride > 1 and mode is not CallMode.CALL:
        return _call_in_strides(fn, mode, items, stride, status, catching, record)
    return _call_each(fn, mode, items, status, catching, record)


def run_detached_chunk(
    fn: Callable[..., Any], mode: CallMode, items: Sequence[Any], stride: int
) -> bytes:
    """Run a chunk with no parent connection (a cluster's worker); return its pickled ``ChunkDone``.

    Whatever a task raises is its error, ``SystemExit`` included: the
    process belongs to the cluster, not to the task. Results are pickled
    here as a worker pickles them (a result that will not pickle becomes its
    task's ``SerializationError``), every buffer in band.
    """
    started = time.perf_counter()
    status = memoryview(array.array("q", [STATUS_IDLE] * STATUS_FIELDS))
    results, errors = run_tasks(fn, mode, items, stride, status, BaseException)
    computed = time.perf_counter()
    done, _ = _encode_done(
        0,
        results,
        errors,
        compute_s=computed - started,
        computed_at=computed,
        catching=BaseException,
    )
    return done


def _call_each(
    fn: Callable[..., Any],
    mode: CallMode,
    items: Sequence[Any],
    status: memoryview,
    catching: type[BaseException],
    record: Recorder,
) -> Outcome:
    """Run every task, writing its position to the status slot before each call.

    If a task kills the process, the parent reads exactly which one it was.
    What a task raises of ``catching`` is its error; anything else (a
    ``SystemExit``, when ``catching`` is ``Exception``) ends the worker.
    """
    results: list[Any] = []
    append = results.append
    errors: dict[int, RemoteError] | None = None
    # One loop per call mode, so that the hot loop does no per-task dispatch.
    if mode is CallMode.ITEM:
        for position, item in enumerate(items):
            status[STATUS_POSITION] = position
            try:
                append(fn(item))
            except catching as exc:
                errors = record(errors, position, exc, append)
    elif mode is CallMode.STAR:
        for position, args in enumerate(items):
            status[STATUS_POSITION] = position
            try:
                append(fn(*args))
            except catching as exc:
                errors = record(errors, position, exc, append)
    else:
        for position, (args, kwargs) in enumerate(items):
            status[STATUS_POSITION] = position
            try:
                append(fn(*args, **kwargs))
            except catching as exc:
                errors = record(errors, position, exc, append)
    return results, errors


def _call_each_timed(
    fn: Callable[..., Any],
    mode: CallMode,
    items: Sequence[Any],
    status: memoryview,
    catching: type[BaseException],
) -> Outcome:
    """Like ``_call_each``, also writing each task's start time (before its position).

    The parent reads them to stop a task that runs past its ``task_timeout``.
    """
    results: list[Any] = []
    append = results.append
    errors: dict[int, RemoteError] | None = None
    clock = time.monotonic_ns
    for position, item in enumerate(items):
        status[STATUS_STARTED] = clock()
        status[STATUS_POSITION] = position
        try:
            if mode is CallMode.ITEM:
                append(fn(item))
            elif mode is CallMode.STAR:
                append(fn(*item))
            else:
                append(fn(*item[0], **item[1]))
        except catching as exc:
            errors = _record(errors, position, exc, append)
    return results, errors


Recorder = Callable[
    [dict[int, RemoteError] | None, int, BaseException, Callable[[Any], None]],
    dict[int, RemoteError],
]


def _recorder(package: Callable[[BaseException], RemoteError]) -> Recorder:
    """A function that keeps a task's exception, packaged for the caller, and a None result."""

    def record(
        errors: dict[int, RemoteError] | None,
        position: int,
        exc: BaseException,
        append: Callable[[Any], None],
    ) -> dict[int, RemoteError]:
        errors = errors or {}
        errors[position] = package(exc)
        append(None)
        return errors

    return record


_record = _recorder(remote_error)  # pickled for the parent
_record_live = _recorder(in_process_error)  # the exception itself: it never leaves this process


def _call_in_strides(
    fn: Callable[..., Any],
    mode: CallMode,
    items: Sequence[Any],
    stride: int,
    status: memoryview,
    catching: type[BaseException],
    record: Recorder,
) -> Outcome:
    """Run tasks ``stride`` at a time through C-level ``map``, writing one position per stride.

    For tasks of a microsecond or less, a write per task would cost as much as
    the task. If the process dies, the parent knows the stride it died in and
    runs those tasks again one by one to find the one at fault.
    """
    results: list[Any] = []
    extend = results.extend
    errors: dict[int, RemoteError] | None = None
    mapper = map if mode is CallMode.ITEM else itertools.starmap
    start, count = 0, len(items)
    while start < count:
        status[STATUS_POSITION] = start
        stop = min(start + stride, count)
        try:
            extend(mapper(fn, items[start:stop]))
            start = stop
        except catching as exc:
            failed = len(results)  # extend() kept the results before the failure
            errors = record(errors, failed, exc, results.append)
            start = failed + 1
    return results, errors


def _encode_done(
    chunk_id: int,
    results: list[Any],
    errors: dict[int, RemoteError] | None,
    *,
    decode_s: float = 0.0,
    compute_s: float = 0.0,
    computed_at: float | None = None,
    catching: type[BaseException] = Exception,
) -> tuple[bytes, list[int]]:
    """Pickle the results (large buffers into segments) and the ``ChunkDone`` around them.

    A result that will not pickle becomes that task's error; what pickling
    raises beyond ``Exception`` (a ``SystemExit``), when ``catching`` takes
    it, is the task's error as it is.
    """
    try:
        packed, fds = pack(results, _buffer_threshold, for_parent=True)
    except catching:
        errors = dict(errors or {})
        for position, result in enumerate(results):
            try:
                dumps(result, for_parent=True)
            except catching as exc:
                errors[position] = (
                    _unpicklable_result(result, exc)
                    if isinstance(exc, Exception)
                    else remote_error(exc)
                )
                results[position] = None
        packed, fds = pack(results, _buffer_threshold, for_parent=True)
    start = time.perf_counter() if computed_at is None else computed_at
    encode_s = time.perf_counter() - start
    done = ChunkDone(chunk_id, packed, errors, decode_s, compute_s, encode_s, _over_memory())
    return dumps(done), fds


_buffer_threshold: int | None = None
_memory_limit: int | None = None
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int:
    """This process's resident memory now (Linux), else its peak (``getrusage``)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _over_memory() -> bool:
    return _memory_limit is not None and _resident_bytes() > _memory_limit


def _unpicklable_result(result: object, exc: Exception) -> RemoteError:
    type_name = qualified_type_name(result)
    error = remote_error(exc, ErrorSite.RESULT)
    return error._replace(
        type_name=type_name,
        message=(
            f"the result, a {type_name}, could not be pickled to send it back: "
            f"{qualified_type_name(exc)}: {exc}{describe_unpicklable(result, 'the result')}. "
            "Return plain data (or make the type picklable with __reduce__) instead."
        ),
    )
