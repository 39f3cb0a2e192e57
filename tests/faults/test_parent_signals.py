"""Signals to the parent process: Ctrl-C, SIGTERM, SIGKILL. The parent runs as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

# The parent prints its workers' pids, then blocks in a long call. It takes
# Ctrl-C as a terminal's foreground job does, however the tests were started
# (a shell's background job, a CI runner's, starts with SIGINT ignored).
PARENT = textwrap.dedent(
    """
    import os, signal, sys, time, corepool
    signal.signal(signal.SIGINT, signal.default_int_handler)
    def nap(seconds):
        time.sleep(seconds)
        return os.getpid()
    pool = corepool.Pool(2, start_method=sys.argv[1])
    pids = set(pool.map(nap, [0.05] * 8, chunksize=1))
    print(*sorted(pids), flush=True)
    try:
        pool.map(nap, [60] * 4, chunksize=1)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        raise
    """
)


def _start_parent(
    start_method: str, *, new_session: bool = False
) -> tuple[subprocess.Popen[str], list[int]]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    pids = [int(pid) for pid in line.split()]
    assert pids, parent.stderr.read() if parent.stderr else ""
    time.sleep(0.3)  # the long tasks are running now
    return parent, pids


def _all_gone(pids: list[int], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("target", ["parent", "process group"])
def test_ctrl_c_stops_everything_within_a_second(start_method: str, target: str) -> None:
    parent, pids = _start_parent(start_method, new_session=target == "process group")
    sent = time.monotonic()
    if target == "parent":
        parent.send_signal(signal.SIGINT)
    else:
        os.killpg(parent.pid, signal.SIGINT)  # what a terminal does
    out, err = parent.communicate(timeout=20)
    elapsed = time.monotonic() - sent
    assert "KeyboardInterrupt" in out and "KeyboardInterrupt" in err
    assert parent.returncode != 0
    assert elapsed < 5.0, f"the parent took {elapsed:.1f}s to stop"
    assert _all_gone(pids, 2.0), f"workers left running: {pids}"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_workers_end_with_a_killed_parent(start_method: str, signum: int) -> None:
    parent, pids = _start_parent(start_method)
    parent.send_signal(signum)
    parent.communicate(timeout=20)
    assert parent.returncode == -signum
    assert _all_gone(pids, 3.0), f"workers outlived the parent: {pids}"
