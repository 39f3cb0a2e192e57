"""Targets for the toolbox tests, importable by workers under every start method."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import corepool


def produce(queue: corepool.Queue, start: int, stop: int) -> int:
    for item in range(start, stop):
        queue.put(item)
    return stop - start


def produce_many(queue: corepool.Queue, start: int, stop: int) -> int:
    queue.put_many(range(start, stop))
    return stop - start


def consume_until_closed(queue: corepool.Queue) -> list[Any]:
    return list(queue)


def consume_many_until_closed(queue: corepool.Queue) -> list[Any]:
    taken: list[Any] = []
    while True:
        try:
            taken.extend(queue.get_many(100, timeout=30))
        except corepool.QueueClosed:
            return taken


def get_one(queue: corepool.Queue) -> Any:
    return queue.get()


def increment_under_lock(value: corepool.Value, lock: Any, times: int) -> None:
    """A read-modify-write that loses updates unless ``lock`` works."""
    for _ in range(times):
        with lock:
            current = value.value
            value.value = current + 1


def add_to(counter: corepool.Value, times: int) -> Any:
    for _ in range(times):
        counter.add(1)
    return counter.value


def use_everything(things: dict[str, Any]) -> dict[str, Any]:
    """Touch each primitive from inside a worker; report what it saw."""
    seen: dict[str, Any] = {}
    with things["lock"]:
        seen["lock"] = "held"
    with things["rlock"], things["rlock"]:
        seen["rlock"] = "held twice"
    seen["semaphore"] = things["semaphore"].acquire(timeout=5)
    things["semaphore"].release()
    things["event"].set()
    with things["condition"]:
        things["condition"].notify_all()
    seen["value"] = things["value"].add(5)
    seen["counter"] = things["counter"].add(1)
    things["queue"].put("from a worker")
    things["pipe"].send("over the pipe")
    things["array"][0] = 42
    return seen


def remember(things: dict[str, Any]) -> None:
    """A pool initializer: keep the primitives that came through ``initargs``."""
    corepool.worker_state()["things"] = things


def use_remembered() -> dict[str, Any]:
    """``use_everything`` on what ``remember`` (or ``shared=``) put in the worker's state."""
    return use_everything(corepool.worker_state()["things"])


def use_from_manager(shared: Any) -> dict[str, Any]:
    """``use_everything`` on the primitives a Manager's dict holds under ``"things"``."""
    return use_everything(shared["things"])


def wait_at(barrier: corepool.Barrier) -> int:
    return barrier.wait(timeout=20)


def wait_for_event(event: corepool.Event, timeout: float) -> bool:
    return event.wait(timeout)


def wait_for_flag(condition: corepool.Condition, flag: corepool.Value) -> int:
    with condition:
        condition.wait_for(lambda: flag.value == 1, timeout=20)
        return int(flag.value)


def echo_over(conn: corepool.Connection) -> int:
    count = 0
    while True:
        message = conn.recv()
        if message is None:
            return count
        conn.send(message)
        count += 1


def hold_lock(lock: corepool.Lock, seconds: float) -> bool:
    with lock:
        time.sleep(seconds)
    return True


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def exit_with(code: int) -> None:
    os._exit(code)


def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def thread_count() -> int:
    return threading.active_count()


def produce_mixed(queue: corepool.Queue, tag: str, count: int) -> int:
    """Put ``(tag, index, payload)`` in order, every seventh payload 2 MB (shared memory)."""
    for index in range(count):
        queue.put((tag, index, bytes(2_000_000) if index % 7 == 0 else b"x" * (index % 300)))
    return count


def consume_tagged_until_closed(queue: corepool.Queue) -> list[tuple[str, int]]:
    """The ``(tag, index)`` of each item got, checking the payload's size."""
    seen = []
    for tag, index, payload in queue:
        assert len(payload) == (2_000_000 if index % 7 == 0 else index % 300), index
        seen.append((tag, index))
    return seen


def die_holding_a_ring_lock(queue: corepool.Queue, side: str) -> None:
    """Take the queue's put or get lock, as its holders do, and get killed holding it."""
    from corepool import _ring

    ring = queue._ring
    if side == "put":
        lock, holder = ring._put_lock, _ring._PUT_HOLDER
    else:
        lock, holder = ring._get_lock, _ring._GET_HOLDER
    lock.acquire()
    ring._fields[holder] = os.getpid()
    os.kill(os.getpid(), signal.SIGKILL)


def die_between_socket_and_ring(queue: corepool.Queue, side: str) -> None:
    """Get killed in the middle of a socket entry: its message sent, or its entry taken.

    ``put``: the message of a large item is on the queue's socket, its ring
    entry not written. ``get``: the entry is taken (under the get lock), its
    message not received.
    """
    from corepool import queues

    def die(*_: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)

    if side == "put":
        send = queues.send_frame
        queues.send_frame = lambda *args: (send(*args), die())
        queue.put(bytes(1_000_000))
    else:
        queue._ring._receive = die
        queue.get()


def produce_alternating(queue: corepool.Queue, tag: str, count: int) -> int:
    """Put ``(tag, index, payload)`` in order: even payloads 200 kB (socket entries), odd tiny."""
    for index in range(count):
        queue.put((tag, index, bytes(200_000) if index % 2 == 0 else b"x"))
    return count


def consume_tags_until_closed(queue: corepool.Queue) -> list[tuple[str, int]]:
    """The ``(tag, index)`` of each item got."""
    return [(tag, index) for tag, index, _ in queue]


def get_with_timeout(queue: corepool.Queue, timeout: float) -> Any:
    try:
        return queue.get(timeout=timeout)
    except corepool.QueueClosed as exc:
        return f"closed: {exc}"
