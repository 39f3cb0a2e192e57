"""Task functions for the stats tests, importable by workers under every start method."""

from __future__ import annotations

import os
import signal
import time


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def blob(nbytes: int) -> bytes:
    """A large result that pickles in band (``bytes`` are not offered out of band)."""
    return b"x" * nbytes


def sigkill_on(x: int, bad: int) -> int:
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def hang_on(x: int, bad: int) -> int:
    if x == bad:
        time.sleep(60)
    return x


def omp_threads(_: object = None) -> str | None:
    """The BLAS/OpenMP thread limit this worker was given."""
    return os.environ.get("OMP_NUM_THREADS")
