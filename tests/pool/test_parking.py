"""Workers parked by a closing pool serve the next one, then go away by themselves."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import corepool
import tasks
from corepool import _spawn
from corepool._backends import local


def _gone(pids: list[int], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if psutil.pid_exists(pid) and _not_zombie(pid)]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_next_pool_adopts_the_parked_workers(start_method: str) -> None:
    with corepool.Pool(2, start_method=start_method) as pool:
        first = set(pool.map(tasks.pid_of, range(40), chunksize=1))
    assert first <= set(_spawn.parked_pids())
    with corepool.Pool(2, start_method=start_method) as pool:
        second = set(pool.map(tasks.pid_of, range(40), chunksize=1))
        assert second <= first
        assert not set(_spawn.parked_pids()) & second  # adopted, no longer parked


def test_adopted_workers_start_clean() -> None:
    with corepool.Pool(1) as pool:
        pool.map(tasks.set_state, ["key"], ["from the first pool"])
    with corepool.Pool(1) as pool:
        assert pool.map(tasks.read_state, ["key"]) == [None]


def test_pools_with_an_initializer_neither_park_nor_adopt() -> None:
    with corepool.Pool(1) as pool:
        parked = pool.map(tasks.pid_of, [0])
    with corepool.Pool(1, initializer=tasks.set_state, initargs=("k", 1)) as pool:
        own = pool.map(tasks.pid_of, [0])
    assert own != parked
    assert own[0] not in _spawn.parked_pids()
    assert _gone(own, 5.0)


def test_terminate_parks_nothing() -> None:
    pool = corepool.Pool(2)
    pids = pool.map(tasks.pid_of, range(20), chunksize=1)
    pool.terminate()
    pool.join()
    assert not set(pids) & set(_spawn.parked_pids())


def test_unadopted_workers_exit_by_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "PARK_SECONDS", 0.3)
    monkeypatch.setattr(_spawn, "_ADOPT_WITHIN_S", 0.1)
    with corepool.Pool(2, start_method="spawn") as pool:
        pids = list(set(pool.map(tasks.pid_of, range(20), chunksize=1)))
    assert _gone(pids, 5.0)
    time.sleep(0.2)
    with corepool.Pool(2, start_method="spawn") as pool:  # lets the stale ones go
        assert not set(pool.map(tasks.pid_of, range(20), chunksize=1)) & set(pids)
    assert not set(pids) & set(_spawn.parked_pids())


def test_a_parked_worker_that_cannot_exit_is_killed_when_let_go() -> None:
    with corepool.Pool(1) as pool:
        pid = pool.submit(tasks.fill_an_unread_stdlib_queue).result()
    assert pid in _spawn.parked_pids()
    started = time.monotonic()
    _spawn._release_parked()  # what the exit hook, or a stale adoption, does
    assert _gone([pid], 1.0), "a parked worker that cannot exit was left running"
    assert time.monotonic() - started < 5.0
    assert pid not in _spawn.parked_pids()


def test_parked_workers_end_with_the_parent() -> None:
    code = textwrap.dedent(
        """
        import corepool, os
        with corepool.Pool(2) as pool:
            pids = set(pool.map(lambda _: os.getpid(), range(20), chunksize=1))
        print(*sorted(pids))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    pids = [int(pid) for pid in done.stdout.split()]
    assert pids and os.getpid() not in pids
    assert _gone(pids, 5.0)


def test_workers_parked_before_they_were_ready_serve_the_next_pool() -> None:
    for _ in range(3):
        pool = corepool.Pool(2)
        pool.close()  # at once: its workers may not have answered yet
        pool.join()
    with corepool.Pool(2) as pool:
        assert pool.map(tasks.square, range(100), chunksize=1) == [x * x for x in range(100)]
