"""CPython's own ``test.test_concurrent_futures``, run against ``corepool.futures``.

The test classes come from the interpreter's ``test`` package; nothing of
them is copied here. For each CPython process-pool class (``ProcessPoolFork
ExecutorDeadlockTest``, ...: executor, wait, as_completed, shutdown,
deadlock, init and process-pool tests, under fork, forkserver and spawn) two
subclasses are built:

* ``Corepool...``: ``executor_type`` is ``corepool.futures.ProcessPoolExecutor``,
  and while a test runs, each test module's ``futures`` global is
  ``corepool.futures`` and the scripts that ``test_shutdown`` runs in a child
  interpreter import the executor from ``corepool.futures``. The tests in
  ``SKIPS`` are skipped, each for the reason given there.
* ``Control...``: the class unchanged, on the standard library's executor, to
  show that the harness itself is sound.

Select one side with ``-k Corepool`` or ``-k Control``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import multiprocessing.util
import os
import signal
import sys
import time
import types
import unittest
import unittest.mock
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

import corepool.futures
from corepool import _spawn

# -- the CPython test modules ----------------------------------------------------------

# The package of Python 3.12+ (one module per topic), else the one module of 3.10/3.11.
_SUBMODULES = (
    "util",
    "executor",
    "test_process_pool",
    "test_wait",
    "test_as_completed",
    "test_shutdown",
    "test_deadlock",
    "test_init",
)


def _cpython_modules() -> list[types.ModuleType]:
    try:
        package = importlib.import_module("test.test_concurrent_futures")
    except ImportError as exc:
        pytest.skip(
            f"this interpreter's `test` package has no test_concurrent_futures ({exc}); "
            "CPython's tests run where the interpreter ships them (3.13 here)",
            allow_module_level=True,
        )
    if not hasattr(package, "__path__"):
        return [package]
    return [importlib.import_module(f"{package.__name__}.{name}") for name in _SUBMODULES]


MODULES = _cpython_modules()

# -- what is skipped, and why ------------------------------------------------------------

_INTERNALS = "inspects the stdlib executor's private internals"

# Test name (or "ClassNameEnd.test_name", for one class) -> why corepool's run
# skips it, under every start method. A key starting "control:" skips a test of
# the control run instead (a bug of the standard library's executor).
SKIPS: dict[str, str] = {
    "control:test_processes_terminate": "the stdlib executor of CPython 3.13.0 can deadlock "
    "in it (its feeder thread takes shutdown_lock, held by the manager thread that joins it: "
    "gh-125451), and a hang ends the whole pytest run",
    # executor / process pool
    "test_killed_child": "asserts the whole pool breaks when one worker is killed; "
    "corepool fails that task only and replaces the worker (tested in test_futures_face)",
    "test_saturation": f"{_INTERNALS} (_processes, _max_workers)",
    "test_idle_process_reuse_one": f"{_INTERNALS} (_processes: spawning on demand)",
    "test_idle_process_reuse_multiple": f"{_INTERNALS} (_processes: spawning on demand)",
    "test_max_tasks_per_child": f"{_INTERNALS} (_processes); "
    "max_tasks_per_child is tested in test_futures_face",
    "test_max_tasks_per_child_defaults_to_spawn_context": f"{_INTERNALS} (_mp_context)",
    "test_python_finalization_error": "mocks stdlib internals (threading._start_joinable_thread "
    "for the executor's feeder thread, which corepool has not)",
    "test_traceback": "asserts the cause is the stdlib's private _RemoteTraceback (.tb); "
    "corepool chains its public RemoteTraceback (.traceback_text): tested in test_futures_face",
    # shutdown
    "test_processes_terminate": f"{_INTERNALS} (_processes)",
    "test_context_manager_shutdown": f"{_INTERNALS} (_processes)",
    "test_del_shutdown": f"{_INTERNALS} (_processes, _call_queue, _executor_manager_thread)",
    "test_shutdown_no_wait": f"{_INTERNALS} (_processes, _call_queue, _executor_manager_thread)",
    # deadlock
    "test_shutdown_deadlock_pickle": f"{_INTERNALS} (_executor_manager_thread)",
    "test_gh105829_should_not_deadlock_if_wakeup_pipe_full": "mocks stdlib internals "
    "(_ExecutorManagerThread, _ThreadWakeup)",
    "test_error_at_task_unpickle": "asserts an argument that fails to unpickle in the worker "
    "breaks the whole pool; corepool fails that task only, with SerializationError",
    "test_error_during_result_unpickle_in_result_handler": "asserts a result that fails to "
    "unpickle breaks the whole pool; corepool fails that future only, with SerializationError",
    "test_exit_during_result_unpickle_in_result_handler": "asserts a result whose unpickling "
    "raises SystemExit breaks the whole pool; corepool fails that future only",
    # init
    "ForkFailingInitializerTest.test_initializer": "passes a Queue of the stdlib's fork "
    "context in initargs; its lock refuses to be pickled for a process it did not fork "
    "(the stdlib's rule), and corepool sends every worker its initializer pickled",
}

# -- running the CPython classes on corepool ---------------------------------------------


def _on_corepool(source: str) -> str:
    """A child interpreter's script, importing the executor from corepool instead."""
    return source.replace("from concurrent.futures import", "from corepool.futures import")


def _patches(test: unittest.TestCase) -> Iterator[contextlib.AbstractContextManager[Any]]:
    """What to patch while one of corepool's tests runs."""
    for module in MODULES:
        if hasattr(module, "futures"):
            yield unittest.mock.patch.object(module, "futures", corepool.futures)
        script_runner = getattr(module, "assert_python_ok", None)
        if script_runner is not None:

            def run(*args: str, _run: Callable[..., Any] = script_runner, **env: str) -> Any:
                return _run(*(_on_corepool(arg) for arg in args), **env)

            yield unittest.mock.patch.object(module, "assert_python_ok", run)
        # test_init's resource test runs two of its classes by their global names.
        for name in (
            "ProcessPoolSpawnFailingInitializerTest",
            "ProcessPoolForkserverFailingInitializerTest",
        ):
            if name in vars(module):
                yield unittest.mock.patch.object(module, name, globals()[f"Corepool{name}"])


def _drop_queues(test: unittest.TestCase) -> None:
    """Let go of the ``multiprocessing.Queue`` a CPython test keeps on itself.

    Its named semaphores are unlinked only once it is collected; kept by the
    test case, tests/conftest.py's leak guard would count them as left behind.
    """
    for name in ("log_queue", "executor_kwargs"):
        vars(test).pop(name, None)
    gc.collect()


def _control_setup(test: unittest.TestCase) -> None:
    test.addCleanup(_drop_queues, test)
    super(type(test), test).setUp()  # type: ignore[misc]


def _corepool_setup(test: unittest.TestCase) -> None:
    test.addCleanup(_drop_queues, test)
    with contextlib.ExitStack() as stack:
        for patch in _patches(test):
            stack.enter_context(patch)
        test.addCleanup(stack.pop_all().close)
    super(type(test), test).setUp()  # type: ignore[misc]


_STOP_WAIT_S = 20.0


def _holders_of_pipe(fd: int, server_pid: int) -> list[str]:
    """The processes but this one and the server with ``fd``'s pipe open: "pid (command)"."""
    pipe = f"pipe:[{os.fstat(fd).st_ino}]"
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.pid in (os.getpid(), server_pid):
            continue
        with contextlib.suppress(OSError, psutil.Error):
            fds = os.listdir(f"/proc/{process.pid}/fd")
            if any(os.readlink(f"/proc/{process.pid}/fd/{n}") == pipe for n in fds):
                found.append(f"{process.pid} ({' '.join(process.info['cmdline'] or [])[:120]})")
    return found


def _stop_stdlib_fork_server() -> None:
    """Stop the stdlib's fork server, and make sure it is gone.

    It exits when the last holder of its "alive" pipe closes it, and every
    process forked from this one (or by the server) holds a copy. corepool's
    parked workers are let go first (a worker forked from this process is
    one); if another holder keeps the server up past ``_STOP_WAIT_S``, it is
    named in a warning and the server is killed, rather than waited on
    forever as ``ForkServer._stop`` would.
    """
    from multiprocessing import forkserver

    server: Any = forkserver._forkserver
    _spawn._release_parked()
    if server._forkserver_pid is None:
        return
    deadline = time.monotonic() + _STOP_WAIT_S
    holders = _holders_of_pipe(server._forkserver_alive_fd, server._forkserver_pid)
    with server._lock:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
        while os.waitpid(server._forkserver_pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                warnings.warn(
                    f"the stdlib's fork server (pid {server._forkserver_pid}) did not exit "
                    f"within {_STOP_WAIT_S} s of its pipe closing; it is killed. Holders of "
                    f"its pipe before the close: {holders}",
                    stacklevel=1,
                )
                os.kill(server._forkserver_pid, signal.SIGKILL)
                os.waitpid(server._forkserver_pid, 0)
                break
            time.sleep(0.05)
        server._forkserver_pid = None
        if not multiprocessing.util.is_abstract_socket_namespace(server._forkserver_address):
            os.unlink(server._forkserver_address)
        server._forkserver_address = None


def _without_stdlib_fork_server(setup: Callable[[unittest.TestCase], None]) -> Any:
    """``setup``, after stopping the stdlib's fork server until the test is over.

    For ``FailingInitializerResourcesTest``, which stops the resource tracker
    and waits for it to exit: a live fork server would keep the tracker's
    pipe open through its clients, and the wait would then never end (seen
    in CI, twice). Both helpers are started again after.
    """

    def set_up(test: unittest.TestCase) -> None:
        from multiprocessing import forkserver, resource_tracker

        _stop_stdlib_fork_server()
        test.addCleanup(forkserver.ensure_running)
        test.addCleanup(resource_tracker.ensure_running)
        setup(test)

    return set_up


def _skipped(reason: str) -> Callable[[unittest.TestCase], None]:
    @unittest.skip(reason)
    def test(self: unittest.TestCase) -> None:
        """Skipped: see SKIPS."""

    return test


def _cpython_classes() -> Iterator[type[unittest.TestCase]]:
    """CPython's process-pool test classes (and test_init's resource test)."""
    seen: set[type] = set()
    for module in MODULES:
        for name, value in vars(module).items():
            if not (isinstance(value, type) and issubclass(value, unittest.TestCase)):
                continue
            process_pool = name.startswith("ProcessPool") and hasattr(value, "ctx")
            if (process_pool or name == "FailingInitializerResourcesTest") and value not in seen:
                seen.add(value)
                yield value


def _build() -> dict[str, type[unittest.TestCase]]:
    built: dict[str, type[unittest.TestCase]] = {}
    for cls in _cpython_classes():
        corepool_setup, control_setup = _corepool_setup, _control_setup
        if cls.__name__ == "FailingInitializerResourcesTest":
            corepool_setup = _without_stdlib_fork_server(_corepool_setup)
            control_setup = _without_stdlib_fork_server(_control_setup)
        members: dict[str, Any] = {"__module__": __name__, "setUp": corepool_setup}
        if hasattr(cls, "executor_type"):
            members["executor_type"] = corepool.futures.ProcessPoolExecutor
        control: dict[str, Any] = {"__module__": __name__, "setUp": control_setup}
        for key, reason in SKIPS.items():
            side, _, name = key.rpartition(":")
            class_end, _, test_name = name.rpartition(".")
            if hasattr(cls, test_name) and cls.__name__.endswith(class_end):
                (control if side == "control" else members)[test_name] = _skipped(reason)
        built[f"Corepool{cls.__name__}"] = type(f"Corepool{cls.__name__}", (cls,), members)
        built[f"Control{cls.__name__}"] = type(f"Control{cls.__name__}", (cls,), control)
    return built


globals().update(_build())

# -- the stdlib's long-lived helpers --------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def stdlib_helpers_running() -> None:
    """Start the stdlib's resource tracker and fork server before the first test.

    They live as long as this process, by the standard library's design;
    started during a test, tests/conftest.py's leak guard would blame that test.
    """
    from multiprocessing import forkserver, resource_tracker

    resource_tracker.ensure_running()
    forkserver.ensure_running()


@pytest.mark.skipif(
    sys.version_info < (3, 13), reason="the table follows 3.13's tests; older ones lack some"
)
def test_every_skip_names_a_cpython_test() -> None:
    """The skip table names only tests that exist, so it cannot rot silently."""
    names = {
        f"{cls.__name__}.{name}"
        for cls in _cpython_classes()
        for name in dir(cls)
        if name.startswith("test_")
    }
    keys = [key.rpartition(":")[2] for key in SKIPS]
    unknown = [
        key
        for key in keys
        if not any(name.endswith(key if "." in key else f".{key}") for name in names)
    ]
    assert unknown == []
