"""Runs the rounds of ``tests/faults/test_chaos.py`` for minutes. Not collected by pytest.

    python tests/stress/chaos.py 300                   # seconds, every start method
    python tests/stress/chaos.py 60 forkserver,spawn   # seconds, these start methods

The suite runs three rounds per start method; bugs of timing (a crash that
meets another crash, a retry or a queued chunk at the wrong moment) need many
more. Prints the number of rounds, or the first wrong result.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS / "faults")]

from test_chaos import one_round  # noqa: E402


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    methods = sys.argv[2].split(",") if len(sys.argv) > 2 else ["forkserver", "spawn", "fork"]
    rng = random.Random()
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        one_round(rng.choice(methods), rng)
        rounds += 1
    print(f"{rounds} rounds, every result right")


if __name__ == "__main__":
    main()
