"""The command line, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import corepool


def _corepool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corepool.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_prints_a_table_of_times_and_speedups() -> None:
    done = _corepool("demo", "--scale", "0.05", "--workers", "2", "--no-progress")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "corepool 0.1.0 demo: 2 workers" in out
    rows = [line for line in out.splitlines() if line.startswith(("square", "count primes"))]
    rows = [row for row in rows if row.rstrip().endswith("x")]
    assert len(rows) == 6
    for runner in ("serial loop", "multiprocessing.Pool", "corepool.Pool"):
        assert sum(runner in row for row in rows) == 2
    assert "square 50,000 numbers" in out and "count primes below 75,000" in out
    assert "speedup" in out


def test_demo_draws_progress_bars_on_stderr() -> None:
    done = _corepool("demo", "--scale", "0.02", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "map(square)" in done.stderr and "map(count_primes)" in done.stderr


def test_version() -> None:
    done = _corepool("--version")
    assert done.stdout.strip() == corepool.__version__
