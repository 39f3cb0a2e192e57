"""The pains the tutorial names, shown side by side with the standard library.

- A worker killed mid-``map`` (the OOM killer, a segfault): the standard
  library's ``map`` never returns (the demo gives up after a timeout);
  corepool's returns, naming the one item lost.
- A big numpy array sent to every task: pickled and piped for each task, or
  put in shared memory once (``Pool(shared=...)``).
- Ctrl-C: a child interpreter running a pool gets SIGINT, as from a
  terminal; then the demo checks that none of its processes remains.
- Tasks too small to pay off: squaring numbers costs less than sending them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import corepool
from corepool._demo.common import DemoConfig, Row, check_agree, scaled, timed, warm_up

try:
    import numpy as np
except ImportError:  # only the big-array pain needs it; it is skipped with a line
    np = None  # type: ignore[assignment]

KILLED_ITEMS = 200
KILL_AT = 120
STDLIB_TIMEOUT_S = 3.0
ARRAY_BYTES = 80_000_000
ARRAY_TASKS = 16
SQUARES = 1_000_000
CTRL_C_WAIT_S = 10.0


# -- the tasks --------------------------------------------------------------------


def fragile(item: int) -> int:
    """Square ``item``; item KILL_AT kills its own worker, as the OOM killer would."""
    time.sleep(0.005)
    if item == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return item * item


def slice_total(prices: Any, part: int) -> float:
    """A statistic over one strided part of ``prices``: the task gets the whole array."""
    ordered = np.sort(prices[part::ARRAY_TASKS])
    return float(ordered[::1000].sum())


def slice_total_shared(part: int) -> float:
    """The same, reading the array the pool loaded once into this worker."""
    return slice_total(corepool.worker_state()["prices"], part)


def square(x: int) -> int:
    """The tutorial's first task: far too small to be worth sending to another process."""
    return x * x


# -- a worker killed mid-map -------------------------------------------------------


def killed_worker(config: DemoConfig) -> list[Row]:
    """The stdlib's map hangs (bounded here by a timeout); corepool's returns."""
    title = f"a worker killed mid-map (item {KILL_AT} of {KILLED_ITEMS})"
    items = range(KILLED_ITEMS)
    with multiprocessing.Pool(config.workers) as mp_pool:
        start = time.perf_counter()
        pending = mp_pool.map_async(fragile, items)
        try:
            pending.get(timeout=STDLIB_TIMEOUT_S)
            stdlib_note = "returned (unexpected)"
        except multiprocessing.TimeoutError:
            stdlib_note = f"hung: no answer after {STDLIB_TIMEOUT_S:.0f} s; would wait forever"
        stdlib_s = time.perf_counter() - start
    with corepool.Pool(config.workers) as pool:
        warm_up(pool, __name__, config.workers, progress=False)
        ours_s, results = timed(lambda: pool.map(fragile, items, return_exceptions=True))
    ours: list[object] = list(results)  # ints, and the errors in their items' places
    lost = {i: died for i, died in enumerate(ours) if isinstance(died, corepool.WorkerDied)}
    kept = [r for r in ours if not isinstance(r, BaseException)]
    check_agree(title, [i * i for i in items if i != KILL_AT], {"corepool.Pool": kept})
    named = ", ".join(f"item {i} (WorkerDied, {died.signal})" for i, died in lost.items())
    ours_note = f"returned {len(kept)} results; lost only {named}"
    return [
        Row(title, "multiprocessing.Pool", stdlib_s, stdlib_note),
        Row(title, "corepool.Pool", ours_s, ours_note),
    ]


# -- a big array sent to every task -------------------------------------------------


def big_array(config: DemoConfig) -> list[Row]:
    """Copied into every task's message, or shared once."""
    prices = np.random.default_rng(7).random(scaled(ARRAY_BYTES, config.scale) // 8)
    title = f"a {prices.nbytes / 1e6:.0f} MB numpy array sent to each of {ARRAY_TASKS} tasks"
    jobs = [(prices, part) for part in range(ARRAY_TASKS)]
    serial_s, expected = timed(lambda: [slice_total(prices, part) for part in range(ARRAY_TASKS)])
    with multiprocessing.Pool(config.workers) as mp_pool:
        stdlib_s, stdlib = timed(lambda: mp_pool.starmap(slice_total, jobs))
    with corepool.Pool(config.workers) as pool:
        warm_up(pool, __name__, config.workers, progress=False)
        copied_s, copied = timed(lambda: pool.starmap(slice_total, jobs))
    with corepool.Pool(config.workers, shared={"prices": prices}) as pool:
        warm_up(pool, __name__, config.workers, progress=False)
        shared_s, shared = timed(lambda: pool.map(slice_total_shared, range(ARRAY_TASKS)))
    check_agree(
        title,
        expected,
        {"multiprocessing.Pool": stdlib, "corepool.Pool": copied, "Pool(shared=...)": shared},
    )
    return [
        Row(title, "serial loop", serial_s, baseline=True),
        Row(title, "multiprocessing.Pool", stdlib_s, "pickled and piped for each task"),
        Row(
            title, "corepool.Pool", copied_s, "same code: one shared-memory copy per task",
            versus="multiprocessing.Pool",
        ),
        Row(
            title, "corepool.Pool(shared=...)", shared_s, "loaded once per worker",
            versus="multiprocessing.Pool",
        ),
    ]  # fmt: skip


# -- Ctrl-C -------------------------------------------------------------------------

_POOLED_SLEEP = """
import signal, sys, time
# As in a terminal's foreground job, whatever started this demo (a shell's
# background job starts with Ctrl-C ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)
if sys.argv[1] == "multiprocessing":
    import multiprocessing
    pool = multiprocessing.Pool({workers})
else:
    import corepool
    pool = corepool.Pool({workers})
with pool:
    print("running", flush=True)
    pool.map(time.sleep, [0.5] * 100)
"""


def ctrl_c(kind: str, workers: int) -> tuple[float, int]:
    """Ctrl-C a child interpreter running a pool; seconds until none of its processes is left,
    and how many were still running after CTRL_C_WAIT_S (then killed)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _POOLED_SLEEP.format(workers=workers), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the stdlib's workers print a KeyboardInterrupt each
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()  # "running": the pool's tasks are under way
        time.sleep(0.5)
        start = time.perf_counter()
        os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        # The stdlib's pool may hang after Ctrl-C (a worker interrupted while
        # holding its queue's lock): count what is left after the wait then.
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=CTRL_C_WAIT_S)
        while _session(child.pid) and time.perf_counter() - start < CTRL_C_WAIT_S:
            time.sleep(0.02)
        left = len(_session(child.pid)) + (
            child.poll() is None and child.pid not in _session(child.pid)
        )
        return time.perf_counter() - start, left
    finally:
        for pid in _session(child.pid):
            os.kill(pid, signal.SIGKILL)
        if child.poll() is None:
            child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _session(session: int) -> list[int]:
    """The live processes (zombies aside) of the session that ``session`` leads."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, *fields = stat.rsplit(")", 1)[1].split()
        if state != "Z" and int(fields[4]) == session:  # field 6 of stat: the session id
            found.append(int(entry.name))
    return found


def interrupted(config: DemoConfig) -> list[Row]:
    """Ctrl-C while each kind of pool maps; how long until nothing is left running."""
    title = "Ctrl-C during map (in a child interpreter)"
    rows = []
    for kind, runner in (
        ("multiprocessing", "multiprocessing.Pool"),
        ("corepool", "corepool.Pool"),
    ):
        seconds, left = ctrl_c(kind, config.workers)
        note = (
            "nothing left running"
            if not left
            else f"hung: {left} processes still running after {CTRL_C_WAIT_S:g} s (killed)"
        )
        versus = "multiprocessing.Pool" if kind == "corepool" else None
        rows.append(Row(title, runner, seconds, note, versus=versus))
    return rows


# -- tasks too small to pay off ----------------------------------------------------


def tiny_tasks(config: DemoConfig) -> list[Row]:
    """Squaring a number is cheaper than sending it to another process."""
    numbers = list(range(scaled(SQUARES, config.scale)))
    title = f"tasks too small to pay off (square {len(numbers):,} numbers)"
    serial_s, expected = timed(lambda: [square(x) for x in numbers])
    with multiprocessing.Pool(config.workers) as mp_pool:
        stdlib_s, stdlib = timed(lambda: mp_pool.map(square, numbers))
    with corepool.Pool(config.workers) as pool:
        warm_up(pool, __name__, config.workers, progress=False)
        ours_s, ours = timed(lambda: pool.map(square, numbers))
    check_agree(title, expected, {"multiprocessing.Pool": stdlib, "corepool.Pool": ours})
    advice = "< 1 us of work per task: give each task more (a range of numbers)"
    return [
        Row(title, "serial loop", serial_s, baseline=True),
        Row(title, "multiprocessing.Pool", stdlib_s, advice),
        Row(title, "corepool.Pool", ours_s, versus="multiprocessing.Pool"),
    ]


def run(config: DemoConfig) -> list[Row]:
    """Each pain in turn; the big array needs numpy (``pip install 'corepool[numpy]'``)."""
    rows = killed_worker(config)
    if np is None:
        rows.append(Row("a big numpy array", "skipped", 0.0, "pip install 'corepool[numpy]'"))
    else:
        rows += big_array(config)
    rows += interrupted(config)
    rows += tiny_tasks(config)
    return rows
