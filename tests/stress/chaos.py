"""Reproduces an open bug: a hang under concurrent crashes. Not collected by pytest.

Each round opens a 2-worker pool and, at once, runs two ``map`` calls (from
threads), one ``imap`` and 100 ``submit`` calls of a task that SIGKILLs its
worker, raises, or calls ``os._exit`` on some items; then checks every
result and error. On this 2-core machine it hangs within a minute under each
start method (2026-11-25): the scheduler thread blocks reading a worker's
socket whose process is gone while another process (the fork server, in the
one case examined) still holds that socket's other end, so no end-of-file
arrives.

    python tests/stress/chaos.py 60 forkserver     # seconds, start methods
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import corepool


def chaos(x: int) -> int:
    kind = x % 97
    if kind == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == 5:
        raise ValueError(x)
    if kind == 11:
        os._exit(3)
    return x * 2


def check(results: list[Any]) -> None:
    for index, result in enumerate(results):
        kind = index % 97
        if kind in (3, 11):
            assert isinstance(result, corepool.WorkerDied), (index, result)
        elif kind == 5:
            assert isinstance(result, ValueError), (index, result)
        else:
            assert result == index * 2, (index, result)


def one_round(method: corepool.options.StartMethod) -> None:
    size = random.choice([50, 200, 500])
    with corepool.Pool(2, start_method=method) as pool, ThreadPoolExecutor(3) as threads:
        maps = [
            threads.submit(
                pool.map,
                chaos,
                range(size),
                return_exceptions=True,
                chunksize=random.choice([None, 1, 7]),
            )
            for _ in range(2)
        ]
        check(list(pool.imap(chaos, range(size), return_exceptions=True)))
        for call in maps:
            check(call.result(timeout=120))
        futures = [pool.submit(chaos, i) for i in range(100)]
        for i, future in enumerate(futures):
            error = future.exception(timeout=60)
            assert (error is None) == (i % 97 not in (3, 5, 11)), (i, error)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    methods = sys.argv[2].split(",") if len(sys.argv) > 2 else ["forkserver", "spawn", "fork"]
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        one_round(random.choice(methods))  # type: ignore[arg-type]
        rounds += 1
    print(f"{rounds} rounds, every result right")


if __name__ == "__main__":
    main()
