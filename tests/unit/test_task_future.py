"""``TaskFuture``: a standard ``Future`` with a lighter condition, built without ``__init__``."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from corepool._calls import TaskFuture


def test_it_has_every_field_a_standard_future_has() -> None:
    plain, ours = vars(concurrent.futures.Future()), TaskFuture()
    lazy = {"_condition", "_done_callbacks"}  # checked below
    assert {name: getattr(ours, name) for name in plain if name not in lazy} == {
        name: value for name, value in plain.items() if name not in lazy
    }
    assert not ours._done_callbacks


def test_done_callbacks_run_whether_added_before_or_after_the_result() -> None:
    future, seen = TaskFuture(), []
    future.add_done_callback(lambda f: seen.append(("before", f.result())))
    future.add_done_callback(lambda f: seen.append(("second", f.result())))
    assert TaskFuture()._done_callbacks == ()  # each future has its own list
    future.set_result(7)
    future.add_done_callback(lambda f: seen.append(("after", f.result())))
    assert seen == [("before", 7), ("second", 7), ("after", 7)]


def test_waiters_in_other_threads_see_its_result() -> None:
    futures = [TaskFuture() for _ in range(20)]
    for future in futures:
        assert future.set_running_or_notify_cancel()
    seen: list[object] = []
    readers = [
        threading.Thread(target=lambda f=f: seen.append(f.result(timeout=10))) for f in futures
    ]
    for reader in readers:
        reader.start()
    time.sleep(0.05)  # let them block in result()
    for n, future in enumerate(futures):
        future.set_result(n)
    for reader in readers:
        reader.join(10)
    assert sorted(seen) == list(range(20))  # type: ignore[type-var]


def test_wait_and_as_completed_work_with_it() -> None:
    done, late = TaskFuture(), TaskFuture()
    threading.Timer(0.05, done.set_result, ("early",)).start()
    finished, pending = concurrent.futures.wait(
        [done, late], timeout=5, return_when="FIRST_COMPLETED"
    )
    assert finished == {done} and pending == {late}
    late.set_exception(ValueError("late"))
    assert [f.done() for f in concurrent.futures.as_completed([done, late], timeout=5)] == [
        True
    ] * 2
    with pytest.raises(ValueError, match="late"):
        late.result()


def test_a_timeout_and_a_cancel_keep_the_standard_contract() -> None:
    future = TaskFuture()
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=0.01)
    assert future.cancel() and future.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        future.result()
