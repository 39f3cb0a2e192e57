"""``corepool run MODULE:FUNCTION [INPUT]``, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TASKS = """
import os, signal, time

def upper(s):
    return s.upper()

def fail_on_b(s):
    if s == "b":
        raise ValueError(f"bad item {s!r}")
    return s * 2

def die_on_b(s):
    if s == "b":
        os.kill(os.getpid(), signal.SIGKILL)
    return s

def hang_on_b(s):
    if s == "b":
        time.sleep(60)
    return s

def slow_first(s):
    time.sleep(0.5 if s == "a" else 0.0)
    return s

def total(record):
    return sum(record["xs"])

def square(s):
    return int(s) ** 2

not_a_function = 42
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "mytasks.py").write_text(TASKS)
    (tmp_path / "broken.py").write_text("raise RuntimeError('broken on import')\n")
    (tmp_path / "abc.txt").write_text("a\nb\nc\n")
    return tmp_path


def run(workdir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corepool.cli", "run", *args],
        cwd=workdir,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_maps_lines_in_order(workdir: Path) -> None:
    done = run(workdir, "mytasks:upper", "abc.txt", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert records(done.stdout) == [
        {"index": 0, "result": "A"},
        {"index": 1, "result": "B"},
        {"index": 2, "result": "C"},
    ]
    assert done.stderr == ""  # no progress bar: stderr is not a terminal


def test_unordered_writes_results_as_they_finish(workdir: Path) -> None:
    done = run(workdir, "mytasks:slow_first", "abc.txt", "--workers", "2", "--unordered")
    assert done.returncode == 0, done.stderr
    out = records(done.stdout)
    assert sorted(r["index"] for r in out) == [0, 1, 2]
    # The slow first item does not hold back the others (in order, it would).
    assert out[0]["index"] != 0 and {"index": 0, "result": "a"} in out


def test_a_failing_item_is_a_line_of_its_own_and_the_run_goes_on(workdir: Path) -> None:
    done = run(workdir, "mytasks:fail_on_b", "abc.txt", "--stats")
    assert done.returncode == 1
    assert records(done.stdout) == [
        {"index": 0, "result": "aa"},
        {"index": 1, "error": {"type": "ValueError", "message": "bad item 'b'"}},
        {"index": 2, "result": "cc"},
    ]
    # The summary counts it as failed, not done.
    assert ": 2 done, 1 failed in " in done.stderr.splitlines()[0], done.stderr


def test_unordered_error_lines_keep_their_index(workdir: Path) -> None:
    done = run(workdir, "mytasks:fail_on_b", "abc.txt", "--unordered", "--workers", "2")
    assert done.returncode == 1
    out = {r["index"]: r for r in records(done.stdout)}
    assert out[1] == {"index": 1, "error": {"type": "ValueError", "message": "bad item 'b'"}}


def test_a_task_that_kills_its_worker(workdir: Path) -> None:
    done = run(workdir, "mytasks:die_on_b", "abc.txt", "--workers", "2", "--unordered")
    assert done.returncode == 1
    out = {r["index"]: r for r in records(done.stdout)}
    assert out[0]["result"] == "a" and out[2]["result"] == "c"
    error = out[1]["error"]
    assert error["type"] == "WorkerDied"
    assert "got SIGKILL in task 1 of imap_unordered(die_on_b)" in error["message"]


def test_a_task_past_its_timeout(workdir: Path) -> None:
    done = run(workdir, "mytasks:hang_on_b", "abc.txt", "--workers", "2", "--timeout", "0.5")
    assert done.returncode == 1
    out = records(done.stdout)
    assert out[1]["error"]["type"] == "TaskTimeout"
    assert "passed task_timeout=0.5s" in out[1]["error"]["message"]
    assert [out[0]["result"], out[2]["result"]] == ["a", "c"]


def test_jsonl_input_from_stdin_with_a_bad_line(workdir: Path) -> None:
    lines = '{"xs": [1, 2]}\n{"xs": [3]}\nnot json\n'
    done = run(workdir, "mytasks:total", "--jsonl", stdin=lines)
    assert done.returncode == 1
    out = records(done.stdout)
    assert out[:2] == [{"index": 0, "result": 3}, {"index": 1, "result": 3}]
    assert out[2]["error"]["type"] == "JSONDecodeError"


def test_stdin_text_and_output_file(workdir: Path) -> None:
    done = run(workdir, "mytasks:square", "-", "-o", "out.jsonl", stdin="1\n2\n3\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    out = records((workdir / "out.jsonl").read_text())
    assert [r["result"] for r in out] == [1, 4, 9]


def test_stats_prints_the_summary_and_advice_to_stderr(workdir: Path) -> None:
    (workdir / "numbers.txt").write_text("".join(f"{i}\n" for i in range(2000)))
    done = run(workdir, "mytasks:square", "numbers.txt", "--workers", "2", "--stats")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2000
    err = done.stderr.splitlines()
    assert err[0].startswith("pool (2 process workers): 2000 done in "), done.stderr
    assert "tasks/s), efficiency " in err[0]
    assert all(line.startswith("advice: ") for line in err[1:]), done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nomodule:f", "abc.txt"], "no module named 'nomodule'"),
        (["broken:f", "abc.txt"], "importing 'broken' failed with RuntimeError: broken on import"),
        (["mytasks:nope", "abc.txt"], "has no function 'nope'"),
        (["mytasks:not_a_function", "abc.txt"], "is a int, not a function"),
        (["mytasks", "abc.txt"], "expected MODULE:FUNCTION"),
        (["mytasks:upper", "missing.txt"], "cannot read input 'missing.txt': No such file"),
        (["mytasks:upper", "."], "cannot read input '.': Is a directory"),
        (["mytasks:upper", "abc.txt", "-o", "no/such/dir.jsonl"], "cannot write output"),
        (
            ["mytasks:upper", "abc.txt", "--backend", "thread", "--timeout", "1"],
            "backend='thread' cannot honour task_timeout",
        ),
    ],
)
def test_bad_invocations_exit_2_with_one_line(workdir: Path, args: list[str], message: str) -> None:
    done = run(workdir, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("corepool run: ") and message in lines[0], lines[0]


def test_the_thread_backend(workdir: Path) -> None:
    done = run(workdir, "mytasks:upper", "abc.txt", "--backend", "thread", "--stats")
    assert done.returncode == 0, done.stderr
    assert [r["result"] for r in records(done.stdout)] == ["A", "B", "C"]
    assert "thread workers" in done.stderr
