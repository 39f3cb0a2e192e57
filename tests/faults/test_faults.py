"""Every way a task, its input or the pool can fail, and what the caller sees.

One table, one test. Each row runs a faulty call on a fresh two-worker pool,
under each start method, and checks:

1. the exception's type and message (users read the message: it must say
   what happened and what to do);
2. with ``return_exceptions=True``, that every other task's result comes
   back and the bad task's slot holds the error, with the right attributes
   (rows where the call must raise whatever ``return_exceptions`` says check
   instead that the second call raises the same way, promptly);
3. that the pool still works afterwards;
4. (the autouse ``no_leaks`` fixture) that no child process or ``/dev/shm``
   segment is left behind.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

import corepool
import fault_tasks
import tasks

# A call that must raise whatever return_exceptions says raises again within this.
PROMPT_S = 2.0

Call = Callable[[corepool.Pool, bool], Iterable[Any]]
Check = Callable[[BaseException], None]


def _no_check(error: BaseException) -> None:
    pass


@dataclass(frozen=True)
class Fault:
    """One row: a faulty call and what the caller must see.

    Attributes:
        call: Makes the faulty call on the pool; its flag is ``return_exceptions``.
        error: The exception type the call raises.
        match: A regex that ``str(error)`` must match (``re.search``).
        expected: Every task's result when nothing goes wrong; the slot at
            ``bad`` is not compared.
        bad: The index whose slot holds the error when the call runs with
            ``return_exceptions=True``; ``None`` when that call must raise too.
        yielded: What the call yields before it raises (``imap``).
        check: More checks on the error instance (its attributes, cause, notes).
        pool: Extra ``Pool`` arguments (the initializer).
        usable_after: Whether the pool must still run tasks after the fault.
    """

    call: Call
    error: type[BaseException]
    match: str
    expected: Sequence[Any] = ()
    bad: int | None = None
    yielded: Sequence[Any] = ()
    check: Check = _no_check
    pool: dict[str, Any] = field(default_factory=dict)
    usable_after: bool = True


# -- checks on the error instance ----------------------------------------------


def _died(index: int, signal: str | None, exitcode: int) -> Check:
    def check(error: BaseException) -> None:
        assert isinstance(error, corepool.WorkerDied)
        assert error.task_index == index
        assert error.signal == signal
        assert error.exitcode == exitcode
        assert isinstance(error.pid, int)
        assert error.pid > 0
        assert error.worker_id in (0, 1)
        assert error.replaced

    return check


def _raised_by(function: str, where: str) -> Check:
    """A task's own exception: the worker's traceback as cause, where it ran as a note."""

    def check(error: BaseException) -> None:
        cause = error.__cause__
        assert isinstance(cause, corepool.RemoteTraceback)
        assert function in cause.traceback_text
        assert function in str(cause)
        if sys.version_info >= (3, 11):
            assert any(where in note for note in getattr(error, "__notes__", ()))

    return check


def _serialization(
    type_name: str,
    *,
    cause: type[BaseException] = corepool.RemoteTraceback,
    traceback_has: str = "",
) -> Check:
    def check(error: BaseException) -> None:
        assert isinstance(error, corepool.SerializationError)
        assert error.type_name == type_name
        assert isinstance(error.__cause__, cause)
        assert traceback_has in error.traceback_text

    return check


def _initializer_failed(error: BaseException) -> None:
    cause = error.__cause__
    assert isinstance(cause, corepool.RemoteTraceback)
    assert "failing_init" in cause.traceback_text
    assert "OSError: no model file" in cause.traceback_text


def _input_broke(error: BaseException) -> None:
    assert error.__cause__ is None
    if sys.version_info >= (3, 11):
        note = "raised by the input iterable of imap(square) after 10 items"
        assert note in getattr(error, "__notes__", ())


# -- calls ---------------------------------------------------------------------


def _with_at(position: int, thing: object, size: int = 20) -> list[Any]:
    """``0 .. size - 1`` with ``thing`` in place of ``position``."""
    items: list[Any] = list(range(size))
    items[position] = thing
    return items


def _submit(pool: corepool.Pool, return_exceptions: bool) -> list[Any]:
    """submit() has no return_exceptions: the flag reads future.exception() instead."""
    future = pool.submit(tasks.sigkill_on, 7)
    if return_exceptions:
        return [future.exception(timeout=10)]
    return [future.result(timeout=10)]


def _map_after_close(pool: corepool.Pool, return_exceptions: bool) -> list[Any]:
    pool.close()
    pool.join(10)
    return pool.map(tasks.square, range(5), return_exceptions=return_exceptions)


def _map_after_terminate(pool: corepool.Pool, return_exceptions: bool) -> list[Any]:
    pool.terminate()
    pool.join(10)
    return pool.map(tasks.square, range(5), return_exceptions=return_exceptions)


def _submit_after_close(pool: corepool.Pool, return_exceptions: bool) -> list[Any]:
    pool.close()
    pool.join(10)
    return [pool.submit(tasks.square, 3).result(timeout=10)]


def _timed_out(index: int, timeout: float, attempts: int = 1) -> Check:
    def check(error: BaseException) -> None:
        assert isinstance(error, corepool.TaskTimeout)
        assert isinstance(error, TimeoutError)
        assert (error.task_index, error.timeout, error.attempts) == (index, timeout, attempts)

    return check


def _tried(attempts: int) -> Check:
    def check(error: BaseException) -> None:
        assert getattr(error, "attempts", attempts) == attempts
        if sys.version_info >= (3, 11) and not isinstance(error, corepool.PoolError):
            assert f"the task was tried {attempts} times" in getattr(error, "__notes__", ())

    return check


# -- the table -----------------------------------------------------------------

_TWENTY = list(range(20))
_DIED = r"worker \d+ \(pid \d+\) "
_EXITED = (
    r"The task \(or code it called\) ended the process with exit code {code}: "
    r"look for os\._exit\(\), sys\.exit\(\) or an uncaught BaseException\. It was replaced\.$"
)
_CLOSED = r"Create a new Pool, or use corepool\.map\(\) for a one-off call\.$"
_STOPPED = r"worker \d was stopped and replaced\.$"

FAULTS = [
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                fault_tasks.interrupt_on, range(20), return_exceptions=rx
            ),
            # Not re-raised as KeyboardInterrupt: the caller would take it for its own Ctrl-C.
            error=corepool.WorkerDied,
            match=_DIED
            + r"exited with code 1 in task 9 of map\(interrupt_on\)\. "
            + _EXITED.format(code=1),
            expected=_TWENTY,
            bad=9,
            check=_died(9, None, 1),
        ),
        id="task-raises-keyboardinterrupt",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(fault_tasks.hang_on, range(20), return_exceptions=rx),
            error=corepool.TaskTimeout,
            match=r"^task 3 of map\(hang_on\) passed task_timeout=0\.5s; " + _STOPPED,
            expected=_TWENTY,
            bad=3,
            check=_timed_out(3, 0.5),
            pool={"task_timeout": 0.5},
        ),
        id="hang-in-a-system-call",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                fault_tasks.spin_in_c_on, range(20), return_exceptions=rx, task_timeout=0.5
            ),
            error=corepool.TaskTimeout,
            match=r"^task 4 of map\(spin_in_c_on\) passed task_timeout=0\.5s; " + _STOPPED,
            expected=_TWENTY,
            bad=4,
            check=_timed_out(4, 0.5),
        ),
        id="hang-in-c-code-per-call-timeout",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(fault_tasks.hang_on, range(20), return_exceptions=rx),
            error=corepool.TaskTimeout,
            match=r"^task 3 of map\(hang_on\) passed task_timeout=0\.3s; "
            + _STOPPED[:-1]
            + r" The task was tried 2 times\.$",
            expected=_TWENTY,
            bad=3,
            check=_timed_out(3, 0.3, attempts=2),
            pool={"task_timeout": 0.3, "retries": 1},
        ),
        id="hang-retried",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(tasks.sigkill_on, range(20), return_exceptions=rx),
            error=corepool.WorkerDied,
            match=_DIED + r"got SIGKILL in task 7 of map\(sigkill_on\)\..* It was replaced\. "
            r"The task was tried 3 times\.$",
            expected=_TWENTY,
            bad=7,
            check=_tried(3),
            pool={"retries": 2},
        ),
        id="sigkill-retried",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                fault_tasks.always_disconnected_on, range(20), return_exceptions=rx
            ),
            error=ConnectionError,
            match=r"^item 6: connection refused",
            expected=_TWENTY,
            bad=6,
            check=_tried(3),
            pool={"retries": 2, "retry_on": (ConnectionError,)},
        ),
        id="retry-on-exhausted",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(tasks.fail_on, range(20), return_exceptions=rx),
            error=ValueError,
            match=r"^bad item 5",  # then the note, which pytest matches too
            expected=_TWENTY,
            bad=5,
            check=_raised_by("fail_on", "task 5 of map(fail_on)"),
        ),
        id="task-raises",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(tasks.sigkill_on, range(20), return_exceptions=rx),
            error=corepool.WorkerDied,
            match=_DIED + r"got SIGKILL in task 7 of map\(sigkill_on\)\. Likely out of memory "
            r"\(the kernel's OOM killer sends SIGKILL\) or killed by another process: "
            r"try fewer workers or a smaller chunksize\. It was replaced\.$",
            expected=_TWENTY,
            bad=7,
            check=_died(7, "SIGKILL", -9),
        ),
        id="sigkill",
    ),
    pytest.param(
        Fault(
            # Tiny tasks run in strides (one status write per stride): the one
            # at fault is found by running the dead stride's tasks one by one.
            call=lambda pool, rx: pool.map(
                functools.partial(tasks.sigkill_on, bad=4000), range(5000), return_exceptions=rx
            ),
            error=corepool.WorkerDied,
            match=_DIED + r"got SIGKILL in task 4000 of map\(sigkill_on\)\.",
            expected=range(5000),
            bad=4000,
            check=_died(4000, "SIGKILL", -9),
        ),
        id="sigkill-among-tiny-tasks",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                fault_tasks.segfault_on, range(20), return_exceptions=rx
            ),
            error=corepool.WorkerDied,
            match=_DIED + r"got SIGSEGV in task 3 of map\(segfault_on\)\. Likely a crash in "
            r"native code \(an extension module or ctypes call\)\. It was replaced\.$",
            expected=_TWENTY,
            bad=3,
            check=_died(3, "SIGSEGV", -11),
        ),
        id="segfault",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(tasks.exit_on, range(20), return_exceptions=rx),
            error=corepool.WorkerDied,
            match=_DIED
            + r"exited with code 13 in task 2 of map\(exit_on\)\. "
            + _EXITED.format(code=13),
            expected=_TWENTY,
            bad=2,
            check=_died(2, None, 13),
        ),
        id="os-exit",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(tasks.sys_exit_on, range(20), return_exceptions=rx),
            error=corepool.WorkerDied,
            match=_DIED
            + r"exited with code 4 in task 2 of map\(sys_exit_on\)\. "
            + _EXITED.format(code=4),
            expected=_TWENTY,
            bad=2,
            check=_died(2, None, 4),
        ),
        id="sys-exit",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(fault_tasks.lock_on, range(20), return_exceptions=rx),
            error=corepool.SerializationError,
            match=r"^task 4 of map\(lock_on\): the result, a _thread\.lock, could not be "
            r"pickled to send it back: TypeError: cannot pickle '_thread\.lock' object\. "
            r"Return plain data \(or make the type picklable with __reduce__\) instead\.$",
            expected=_TWENTY,
            bad=4,
            check=_serialization("_thread.lock", traceback_has="cannot pickle"),
        ),
        id="unpicklable-result",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                fault_tasks.raise_locked_on, range(20), return_exceptions=rx
            ),
            error=corepool.SerializationError,
            match=r"^task 6 of map\(raise_locked_on\) raised fault_tasks\.LockedError: "
            r"item 6 holds a lock, which could not be sent back to the parent: it will not "
            r"pickle: TypeError: cannot pickle '_thread\.lock' object\. Keep only plain data "
            r"in the exception, and give its class an __init__ that accepts its args "
            r"\(or a __reduce__\)\.$",
            expected=_TWENTY,
            bad=6,
            check=_serialization("fault_tasks.LockedError", traceback_has="in raise_locked_on"),
        ),
        id="unpicklable-exception",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                fault_tasks.raise_two_arg_on, range(20), return_exceptions=rx
            ),
            error=corepool.SerializationError,
            match=r"^task 8 of map\(raise_two_arg_on\) raised fault_tasks\.TwoArgError: "
            r"8 and 9 went wrong, which could not be sent back to the parent: it pickles "
            r"but will not unpickle: TypeError: .*missing 1 required positional argument: "
            r"'b'\. Keep only plain data",
            expected=_TWENTY,
            bad=8,
            check=_serialization(
                "fault_tasks.TwoArgError",
                traceback_has="in raise_two_arg_on",
            ),
        ),
        id="exception-fails-to-unpickle",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                tasks.identity, _with_at(3, threading.Lock()), return_exceptions=rx
            ),
            error=corepool.SerializationError,
            match=r"^the arguments of task 3 of map\(identity\) could not be pickled to send "
            r"them to a worker: TypeError: cannot pickle '_thread\.lock' object\. Pass plain "
            r"data \(or create the object inside the task or the pool's initializer\) instead\.$",
            expected=_TWENTY,
            bad=3,
            check=_serialization("_thread.lock", cause=TypeError),
        ),
        id="unpicklable-argument",
    ),
    pytest.param(
        # Item 1 is in the first chunk worker 1 is sent, so the function should
        # travel with it. imap waits for item 0 (slow), so the job is not yet
        # cancelled when worker 1 answers its next chunk.
        Fault(
            call=lambda pool, rx: pool.imap(
                tasks.sleep_then,
                [0.25] + [0.0] * 19,
                _with_at(1, threading.Lock()),
                return_exceptions=rx,
            ),
            error=corepool.SerializationError,
            match=r"^the arguments of task 1 of imap\(sleep_then\) could not be pickled to send "
            r"them to a worker: TypeError: cannot pickle '_thread\.lock' object "
            r"\(at args\[1\], a _thread\.lock\)\.",
            expected=_TWENTY,
            bad=1,
            yielded=[0],
            check=_serialization("_thread.lock", cause=TypeError),
        ),
        id="unpicklable-argument-in-first-chunk",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                tasks.identity, _with_at(2, fault_tasks.Connection()), return_exceptions=rx
            ),
            error=corepool.SerializationError,
            match=r"^the arguments of task 2 of map\(identity\) could not be pickled to send "
            r"them to a worker: TypeError: cannot pickle '_thread\.lock' object \(at the "
            r"item\.settings\['guard'\], a _thread\.lock\)\. Pass plain data",
            expected=_TWENTY,
            bad=2,
            check=_serialization("fault_tasks.Connection", cause=TypeError),
        ),
        id="unpicklable-attribute-deep-in-an-argument",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                fault_tasks.uses_a_lock_from_its_closure(), range(20), return_exceptions=rx
            ),
            error=corepool.SerializationError,
            match=r"^the function of map\(uses_a_lock_from_its_closure\.<locals>\.locked_identity"
            r"\) could not be pickled: TypeError: cannot pickle '_thread\.lock' object \(at the "
            r"function \(closure variable 'guard'\), a _thread\.lock\)\. Define it at module "
            r"level, and create what it needs \(locks, connections, open files\) inside it or "
            r"in the pool's initializer\.$",
            check=_serialization("_thread.lock", cause=TypeError),
        ),
        id="unpicklable-function-closure",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                tasks.identity, _with_at(3, fault_tasks.Unloadable()), return_exceptions=rx
            ),
            error=corepool.SerializationError,
            match=r"^task 3 of map\(identity\) could not start: its function or arguments "
            r"failed to unpickle in the worker with RuntimeError: the Unloadable argument "
            r"cannot be rebuilt here$",
            expected=_TWENTY,
            bad=3,
            check=_serialization("RuntimeError", traceback_has="refuse_to_unpickle"),
        ),
        id="argument-fails-to-unpickle",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(
                tasks.identity,
                _with_at(3, fault_tasks.Unloadable()),
                chunksize=4,
                return_exceptions=rx,
            ),
            error=corepool.SerializationError,
            match=r"^task 3 of map\(identity\) could not start: its function or arguments "
            r"failed to unpickle in the worker with RuntimeError: the Unloadable argument "
            r"cannot be rebuilt here$",
            expected=_TWENTY,
            bad=3,
            check=_serialization("RuntimeError", traceback_has="refuse_to_unpickle"),
        ),
        id="argument-fails-to-unpickle-in-a-chunk-of-4",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.map(tasks.square, range(5), return_exceptions=rx),
            error=corepool.InitializerError,
            match=r"^the pool's initializer raised OSError: no model file at "
            r"/nonexistent/model\.bin \(in worker \d\)\. No task can run: fix the initializer "
            r"and create a new pool\.$",
            check=_initializer_failed,
            pool={"initializer": fault_tasks.failing_init},
            usable_after=False,
        ),
        id="initializer-raises",
    ),
    pytest.param(
        Fault(
            call=_map_after_close,
            error=corepool.PoolClosed,
            match=r"^cannot start map\(square\): the pool was closed\. " + _CLOSED,
            usable_after=False,
        ),
        id="map-after-close",
    ),
    pytest.param(
        Fault(
            call=_submit_after_close,
            error=corepool.PoolClosed,
            match=r"^cannot start submit\(square\): the pool was closed\. " + _CLOSED,
            usable_after=False,
        ),
        id="submit-after-close",
    ),
    pytest.param(
        Fault(
            call=_map_after_terminate,
            error=corepool.PoolClosed,
            match=r"^cannot start map\(square\): the pool was terminated\. " + _CLOSED,
            usable_after=False,
        ),
        id="map-after-terminate",
    ),
    pytest.param(
        Fault(
            call=_submit,
            error=corepool.WorkerDied,
            match=_DIED + r"got SIGKILL in task 0 of submit\(sigkill_on\)\. Likely out of memory",
            expected=[None],
            bad=0,
            check=_died(0, "SIGKILL", -9),
        ),
        id="submit-sigkill",
    ),
    pytest.param(
        Fault(
            call=lambda pool, rx: pool.imap(
                tasks.sigkill_on, (x for x in range(20)), return_exceptions=rx
            ),
            error=corepool.WorkerDied,
            match=_DIED + r"got SIGKILL in task 7 of imap\(sigkill_on\)\. Likely out of memory",
            expected=_TWENTY,
            bad=7,
            yielded=list(range(7)),
            check=_died(7, "SIGKILL", -9),
        ),
        id="imap-sigkill",
    ),
    pytest.param(
        # chunksize=4 makes the failing pull (items 8..11) straddle the end of
        # the input, as an adaptive chunk size usually does too.
        Fault(
            call=lambda pool, rx: pool.imap(
                tasks.square, fault_tasks.numbers_then_fail(10), chunksize=4, return_exceptions=rx
            ),
            error=RuntimeError,
            match=r"^the input broke after 10 items",
            yielded=[x * x for x in range(10)],
            check=_input_broke,
        ),
        id="input-iterable-raises",
    ),
]


def _consume(results: Iterable[Any], into: list[Any]) -> None:
    """Iterate ``results`` into ``into``, keeping what came before an exception."""
    for value in results:
        into.append(value)


@pytest.mark.parametrize("fault", FAULTS)
def test_fault(fault: Fault, start_method: str) -> None:
    with corepool.Pool(2, start_method=start_method, **fault.pool) as pool:
        got: list[Any] = []
        with pytest.raises(fault.error, match=fault.match) as raised:
            _consume(fault.call(pool, False), got)
        assert got == list(fault.yielded)
        fault.check(raised.value)

        if fault.bad is None:
            # The call raises whatever return_exceptions says, and promptly.
            again: list[Any] = []
            started = time.monotonic()
            with pytest.raises(fault.error, match=fault.match) as raised_again:
                _consume(fault.call(pool, True), again)
            assert time.monotonic() - started < PROMPT_S
            assert again == list(fault.yielded)
            fault.check(raised_again.value)
        else:
            # The bad task's slot holds its error; every neighbour's result is there.
            results = list(fault.call(pool, True))
            assert len(results) == len(fault.expected)
            error = results[fault.bad]
            assert isinstance(error, fault.error), f"slot {fault.bad} holds {error!r}"
            assert re.search(fault.match, str(error)), str(error)
            fault.check(error)
            wrong = {
                index: value
                for index, (value, want) in enumerate(zip(results, fault.expected, strict=True))
                if index != fault.bad and value != want
            }
            assert not wrong, f"neighbours of task {fault.bad} came back wrong: {wrong}"

        if fault.usable_after:
            assert pool.map(tasks.square, range(50)) == [x * x for x in range(50)]


# -- retries that succeed ------------------------------------------------------


def test_a_flaky_task_succeeds_on_retry(start_method: str, tmp_path: Any) -> None:
    with corepool.Pool(
        2, start_method=start_method, retries=1, retry_on=(ConnectionError,)
    ) as pool:
        assert pool.map(fault_tasks.flaky, [str(tmp_path)] * 10, range(10)) == list(range(10))


def test_a_task_whose_worker_died_once_succeeds_on_retry(start_method: str, tmp_path: Any) -> None:
    with corepool.Pool(2, start_method=start_method, retries=1) as pool:
        results = pool.map(fault_tasks.die_first_time, [str(tmp_path)] * 20, range(20))
    assert results == list(range(20))


def test_without_retry_on_an_exception_is_not_retried(tmp_path: Any) -> None:
    with corepool.Pool(2, retries=3) as pool, pytest.raises(ConnectionError, match="first"):
        pool.map(fault_tasks.flaky, [str(tmp_path)] * 3, range(3))


# -- cancellation, closing, nesting --------------------------------------------


def test_stopping_a_running_future_ends_its_task(start_method: str) -> None:
    """``cancel()`` keeps the standard's answer for a running task; ``stop()`` ends it."""
    with corepool.Pool(2, start_method=start_method) as pool:
        future = pool.submit(tasks.sleep_then, 60, "never")
        while not future.running():
            time.sleep(0.01)
        time.sleep(0.2)  # now in the worker, in time.sleep
        started = time.monotonic()
        assert not future.cancel()
        assert future.stop()
        assert future.cancelled()
        assert pool.map(tasks.square, range(30)) == [x * x for x in range(30)]
        assert time.monotonic() - started < 5.0


def test_close_while_a_worker_crashes_still_returns(start_method: str) -> None:
    pool = corepool.Pool(2, start_method=start_method)
    futures = [pool.submit(tasks.sigkill_on, i) for i in range(10)]
    pool.close()
    pool.join(timeout=20)
    errors = [f.exception(timeout=0) for f in futures]
    assert isinstance(errors[7], corepool.WorkerDied)
    assert [e for i, e in enumerate(errors) if i != 7] == [None] * 9


def _nested_map(n: int) -> list[int]:
    return corepool.map(tasks.square, range(n), workers=2)


def test_a_task_can_use_a_pool_of_its_own(start_method: str) -> None:
    # An initializer keeps the outer workers from being parked: a parked
    # worker would keep its own fork server for up to PARK_SECONDS, which
    # the leak check counts as left behind.
    with corepool.Pool(
        2, start_method=start_method, initializer=tasks.set_state, initargs=("k", 1)
    ) as pool:
        assert pool.map(_nested_map, [3, 4]) == [[0, 1, 4], [0, 1, 4, 9]]


def test_a_leaky_worker_is_retired_past_its_memory_limit(start_method: str) -> None:
    with corepool.Pool(1, start_method=start_method, max_memory_per_worker="150MB") as pool:
        pids = pool.map(fault_tasks.leak, range(12), chunksize=1)
        # Each task keeps 40 MB: a worker passes 150 MB after at most 4 tasks
        # (less with the fork server's larger start), runs the one chunk it
        # already holds, and is replaced.
        assert len(set(pids)) >= 3
        assert max(pids.count(pid) for pid in set(pids)) <= 5
        assert pool.map(tasks.square, range(10)) == [x * x for x in range(10)]
