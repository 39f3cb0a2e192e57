"""The tutorial's toolbox: task and result queues, a pipe, a counter under a lock.

Three small programs, each with an exact answer: workers take numbers from
a task queue and put their squares on a result queue; a parent and a child
exchange messages over a pipe; processes add to a shared counter under a
lock. Each runs as a serial loop, with the standard library's
``multiprocessing`` and with corepool (examples/ holds the corepool ones as
scripts). The times include starting the processes, as the tutorial's do.
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import corepool
from corepool._demo.common import DemoConfig, Row, check_agree, scaled, timed, warm_up

TASKS = 20_000
MESSAGES = 5_000
INCREMENTS = 20_000


# -- task queue and result queue ---------------------------------------------------


def square_tasks_stdlib(tasks: Any, results: Any) -> None:
    """Square numbers from ``tasks`` onto ``results`` until the ``None`` that says stop."""
    for number in iter(tasks.get, None):
        results.put((number, number * number))


def square_tasks(tasks: corepool.Queue, results: corepool.Queue) -> None:
    """Square numbers from ``tasks`` onto ``results`` until the queue is closed and drained."""
    for number in tasks:
        results.put((number, number * number))


def queues_stdlib(count: int, workers: int) -> list[tuple[int, int]]:
    """The tutorial's version: one ``None`` per worker marks the end of the tasks."""
    tasks: Any = multiprocessing.Queue()
    results: Any = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=square_tasks_stdlib, args=(tasks, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for number in range(count):
        tasks.put(number)
    for _ in processes:
        tasks.put(None)
    collected = sorted(results.get(timeout=60) for _ in range(count))
    for process in processes:
        process.join()
    return collected


def queues_corepool(count: int, workers: int) -> list[tuple[int, int]]:
    """Closing the task queue ends each worker's loop: no sentinels."""
    tasks = corepool.Queue()
    results = corepool.Queue()
    processes = [corepool.Process(square_tasks, args=(tasks, results)) for _ in range(workers)]
    for process in processes:
        process.start()
    for number in range(count):
        tasks.put(number)
    tasks.close()
    collected = sorted(results.get(timeout=60) for _ in range(count))
    for process in processes:
        process.result(timeout=60)
    return collected


# -- a pipe between a parent and a child -------------------------------------------


def answer(message: str) -> str:
    """What the child says back."""
    return f"child got: {message}"


def child(conn: Any) -> None:
    """Answer each message until the parent says goodbye."""
    while (message := conn.recv()) != "goodbye":
        conn.send(answer(message))


def exchange(conn: Any, count: int) -> list[str]:
    """The parent's side: send ``count`` greetings, read each reply, say goodbye."""
    replies = []
    for n in range(count):
        conn.send(f"hello {n}")
        replies.append(conn.recv())
    conn.send("goodbye")
    return replies


def pipe_stdlib(count: int) -> list[str]:
    """``multiprocessing.Pipe`` and ``multiprocessing.Process``."""
    parent_end, child_end = multiprocessing.Pipe()
    process = multiprocessing.Process(target=child, args=(child_end,))
    process.start()
    replies = exchange(parent_end, count)
    process.join()
    parent_end.close()
    child_end.close()
    return replies


def pipe_corepool(count: int) -> list[str]:
    """``corepool.Pipe`` and ``corepool.Process``."""
    parent_end, child_end = corepool.Pipe()
    process = corepool.Process(child, args=(child_end,))
    process.start()
    replies = exchange(parent_end, count)
    process.result(timeout=60)
    parent_end.close()
    child_end.close()
    return replies


# -- a shared counter under a lock -------------------------------------------------


def increment(counter: Any, lock: Any, times: int) -> None:
    """Add one ``times`` times; the lock makes read, add and write back one step."""
    for _ in range(times):
        with lock:
            counter.value = counter.value + 1


def counter_stdlib(times: int, workers: int) -> int:
    """The standard library's Value and Lock go to ``Process``es (its Pool refuses them)."""
    counter = multiprocessing.Value("q", 0)
    lock = multiprocessing.Lock()
    processes = [
        multiprocessing.Process(target=increment, args=(counter, lock, times))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return int(counter.value)


def counter_corepool(times: int, pool: corepool.Pool) -> int:
    """corepool's Value and Lock go to pool tasks, one per worker."""
    counter = corepool.Value("q", 0)
    lock = corepool.Lock()
    pool.starmap(increment, [(counter, lock, times)] * pool.workers, chunksize=1)
    return int(counter.value)


class _Count:
    """A plain counter for the serial loop, with ``.value`` like a shared one."""

    value = 0


# -- serial, the standard library, corepool ---------------------------------------


def run(config: DemoConfig) -> list[Row]:
    """Time the three programs three ways each; every answer is exact."""
    return [*time_queues(config), *time_pipe(config), *time_counter(config)]


def time_queues(config: DemoConfig) -> list[Row]:
    """Task queue to result queue: a list comprehension, then processes."""
    tasks, workers = scaled(TASKS, config.scale), config.workers
    title = f"task queue -> result queue ({tasks:,} tasks, {workers} workers)"
    serial_s, expected = timed(lambda: [(n, n * n) for n in range(tasks)])
    stdlib_s, stdlib = timed(lambda: queues_stdlib(tasks, workers))
    ours_s, ours = timed(lambda: queues_corepool(tasks, workers))
    check_agree(title, expected, {"multiprocessing": stdlib, "corepool": ours})
    return _three(title, serial_s, stdlib_s, ours_s, "Queue + Process")


def time_pipe(config: DemoConfig) -> list[Row]:
    """Round trips over a pipe: function calls, then a child process."""
    messages = scaled(MESSAGES, config.scale)
    title = f"parent <-> child over a pipe ({messages:,} round trips)"
    serial_s, expected = timed(lambda: [answer(f"hello {n}") for n in range(messages)])
    stdlib_s, stdlib = timed(lambda: pipe_stdlib(messages))
    ours_s, ours = timed(lambda: pipe_corepool(messages))
    check_agree(title, expected, {"multiprocessing": stdlib, "corepool": ours})
    return _three(title, serial_s, stdlib_s, ours_s, "Pipe + Process")


def time_counter(config: DemoConfig) -> list[Row]:
    """Increments under a lock: one process, then several sharing the counter."""
    times, workers = scaled(INCREMENTS, config.scale), config.workers
    title = f"shared counter under a lock ({workers} x {times:,} increments)"
    plain = _Count()
    serial_s, _ = timed(lambda: increment(plain, threading.Lock(), workers * times))
    stdlib_s, stdlib = timed(lambda: counter_stdlib(times, workers))
    with corepool.Pool(workers) as pool:
        # As every pool of the demo: workers started, the task's modules (its
        # own, and the Value's and Lock's) imported before the clock.
        for module in (__name__, "corepool.sync"):
            warm_up(pool, module, workers, progress=False)
        ours_s, ours = timed(lambda: counter_corepool(times, pool))
    check_agree(title, plain.value, {"multiprocessing": stdlib, "corepool": ours})
    return _three(title, serial_s, stdlib_s, ours_s, f"total {plain.value:,}, exact")


def _three(title: str, serial_s: float, stdlib_s: float, ours_s: float, note: str) -> list[Row]:
    return [
        Row(title, "serial loop", serial_s, baseline=True),
        Row(title, "multiprocessing", stdlib_s, note),
        Row(title, "corepool", ours_s, note, versus="multiprocessing"),
    ]
