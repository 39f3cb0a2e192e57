"""How fast every worker is gone after a signal to the parent: Ctrl-C, SIGTERM, SIGKILL.

The parent is the one the tests use (tests/faults/test_parent_signals.py):
a 2-worker pool blocked in a map of 60-second tasks. The figure is the time
from the signal until the parent has exited and no worker is left.

    python benchmarks/bench_signals.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "faults"))

from test_parent_signals import _all_gone, _start_parent

SIGNALS = {
    "SIGINT to the parent": signal.SIGINT,
    "SIGINT to the group": signal.SIGINT,
    "SIGTERM": signal.SIGTERM,
    "SIGKILL": signal.SIGKILL,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    print(
        f"median ms from the signal until the parent and all its workers are gone, {rounds} rounds"
    )
    for method in ("forkserver", "spawn", "fork"):
        for name, signum in SIGNALS.items():
            elapsed = []
            for _ in range(rounds):
                group = name.endswith("group")
                parent, pids = _start_parent(method, new_session=group)
                start = time.monotonic()
                if group:
                    os.killpg(parent.pid, signum)
                else:
                    parent.send_signal(signum)
                parent.communicate(timeout=20)
                assert _all_gone(pids, 5.0), f"{method}, {name}: workers left {pids}"
                elapsed.append(time.monotonic() - start)
            print(f"  {method:<10} {name:<22} {statistics.median(elapsed) * 1e3:6.0f} ms")


if __name__ == "__main__":
    main()
