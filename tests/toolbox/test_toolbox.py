"""The seed's toolbox: Queue, Pipe, locks and shared values, Process, across processes.

Every primitive is passed to pool tasks and to ``corepool.Process`` under each
start method, with no Manager. The autouse ``no_leaks`` fixture checks that no
process or shared-memory segment is left behind.
"""

from __future__ import annotations

import functools
import multiprocessing
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import corepool
import toolbox_tasks

ITEMS = 3000  # more than the queue's socket holds: the backlog thread must take over


# -- Queue, in one process -----------------------------------------------------


def test_queue_is_first_in_first_out_and_counts() -> None:
    q = corepool.Queue()
    assert q.empty()
    for item in ["a", ("b", 2), {"c": [3]}]:
        q.put(item)
    assert q.qsize() == 3
    assert [q.get(), q.get(), q.get()] == ["a", ("b", 2), {"c": [3]}]
    assert q.empty()


def test_an_unbounded_queue_never_blocks_its_producer() -> None:
    q = corepool.Queue()
    started = time.monotonic()
    for item in range(ITEMS):
        q.put(item)
    assert time.monotonic() - started < 10
    assert q.qsize() == ITEMS  # items waiting in the backlog count too
    assert [q.get(timeout=10) for _ in range(ITEMS)] == list(range(ITEMS))
    assert q.qsize() == 0


def test_get_and_put_time_out() -> None:
    q = corepool.Queue(maxsize=2)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    assert q.get() == 1
    q.put(3, timeout=1)
    assert q.get_many(10) == [2, 3]


def test_close_lets_consumers_drain_then_ends_iteration() -> None:
    q = corepool.Queue()
    q.put_many(range(5))
    q.close()
    assert q.closed
    with pytest.raises(corepool.QueueClosed, match=r"put\(\) on a closed corepool\.Queue"):
        q.put(99)
    assert list(q) == [0, 1, 2, 3, 4]
    with pytest.raises(corepool.QueueClosed, match="closed and drained"):
        q.get(timeout=1)


def test_close_sends_the_backlog_first() -> None:
    q = corepool.Queue()
    q.put_many(range(ITEMS))
    q.close()
    assert list(q) == list(range(ITEMS))


def test_large_items_travel_through_shared_memory() -> None:
    np = pytest.importorskip("numpy", reason="numpy is an optional extra")
    q = corepool.Queue()
    array = np.arange(500_000, dtype=np.float64)  # 4 MB: a segment
    big_pickle = list(range(100_000))  # a pickle over the inline limit
    q.put(array)
    q.put(big_pickle)
    assert np.array_equal(q.get(timeout=10), array)
    assert q.get(timeout=10) == big_pickle


# -- Queue, across processes ---------------------------------------------------


def test_many_producers_many_consumers_every_item_exactly_once(start_method: str) -> None:
    q = corepool.Queue()
    producers = [
        corepool.Process(toolbox_tasks.produce, (q, 0, ITEMS), start_method=start_method),
        corepool.Process(
            toolbox_tasks.produce_many, (q, ITEMS, 2 * ITEMS), start_method=start_method
        ),
    ]
    consumers = [
        corepool.Process(toolbox_tasks.consume_until_closed, (q,), start_method=start_method),
        corepool.Process(toolbox_tasks.consume_many_until_closed, (q,), start_method=start_method),
    ]
    for process in consumers + producers:
        process.start()
    assert [p.result(timeout=60) for p in producers] == [ITEMS, ITEMS]
    q.close()
    got = [p.result(timeout=60) for p in consumers]
    assert sorted(got[0] + got[1]) == list(range(2 * ITEMS))
    for taken in got:  # each producer's items keep their order at each consumer
        firsts = [item for item in taken if item < ITEMS]
        assert firsts == sorted(firsts)


def test_a_consumer_killed_while_waiting_loses_nothing(start_method: str) -> None:
    q = corepool.Queue()
    victim = corepool.Process(toolbox_tasks.get_one, (q,), start_method=start_method)
    victim.start()
    time.sleep(0.3)  # let it block in get()
    victim.kill()
    with pytest.raises(corepool.WorkerDied, match="got SIGKILL"):
        victim.result(timeout=10)
    q.put_many(range(10))
    assert [q.get(timeout=10) for _ in range(10)] == list(range(10))


def test_a_queue_passed_to_pool_tasks(start_method: str) -> None:
    q = corepool.Queue()
    with corepool.Pool(2, start_method=start_method) as pool:
        counts = pool.starmap(
            toolbox_tasks.produce, [(q, i * 100, i * 100 + 100) for i in range(4)]
        )
    assert counts == [100] * 4
    assert sorted(q.get(timeout=10) for _ in range(400)) == list(range(400))
    assert q.qsize() == 0  # counted when put, uncounted when got: no race leaves one behind
    assert q.empty()


# -- Pipe ----------------------------------------------------------------------


def test_a_pipe_between_the_parent_and_a_process(start_method: str) -> None:
    parent, child = corepool.Pipe()
    process = corepool.Process(toolbox_tasks.echo_over, (child,), start_method=start_method)
    process.start()
    messages = [
        "hello",
        {"n": 1},
        list(range(50_000)),
        ("ping", 1, 2.5, None, b"x"),  # scalars in a short tuple: pickled plainly
        ("large", bytes(2_000_000)),  # plain, but past the inline limit: a segment
        [1, "two", 3.0] * 6,  # too long to look through: the packer
    ]
    for message in messages:
        parent.send(message)
        assert parent.poll(10)
        assert parent.recv() == message
    parent.send(None)
    assert process.result(timeout=10) == len(messages)
    parent.close()
    child.close()


def test_a_one_way_pipe_refuses_the_other_way() -> None:
    reader, writer = corepool.Pipe(duplex=False)
    writer.send_bytes(b"raw")
    assert reader.recv_bytes() == b"raw"
    with pytest.raises(OSError, match="read-only"):
        reader.send(1)
    with pytest.raises(OSError, match="write-only"):
        writer.recv()
    writer.close()
    with pytest.raises(EOFError):
        reader.recv()
    reader.close()


# -- locks and shared values ---------------------------------------------------


@pytest.mark.parametrize("make_lock", [corepool.Lock, corepool.RLock], ids=["Lock", "RLock"])
def test_a_lock_protects_a_read_modify_write(make_lock: Any, start_method: str) -> None:
    value, lock = corepool.Value("q", 0), make_lock()
    with corepool.Pool(2, start_method=start_method) as pool:
        pool.starmap(toolbox_tasks.increment_under_lock, [(value, lock, 2000)] * 4, chunksize=1)
    assert value.value == 8000


def test_value_add_is_atomic_across_processes(start_method: str) -> None:
    counter = corepool.Counter()
    with corepool.Pool(2, start_method=start_method) as pool:
        pool.starmap(toolbox_tasks.add_to, [(counter, 5000)] * 4, chunksize=1)
    assert counter.value == 20_000
    counter += 10
    counter -= 3
    assert counter.value == 20_007
    floats = corepool.Value("d", 0.5)
    assert floats.add(0.25) == 0.75
    import ctypes

    assert corepool.Value(ctypes.c_int, 7).value == 7
    with pytest.raises(TypeError, match="typecodes"):
        corepool.Value("x")


def _one_of_each() -> tuple[dict[str, Any], corepool.Connection]:
    """Every primitive, for ``toolbox_tasks.use_everything``; and the parent's end of its pipe."""
    np = pytest.importorskip("numpy", reason="numpy is an optional extra")
    parent_end, worker_end = corepool.Pipe()
    things = {
        "lock": corepool.Lock(),
        "rlock": corepool.RLock(),
        "semaphore": corepool.Semaphore(1),
        "event": corepool.Event(),
        "condition": corepool.Condition(),
        "value": corepool.Value("i", 1),
        "counter": corepool.Counter(10),
        "queue": corepool.Queue(),
        "pipe": worker_end,
        "array": corepool.SharedArray.zeros(3, np.int64),
    }
    return things, parent_end


def _check_what_the_worker_did(things: dict[str, Any], parent_end: Any) -> None:
    assert things["event"].is_set()
    assert things["value"].value == 6
    assert things["counter"].value == 11
    assert things["queue"].get(timeout=5) == "from a worker"
    assert parent_end.recv() == "over the pipe"
    assert things["array"][0] == 42


def _pool_and_task(route: str, things: dict[str, Any], start_method: str) -> tuple[Any, Any]:
    """A pool and a task that reach ``things`` by ``route``, the way users pass them."""
    if route == "initargs":
        pool = corepool.Pool(
            1, start_method=start_method, initializer=toolbox_tasks.remember, initargs=(things,)
        )
        return pool, toolbox_tasks.use_remembered
    if route == "shared":
        pool = corepool.Pool(1, start_method=start_method, shared={"things": things})
        return pool, toolbox_tasks.use_remembered
    pool = corepool.Pool(1, start_method=start_method)
    if route == "closure":

        def task() -> dict[str, Any]:
            return toolbox_tasks.use_everything(things)

        return pool, task
    return pool, functools.partial(toolbox_tasks.use_everything, things)


@pytest.mark.parametrize("route", ["argument", "initargs", "shared", "closure", "partial"])
def test_every_primitive_passes_to_pool_tasks(route: str, start_method: str) -> None:
    things, parent_end = _one_of_each()
    pool, task = _pool_and_task(route, things, start_method)
    with pool:
        if route == "argument":
            [seen] = pool.map(toolbox_tasks.use_everything, [things])
        else:
            seen = pool.submit(task).result(timeout=30)
    assert seen == {
        "lock": "held",
        "rlock": "held twice",
        "semaphore": True,
        "value": 6,
        "counter": 11,
    }
    _check_what_the_worker_did(things, parent_end)


@pytest.mark.parametrize("route", ["argument", "closure"])
def test_every_primitive_passes_to_a_process(route: str, start_method: str) -> None:
    things, parent_end = _one_of_each()
    if route == "argument":
        process = corepool.Process(
            toolbox_tasks.use_everything, (things,), start_method=start_method
        )
    else:

        def target() -> dict[str, Any]:
            return toolbox_tasks.use_everything(things)

        process = corepool.Process(target, start_method=start_method)
    process.start()
    assert process.result(timeout=30)["counter"] == 11
    _check_what_the_worker_did(things, parent_end)


def test_every_primitive_passes_to_a_multiprocessing_process(start_method: str) -> None:
    """multiprocessing's own pickler sends them too (its descriptor passing carries the memory)."""
    things, parent_end = _one_of_each()
    context = multiprocessing.get_context(start_method)
    process = context.Process(target=toolbox_tasks.use_everything, args=(things,))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    _check_what_the_worker_did(things, parent_end)


def test_primitives_kept_in_a_manager_reach_pool_tasks(start_method: str) -> None:
    things, parent_end = _one_of_each()
    with multiprocessing.get_context("fork").Manager() as manager:
        shared = manager.dict()
        shared["things"] = things
        with corepool.Pool(1, start_method=start_method) as pool:
            seen = pool.submit(toolbox_tasks.use_from_manager, shared).result(timeout=30)
    assert seen["counter"] == 11
    _check_what_the_worker_did(things, parent_end)


def test_lock_semantics() -> None:
    lock = corepool.Lock()
    assert lock.acquire()
    assert lock.locked()
    assert not lock.acquire(block=False)
    started = time.monotonic()
    assert not lock.acquire(timeout=0.1)
    assert time.monotonic() - started >= 0.09
    lock.release()
    with pytest.raises(ValueError, match="release of an unlocked"):
        lock.release()
    rlock = corepool.RLock()
    with rlock, rlock:
        pass
    with pytest.raises(RuntimeError, match="does not hold"):
        rlock.release()
    semaphore = corepool.BoundedSemaphore(2)
    assert semaphore.acquire() and semaphore.acquire()
    assert not semaphore.acquire(timeout=0.01)
    semaphore.release()
    semaphore.release()
    with pytest.raises(ValueError, match="released too many times"):
        semaphore.release()


def test_a_lock_held_in_another_process_blocks_here(start_method: str) -> None:
    lock = corepool.Lock()
    holder = corepool.Process(toolbox_tasks.hold_lock, (lock, 1.0), start_method=start_method)
    holder.start()
    deadline = time.monotonic() + 10
    while not lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not lock.acquire(timeout=0.1)
    assert lock.acquire(timeout=10)
    lock.release()
    assert holder.result(timeout=10)


def test_event_condition_and_barrier_across_processes(start_method: str) -> None:
    event = corepool.Event()
    waiter = corepool.Process(toolbox_tasks.wait_for_event, (event, 20), start_method=start_method)
    waiter.start()
    time.sleep(0.2)
    event.set()
    assert waiter.result(timeout=20) is True
    assert not corepool.Event().wait(0.05)

    condition, flag = corepool.Condition(), corepool.Value("q", 0)
    watcher = corepool.Process(
        toolbox_tasks.wait_for_flag, (condition, flag), start_method=start_method
    )
    watcher.start()
    time.sleep(0.2)
    with condition:
        flag.value = 1
        condition.notify_all()
    assert watcher.result(timeout=20) == 1

    barrier = corepool.Barrier(3)
    parties = [
        corepool.Process(toolbox_tasks.wait_at, (barrier,), start_method=start_method)
        for _ in range(2)
    ]
    for party in parties:
        party.start()
    mine = barrier.wait(timeout=20)
    assert sorted([mine, *(p.result(timeout=20) for p in parties)]) == [0, 1, 2]


def test_a_condition_wakes_threads_too() -> None:
    condition, woken = corepool.Condition(corepool.Lock()), []

    def wait() -> None:
        with condition:
            woken.append(condition.wait(timeout=10))

    threads = [threading.Thread(target=wait) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    with condition:
        condition.notify(1)
    with condition:
        condition.notify_all()
    for thread in threads:
        thread.join(10)
    assert woken == [True, True]


@pytest.mark.parametrize(
    "make",
    [
        corepool.Lock,
        corepool.RLock,
        corepool.Event,
        corepool.Counter,
        corepool.Queue,
        lambda: corepool.Pipe()[0],
    ],
    ids=["Lock", "RLock", "Event", "Counter", "Queue", "Connection"],
)
def test_pickled_another_way_they_say_so(make: Any) -> None:
    with pytest.raises(TypeError, match="travels only through corepool"):
        pickle.loads(pickle.dumps(make(), protocol=5))


# -- Process -------------------------------------------------------------------


def test_process_returns_raises_and_reports_deaths(start_method: str) -> None:
    adder = corepool.Process(lambda a, b: a + b, (40, 2), start_method=start_method)
    assert adder.pid is None and not adder.is_alive()
    adder.start()
    assert adder.pid is not None
    assert adder.result(timeout=10) == 42
    assert adder.exitcode == 0
    assert not adder.is_alive()

    failing = corepool.Process(
        toolbox_tasks.raise_value_error, ("no data",), start_method=start_method
    )
    failing.start()
    with pytest.raises(ValueError, match="no data") as raised:
        failing.result(timeout=10)
    assert isinstance(raised.value.__cause__, corepool.RemoteTraceback)
    assert "raise_value_error" in raised.value.__cause__.traceback_text

    killed = corepool.Process(toolbox_tasks.kill_self, start_method=start_method)
    killed.start()
    with pytest.raises(
        corepool.WorkerDied, match=r"got SIGKILL in task 0 of Process\(kill_self\)"
    ) as died:
        killed.result(timeout=10)
    assert died.value.signal == "SIGKILL"
    assert killed.exitcode == -9

    exited = corepool.Process(toolbox_tasks.exit_with, (3,), start_method=start_method)
    exited.start()
    with pytest.raises(corepool.WorkerDied, match="exited with code 3"):
        exited.result(timeout=10)


def test_process_join_timeout_terminate_and_misuse() -> None:
    sleeper = corepool.Process(toolbox_tasks.sleep_for, (30,))
    with pytest.raises(RuntimeError, match="was not started"):
        sleeper.join()
    sleeper.start()
    with pytest.raises(RuntimeError, match="can only be started once"):
        sleeper.start()
    sleeper.join(timeout=0.1)
    assert sleeper.is_alive()
    with pytest.raises(TimeoutError, match=r"did not end within 0\.1s"):
        sleeper.result(timeout=0.1)
    sleeper.terminate()
    with pytest.raises(corepool.WorkerDied, match="got SIGTERM"):
        sleeper.result(timeout=10)
    assert "stopped exitcode=-15" in repr(sleeper)


def test_items_of_a_batch_a_consumer_did_not_take_go_back_to_the_queue(start_method: str) -> None:
    q = corepool.Queue()
    q.put_many(range(500))  # one batch: one consumer receives all of it
    taker = corepool.Process(toolbox_tasks.get_one, (q,), start_method=start_method)
    taker.start()
    assert taker.result(timeout=20) == 0
    assert sorted(q.get(timeout=10) for _ in range(499)) == list(range(1, 500))


def test_integer_values_wrap_as_in_c() -> None:
    small = corepool.Value("B", 250)
    assert small.add(10) == 4
    assert small.value == 4
    big = corepool.Value("q", 0)
    assert big.add(2**40) == 2**40
    assert big.add(-(2**41)) == -(2**40)


def test_put_many_of_large_items_keeps_each_item_whole() -> None:
    q = corepool.Queue()
    blobs = [bytes([i]) * 70_000 for i in range(100)]  # batches shrink to one item
    q.put_many(blobs)
    assert [q.get(timeout=10) for _ in range(100)] == blobs


@pytest.mark.parametrize(
    "wait",
    ["lock.acquire()", "queue.get()", "event.wait()", "lock.acquire(timeout=30)"],
)
def test_ctrl_c_interrupts_a_wait(wait: str) -> None:
    """Waiting releases the GIL in C, yet a SIGINT still raises KeyboardInterrupt at once."""
    script = (
        "import corepool\n"
        "lock, queue, event = corepool.Lock(), corepool.Queue(), corepool.Event()\n"
        "lock.acquire()\n"
        "print('waiting', flush=True)\n"
        "try:\n"
        f"    {wait}\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "waiting\n"
    time.sleep(0.2)
    started = time.monotonic()
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=10) == 0
    assert child.stdout.read() == "interrupted\n"
    assert time.monotonic() - started < 2
