"""Each script in examples/ runs as a user would run it, and prints what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(script: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_square_map() -> None:
    assert _run("square_map.py") == "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n"


def test_task_queues() -> None:
    lines = _run("task_queues.py").splitlines()
    assert [line.split(" (")[0] for line in lines[:20]] == [
        f"{n:2} squared is {n * n:3}" for n in range(20)
    ]
    assert lines[-1].endswith("total 20")


def test_pipe_exchange() -> None:
    assert _run("pipe_exchange.py").splitlines() == [
        "child got: hello",
        "child got: how are you?",
        "child got: [1, 2, 3]",
        "the child said goodbye too",
    ]


def test_shared_counter_is_exact() -> None:
    assert _run("shared_counter.py") == "counter = 40000 (expected 40000)\n"


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_is_tested(script: str) -> None:
    assert f'"{script}"' in Path(__file__).read_text()
